package e2e_test

// mDNS on chosen interfaces: on the router of subnet_test.go's topology, a
// node told to use one interface neither speaks on the other nor hears it,
// as a capture on each interface shows.

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/testutil/node"
)

// capture records the mDNS packets (UDP to or from port 5353) that cross
// one interface, both ways, with an AF_PACKET socket: what a capture on
// the wire would see.
type capture struct {
	mu      sync.Mutex
	packets []captured
}

type captured struct {
	at        time.Time
	payload   []byte // the UDP payload
	multicast bool   // sent to a multicast group, not to one host
}

func newCapture(t *testing.T, iface string) *capture {
	t.Helper()
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	netns.Capture(t, ifi.Index, func(pkt []byte, _ *syscall.SockaddrLinklayer) {
		if p, ok := parseMDNSPacket(pkt); ok {
			c.mu.Lock()
			c.packets = append(c.packets, p)
			c.mu.Unlock()
		}
	})
	return c
}

// parseMDNSPacket reads an IPv4 or IPv6 packet of UDP from or to port
// 5353.
func parseMDNSPacket(b []byte) (captured, bool) {
	src, dst, payload, multicast, ok := netns.UDP(b)
	if !ok || (src != 5353 && dst != 5353) {
		return captured{}, false
	}
	return captured{at: time.Now(), payload: bytes.Clone(payload), multicast: multicast}, true
}

// mentioning returns how many multicast and unicast packets so far
// contain s.
func (c *capture) mentioning(s string) (multicast, unicast int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.packets {
		if !bytes.Contains(p.payload, []byte(s)) {
			continue
		}
		if p.multicast {
			multicast++
		} else {
			unicast++
		}
	}
	return multicast, unicast
}

// awaitSecondAnnouncement waits until the capture has seen the announcement
// a node named s repeats 1 s after its first: a second of its life, a
// window in which whatever it should not do would have shown.
func (c *capture) awaitSecondAnnouncement(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		var first, last time.Time
		for _, p := range c.packets {
			if p.multicast && bytes.Contains(p.payload, []byte(s)) {
				if first.IsZero() {
					first = p.at
				}
				last = p.at
			}
		}
		c.mu.Unlock()
		if !first.IsZero() && last.Sub(first) >= 900*time.Millisecond {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the capture saw no second announcement of %s within 10 s", s)
		}
		time.Sleep(10 * time.Millisecond) // polling the capture against the deadline
	}
}

