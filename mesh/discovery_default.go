package mesh

import (
	"net"

	"github.com/tallship-go/tallship/discovery"
)

// defaultDiscovery is what a nil Config.Discovery means: mDNS on ifaces,
// or on every multicast interface when ifaces is nil.
func defaultDiscovery(ifaces []net.Interface) []discovery.Discoverer {
	return []discovery.Discoverer{&discovery.MDNS{Interfaces: ifaces}}
}
