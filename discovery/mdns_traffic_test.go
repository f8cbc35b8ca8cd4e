package discovery

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// TestMDNSIdleTraffic counts every mDNS packet of a 3-node cluster on the
// wire (multicast and unicast answers) once the start-up
// burst is over, over a window that holds one periodic query round.
func TestMDNSIdleTraffic(t *testing.T) {
	netns.Require(t)
	const n = 3
	s := newSniffer(t)
	start := time.Now()
	var nodes []*node
	for i := range n {
		nodes = append(nodes, startNode(t, &MDNS{}, Self{Cluster: "idle", ID: fmt.Sprintf("n%d", i)}))
	}
	for i, nd := range nodes {
		var others []string
		for j := range n {
			if j != i {
				others = append(others, fmt.Sprintf("n%d", j))
			}
		}
		nd.rec.waitFor(t, 5*time.Second, "full knowledge", knows(others...))
	}
	// Start-up: announcements at 0 and 1 s, queries at 0 and 1–1.1 s. The
	// third query comes 2 s per node later (6–6.6 s after the second).
	from, to := start.Add(1500*time.Millisecond), start.Add(8500*time.Millisecond)
	time.Sleep(time.Until(to)) // the measurement window itself
	s.flush(t)
	burst := s.count(start, from, serviceName("idle"))
	idle := s.count(from, to, serviceName("idle"))
	queries := 0
	for _, p := range idle {
		if !p.msg.Response {
			queries++
		}
	}
	window := to.Sub(from).Seconds()
	rate := float64(len(idle)) / window / n
	t.Logf("start-up burst: %d packets for %d nodes; then %d packets (%d queries) in %.1f s: %.2f packets/s per node",
		len(burst), n, len(idle), queries, window, rate)
	if queries != n {
		t.Errorf("saw %d queries in the window, want one round of %d", queries, n)
	}
	if rate > 1 {
		t.Errorf("%.2f packets/s per node, want ≤ 1", rate)
	}
}

// TestMDNSPacketLimits runs nodes with the largest names and many
// addresses and checks every packet on the wire.
func TestMDNSPacketLimits(t *testing.T) {
	netns.Require(t)
	s := newSniffer(t)
	start := time.Now()
	cluster := strings.Repeat("\xff", maxClusterInTXT) // full name, all escapes
	var many []netip.AddrPort
	for i := range 60 {
		many = append(many, netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), 7))
	}
	a := startNode(t, &MDNS{}, Self{Cluster: cluster, ID: strings.Repeat("a", MaxIDLen), Addrs: many})
	b := startNode(t, &MDNS{}, Self{Cluster: cluster, ID: strings.Repeat("\x00", MaxIDLen), Port: 8})
	a.rec.waitFor(t, 5*time.Second, "a knows b", knows(b.self.ID))
	b.rec.waitFor(t, 5*time.Second, "b knows a", knows(a.self.ID))
	// Both first queries (20–120 ms after the start) before a leaves.
	for deadline := time.Now().Add(5 * time.Second); ; {
		s.flush(t)
		queries := 0
		for _, p := range s.count(start, time.Now(), serviceName(cluster)) {
			if !p.msg.Response {
				queries++
			}
		}
		if queries >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d queries captured in 5 s, want both nodes' first", queries)
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.stop(t) // a goodbye too
	b.rec.waitFor(t, 5*time.Second, "b loses a", lost(a.self.ID))
	s.flush(t)
	pkts := s.count(start, time.Now(), serviceName(cluster))
	// Two announcements and a query each, and a's goodbye; answers too,
	// unless the announcements made them known answers.
	if len(pkts) < 5 {
		t.Fatalf("captured %d packets, want announcements, queries and a goodbye", len(pkts))
	}
	largest := 0
	for _, p := range pkts {
		largest = max(largest, p.size)
		if p.size > maxPacketSize {
			t.Errorf("packet of %d bytes, over %d", p.size, maxPacketSize)
		}
		for _, rr := range append(p.msg.Answer, p.msg.Extra...) {
			if txt, ok := rr.(*dns.TXT); ok {
				for _, str := range txt.Txt {
					if b, err := unescapeTXT(str); err != nil || len(b) > maxTXTString {
						t.Errorf("TXT string of %d bytes (%v)", len(b), err)
					}
				}
			}
		}
	}
	t.Logf("%d packets, largest %d bytes", len(pkts), largest)
}
