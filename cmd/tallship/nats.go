package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"

	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

// natsFlags join a command's node to the cluster's other sites through
// NATS (mesh.Config.NATS, Site).
type natsFlags struct {
	urls   stringList
	site   string
	creds  string
	token  string
	user   string
	pass   string
	ca     string
	cert   string
	key    string
	joined bool // --nats names servers: the command waits for them too
}

func (f *natsFlags) register(fs *flagSet, e *env) {
	if v := e.getenv("TALLSHIP_NATS"); v != "" {
		f.urls = stringList{v}
	}
	fs.Var(&f.urls, "nats", "join the cluster's other sites through the NATS servers at `URL[,URL...]` (nats://host:4222, tls://…); repeatable (default $TALLSHIP_NATS)")
	fs.StringVar(&f.site, "site", e.getenv("TALLSHIP_SITE"), "with --nats, this node's site: the same `NAME` for every node of one LAN, another for each LAN (default $TALLSHIP_SITE, else \"default\")")
	fs.StringVar(&f.creds, "nats-creds", e.getenv("TALLSHIP_NATS_CREDS"), "NATS credentials `FILE` (user JWT and NKey seed) (default $TALLSHIP_NATS_CREDS)")
	fs.StringVar(&f.token, "nats-token", e.getenv("TALLSHIP_NATS_TOKEN"), "NATS `TOKEN` (default $TALLSHIP_NATS_TOKEN)")
	fs.StringVar(&f.user, "nats-user", e.getenv("TALLSHIP_NATS_USER"), "NATS user `NAME`, with --nats-password (default $TALLSHIP_NATS_USER)")
	fs.StringVar(&f.pass, "nats-password", e.getenv("TALLSHIP_NATS_PASSWORD"), "the NATS user's `PASSWORD`; better from the environment, which ps does not show (default $TALLSHIP_NATS_PASSWORD)")
	fs.StringVar(&f.ca, "nats-ca", "", "verify the NATS servers against the CA certificates in `FILE` (PEM) instead of the system's")
	fs.StringVar(&f.cert, "nats-cert", "", "present the client certificate in `FILE` (PEM) to NATS, with --nats-key")
	fs.StringVar(&f.key, "nats-key", "", "the private key `FILE` (PEM) of --nats-cert")
	// Defaults from the environment that are secrets: never show them.
	if f.token != "" {
		fs.Lookup("nats-token").DefValue = "$TALLSHIP_NATS_TOKEN"
	}
	if f.pass != "" {
		fs.Lookup("nats-password").DefValue = "$TALLSHIP_NATS_PASSWORD"
	}
	if len(f.urls) > 0 {
		fs.Lookup("nats").DefValue = "$TALLSHIP_NATS"
	}
}

// apply sets cfg's NATS and Site as the flags say; it returns a usage
// error for files that cannot be read or a site that cannot be one.
func (f *natsFlags) apply(cfg *mesh.Config) error {
	var urls []string
	for _, v := range f.urls {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
	}
	if f.site != "" {
		if err := registry.CheckSite(f.site); err != nil {
			return usageErrorf("--site %q: %s", f.site, strings.TrimPrefix(err.Error(), "registry: invalid config: site: "))
		}
	}
	cfg.Site = f.site // without NATS, a label of the records only
	if len(urls) == 0 {
		return nil // NATS's credentials and TLS do nothing without it
	}
	f.joined = true
	cfg.NATS.URLs = urls
	cfg.NATS.CredsFile = f.creds
	cfg.NATS.Token = f.token
	cfg.NATS.User, cfg.NATS.Password = f.user, f.pass
	if f.ca == "" && f.cert == "" && f.key == "" {
		return nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return usageErrorf("--nats-ca: %v", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return usageErrorf("--nats-ca %q: no PEM certificate in it", f.ca)
		}
	}
	if (f.cert == "") != (f.key == "") {
		return usageErrorf("--nats-cert and --nats-key go together")
	}
	if f.cert != "" {
		c, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return usageErrorf("--nats-cert, --nats-key: %v", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	cfg.NATS.TLS = tc
	return nil
}
