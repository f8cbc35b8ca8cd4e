module github.com/tallship-go/tallship

go 1.25.0

require (
	github.com/Masterminds/semver/v3 v3.5.0
	github.com/flynn/noise v1.1.0
	github.com/google/uuid v1.6.0
	github.com/hashicorp/mdns v1.0.7
	github.com/hashicorp/yamux v0.1.2
	github.com/miekg/dns v1.1.72
	golang.org/x/net v0.50.0
	golang.org/x/sys v0.47.0
)

require (
	golang.org/x/crypto v0.48.0 // indirect
	golang.org/x/mod v0.31.0 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/tools v0.40.0 // indirect
)
