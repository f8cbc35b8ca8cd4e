package discovery_test

import (
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/mesh"
)

func ExampleDNS() {
	// Consul: the local agent's DNS interface.
	consul := &discovery.DNS{Name: "tallship.service.consul", Server: "127.0.0.1:8600"}

	// Kubernetes: a headless Service "tallship" in namespace "default",
	// with a port named "tallship"; the pod's resolv.conf names the
	// cluster DNS.
	k8s := &discovery.DNS{Name: "_tallship._tcp.tallship.default.svc.cluster.local"}

	// Every field.
	custom := &discovery.DNS{
		Name:     "_tallship._tcp.example.com",
		Server:   "[2001:db8::53]:53", // default: the servers of /etc/resolv.conf
		Interval: 10 * time.Second,    // default: 5 s; the first look-up at once
		Timeout:  time.Second,         // default: 2 s an exchange, 4× that a round
	}

	// A node that finds its peers by DNS and on the local network: the
	// listening port must be the one the SRV records name.
	cfg := mesh.Config{
		Listen:    ":7946",
		Discovery: []discovery.Discoverer{k8s, &discovery.MDNS{}},
	}
	_, _, _ = consul, custom, cfg
}