// TestMDNSChosenInterfaces runs mDNS on chosen interfaces of the router
// namespace. Across the router, mDNS finds nothing. A node told to use one
// interface sends nothing that names it on the other, as a capture there
// shows, and hears nothing from it. A node announcing on both of its
// interfaces is found on each subnet, at its address there.
func TestMDNSChosenInterfaces(t *testing.T) {
	s := newSubnets(t)
	onRA, onRB := newCapture(t, "ts-ra"), newCapture(t, "ts-rb")
	pa := subnetNode(t, s.a, node.Config{Cluster: "ifaces", ID: "pa", Listen: "10.61.1.2:0", Ifaces: []string{"ts-a"}})
	pb := subnetNode(t, s.b, node.Config{Cluster: "ifaces", ID: "pb", Listen: "10.61.2.2:0", Ifaces: []string{"ts-b"}})
	// Multicast stays on its subnet: pa and pb never meet by themselves,
	// not in the second after each announced itself.
	onRA.awaitSecondAnnouncement(t, "pa")
	onRB.awaitSecondAnnouncement(t, "pb")
	if ps, qs := peersOf(t, pa), peersOf(t, pb); len(ps) != 0 || len(qs) != 0 {
		t.Fatalf("pa and pb linked across the router by mDNS alone: %v, %v", ps, qs)
	}

	// m-one, on the router, runs mDNS on ts-ra only (and listens on
	// every address).
	one := subnetNode(t, nil, node.Config{Cluster: "ifaces", ID: "m-one", Listen: ":0", Ifaces: []string{"ts-ra"}})
	atA := awaitEvent(t, pa, 10*time.Second, "m-one found", found("m-one"))
	// Nor does it name, on ts-ra, its address on the other subnet.
	for _, a := range atA.Addrs {
		if netip.MustParsePrefix("10.61.2.0/24").Contains(netip.MustParseAddrPort(a).Addr()) {
			t.Errorf("pa found m-one at %v: %s is m-one's address on ts-rb, an interface it was told not to use", atA.Addrs, a)
		}
	}
	// Past its second announcement, and pb's queries of that second.
	onRA.awaitSecondAnnouncement(t, "m-one")
	multiA, uniA := onRA.mentioning("m-one")
	multiB, uniB := onRB.mentioning("m-one")
	t.Logf("mDNS packets naming m-one: %d multicast + %d unicast on ts-ra, %d + %d on ts-rb", multiA, uniA, multiB, uniB)
	if multiA == 0 {
		t.Fatal("the capture on ts-ra saw no announcement of m-one: it proves nothing")
	}
	if multiB+uniB != 0 {
		t.Errorf("%d mDNS packets naming m-one crossed ts-rb, an interface it was told not to use", multiB+uniB)
	}
	if es := eventsWhere(pb, func(e node.Event) bool { return (e.Ev == "found" || e.Ev == "lost") && e.Peer == "m-one" }); len(es) != 0 {
		t.Errorf("pb found m-one by mDNS on ts-b: %v", es)
	}

	// m-both runs mDNS on both.
	began := time.Now()
	mb := subnetNode(t, nil, node.Config{Cluster: "ifaces", ID: "m-both", Listen: ":0", Ifaces: []string{"ts-ra", "ts-rb"}})
	awaitPeers(t, pa, 10*time.Second, "m-both", "m-one", "pb")
	awaitPeers(t, pb, 10*time.Second, "m-both", "m-one", "pa")
	t.Logf("a node on both interfaces: full mesh of four %v after it started", time.Since(began))
	for _, tc := range []struct {
		p      *node.Proc
		subnet netip.Prefix
	}{{pa, netip.MustParsePrefix("10.61.1.0/24")}, {pb, netip.MustParsePrefix("10.61.2.0/24")}} {
		e := awaitEvent(t, tc.p, time.Second, "m-both found", found("m-both"))
		for _, a := range e.Addrs {
			ap := netip.MustParseAddrPort(a)
			if ap.Port() != netip.MustParseAddrPort(mb.Addrs[0]).Port() || !tc.subnet.Contains(ap.Addr()) && !ap.Addr().IsLinkLocalUnicast() {
				t.Errorf("%s found m-both at %v: %s is not an address on its link", tc.p, e.Addrs, a)
			}
		}
		t.Logf("%s found m-both at %v", tc.p, e.Addrs)
	}

	// With m-both joined to the mDNS group on ts-rb, that interface's
	// multicast reaches every socket of the namespace bound to the group
	// (Linux's IP_MULTICAST_ALL), m-one's included. A node joining on
	// subnet B now (its first query at once) finds m-both; m-one must
	// still not announce on ts-rb, nor report what it hears there.
	pc := subnetNode(t, s.b, node.Config{Cluster: "ifaces", ID: "pc", Listen: "10.61.2.3:0", Ifaces: []string{"ts-b"}})
	awaitEvent(t, pc, 10*time.Second, "m-both found", found("m-both"))
	// A second of pc's life on ts-rb: its queries had their answers.
	onRB.awaitSecondAnnouncement(t, "pc")
	multiB2, uniB2 := onRB.mentioning("m-one")
	foundByPC := eventsWhere(pc, found("m-one"))
	t.Logf("once pc joined on ts-b: %d more multicast + %d more unicast mDNS packets naming m-one on ts-rb; pc found m-one by mDNS %d times", multiB2-multiB, uniB2-uniB, len(foundByPC))
	if multiB2 != multiB {
		t.Errorf("m-one multicast %d packets on ts-rb, an interface it was told not to use", multiB2-multiB)
	}
	if uniB2 != uniB {
		t.Errorf("m-one answered %d queries that came in on ts-rb, an interface it was told not to use", uniB2-uniB)
	}
	if len(foundByPC) != 0 {
		t.Errorf("pc found m-one by mDNS on ts-b: %v", foundByPC)
	}
	if heard := eventsWhere(one, func(e node.Event) bool { return e.Ev == "found" && (e.Peer == "pb" || e.Peer == "pc") }); len(heard) != 0 {
		t.Errorf("m-one's mDNS reported pb or pc, heard on ts-rb, %d times: %v", len(heard), heard)
	}
}
