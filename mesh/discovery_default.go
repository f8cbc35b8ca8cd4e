package mesh

import "github.com/tallship-go/tallship/discovery"

// defaultDiscovery is what a nil Config.Discovery means.
func defaultDiscovery() []discovery.Discoverer {
	return []discovery.Discoverer{&discovery.MDNS{}}
}
