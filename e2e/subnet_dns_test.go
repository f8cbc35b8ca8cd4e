package e2e_test

// Discovery by DNS across subnets: a DNS server of the test
// (internal/testutil/srvzone) serves SRV records, as Consul and Kubernetes
// do, to nodes on the two subnets of subnet_test.go.

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/node"
	"github.com/tallship-go/tallship/internal/testutil/srvzone"
)

// TestDNSAcrossSubnets runs three nodes on two subnets, joined by a router
// that forwards no multicast, with DNS as their only discovery: they form
// one mesh as soon as their records are served. A record removed is
// reported Lost.
func TestDNSAcrossSubnets(t *testing.T) {
	s := newSubnets(t)
	const name = "_tallship._tcp.mesh.test"
	z := srvzone.Start(t, "10.61.1.1:0", name)
	cfg := func(id, listen string) node.Config {
		return node.Config{Cluster: "subnets", ID: id, Listen: listen, NoMDNS: true, DNSServer: z.Addr(), DNSName: name, DNSInterval: 100 * time.Millisecond}
	}
	a1 := subnetNode(t, s.a, cfg("a1", "10.61.1.2:0"))
	a2 := subnetNode(t, s.a, cfg("a2", "10.61.1.3:0"))
	b1 := subnetNode(t, s.b, cfg("b1", "10.61.2.2:0"))
	procs := []*node.Proc{a1, a2, b1}
	// Nothing to find yet: no links, after each asked twice (nodes on one
	// subnet share a source address, so the count is the zone's whole).
	z.AwaitAsked(t, 2*len(procs), 0)
	for _, p := range procs {
		if ps := peersOf(t, p); len(ps) != 0 {
			t.Fatalf("%s linked with %v before any record was served", p, ps)
		}
	}
	served := time.Now()
	for _, p := range procs {
		z.SetAt(p.ID+".mesh.test", netip.MustParseAddrPort(p.Addrs[0]))
	}
	var last time.Time
	for _, p := range procs {
		var others []string
		for _, o := range procs {
			if o != p {
				others = append(others, o.ID)
			}
		}
		if at := awaitPeers(t, p, 10*time.Second, others...); at.After(last) {
			last = at
		}
	}
	t.Logf("full mesh across the subnets %v after the records were served (discovery every 100 ms)", last.Sub(served))

	// a1 may have been dialed by b1 before it asked itself: wait until
	// it found b1 through DNS too.
	awaitEvent(t, a1, 5*time.Second, "b1 found", func(e node.Event) bool {
		return e.Ev == "found" && slices.Equal(e.Addrs, b1.Addrs[:1])
	})
	z.Set("b1.mesh.test", 0)
	removed := time.Now()
	e := awaitEvent(t, a1, 5*time.Second, "b1 lost", func(e node.Event) bool {
		return e.Ev == "lost" && slices.Equal(e.Addrs, b1.Addrs[:1])
	})
	t.Logf("a1 reported b1 Lost %v after its record was removed", e.Time().Sub(removed))
	// Its link stays: DNS lists where to find nodes, not who is alive.
	z.AwaitAsked(t, 2, z.Asked())
	if ps := peersOf(t, a1); !slices.Equal(ps, []string{"a2", "b1"}) {
		t.Fatalf("a1's peers after b1's record went: %v", ps)
	}
}
