package mesh

// Discovery by DNS across subnets: a DNS server of the test serves SRV
// records, as Consul and Kubernetes do, to nodes on the two subnets of
// subnet_test.go, and to nodes in the test's own namespace.

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// srvZone is a DNS server of the test: one SRV name, whose targets it
// serves with their A records in the additional section and, asked by
// name, in the answer, as Consul and Kubernetes do.
type srvZone struct {
	addr string
	name string

	mu      sync.Mutex
	targets map[string]srvTarget // by host name
	asked   int                  // SRV queries answered
}

type srvTarget struct {
	port  uint16
	addrs []netip.Addr
}

func startSRVZone(t *testing.T, listen, name string) *srvZone {
	t.Helper()
	z := &srvZone{name: dns.Fqdn(name), targets: map[string]srvTarget{}}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	z.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: z}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	served := make(chan struct{})
	go func() { srv.ActivateAndServe(); close(served) }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-served; pc.Close() })
	return z
}

// set makes host a target at port, with addrs in order; no addrs
// removes it.
func (z *srvZone) set(host string, port uint16, addrs ...netip.Addr) {
	z.mu.Lock()
	defer z.mu.Unlock()
	host = dns.Fqdn(host)
	if len(addrs) == 0 {
		delete(z.targets, host)
		return
	}
	z.targets[host] = srvTarget{port, addrs}
}

// awaitAsked waits until the zone has answered n more SRV queries per
// node of procs than it had at mark (nodes on one subnet share a source
// address, so the count is the zone's whole): the nodes have looked, each
// every 100 ms, and what they should not do would have shown.
func (z *srvZone) awaitAsked(t *testing.T, n, mark int, procs ...*subnetProc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := z.askedSoFar() - mark; got < n*len(procs); got = z.askedSoFar() - mark {
		if time.Now().After(deadline) {
			t.Fatalf("the zone answered %d queries within 10 s, want %d", got, n*len(procs))
		}
		time.Sleep(10 * time.Millisecond) // polling the zone against the deadline
	}
}

// askedSoFar returns how many SRV queries the zone has answered.
func (z *srvZone) askedSoFar() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.asked
}

// setAt makes host a target at ap.
func (z *srvZone) setAt(host string, ap netip.AddrPort) { z.set(host, ap.Port(), ap.Addr()) }

func (z *srvZone) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	z.mu.Lock()
	defer z.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	// discovery.DNS asks for each target's addresses by name.
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
		for _, a := range z.targets[strings.ToLower(q.Question[0].Name)].addrs {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
				A:   a.AsSlice(),
			})
		}
	}
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeSRV && strings.EqualFold(q.Question[0].Name, z.name) {
		z.asked++
		for _, host := range slices.Sorted(func(yield func(string) bool) {
			for h := range z.targets {
				if !yield(h) {
					return
				}
			}
		}) {
			tg := z.targets[host]
			m.Answer = append(m.Answer, &dns.SRV{
				Hdr:  dns.RR_Header{Name: z.name, Rrtype: dns.TypeSRV, Class: dns.ClassINET},
				Port: tg.port, Target: host,
			})
			for _, a := range tg.addrs {
				m.Extra = append(m.Extra, &dns.A{
					Hdr: dns.RR_Header{Name: host, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   a.AsSlice(),
				})
			}
		}
	}
	w.WriteMsg(m)
}

// TestDNSAcrossSubnets runs three nodes on two subnets, joined by a router
// that forwards no multicast, with DNS as their only discovery: they form
// one mesh as soon as their records are served. A record removed is
// reported Lost.
func TestDNSAcrossSubnets(t *testing.T) {
	s := newSubnets(t)
	const name = "_tallship._tcp.mesh.test"
	z := startSRVZone(t, "10.61.1.1:0", name)
	spec := func(id, listen string) subnetSpec {
		return subnetSpec{Cluster: "subnets", ID: id, Listen: listen, DNSServer: z.addr, DNSName: name}
	}
	a1 := startSubnetNode(t, s.a, spec("a1", "10.61.1.2:0"))
	a2 := startSubnetNode(t, s.a, spec("a2", "10.61.1.3:0"))
	b1 := startSubnetNode(t, s.b, spec("b1", "10.61.2.2:0"))
	// Nothing to find yet: no links, after each asked twice.
	z.awaitAsked(t, 2, 0, a1, a2, b1)
	for _, p := range []*subnetProc{a1, a2, b1} {
		if ps := p.peers(); len(ps) != 0 {
			t.Fatalf("%s linked with %v before any record was served", p.name, ps)
		}
	}
	served := time.Now()
	for _, p := range []*subnetProc{a1, a2, b1} {
		z.setAt(p.name+".mesh.test", netip.MustParseAddrPort(p.addr()))
	}
	var last time.Time
	for _, p := range []*subnetProc{a1, a2, b1} {
		var others []string
		for _, o := range []string{"a1", "a2", "b1"} {
			if o != p.name {
				others = append(others, o)
			}
		}
		if at := p.awaitPeers(t, 10*time.Second, others...); at.After(last) {
			last = at
		}
	}
	t.Logf("full mesh across the subnets %v after the records were served (discovery every 100 ms)", last.Sub(served))

	// a1 may have been dialed by b1 before it asked itself: wait until
	// it found b1 through DNS too.
	a1.await(t, 5*time.Second, "b1 found", func(l subnetLine) bool {
		return l.Kind == "found" && slices.Equal(l.Addrs, []string{b1.addr()})
	})
	z.set("b1.mesh.test", 0)
	removed := time.Now()
	l := a1.await(t, 5*time.Second, "b1 lost", func(l subnetLine) bool {
		return l.Kind == "lost" && slices.Equal(l.Addrs, []string{b1.addr()})
	})
	t.Logf("a1 reported b1 Lost %v after its record was removed", time.Unix(0, l.At).Sub(removed))
	// Its link stays: DNS lists where to find nodes, not who is alive.
	z.awaitAsked(t, 2, z.askedSoFar(), a1)
	if ps := a1.peers(); !slices.Equal(ps, []string{"a2", "b1"}) {
		t.Fatalf("a1's peers after b1's record went: %v", ps)
	}
}

// TestDNSUnreachableFirstAddress serves a node's name with a first address
// that cannot link (its packets vanish, or a listener there never answers
// the handshake, or it refuses) before the one that can: the node is
// linked within the handshake timeout of the first address, not later.
func TestDNSUnreachableFirstAddress(t *testing.T) {
	netns.Require(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root in the test's namespace to make a veth pair")
	}
	// 10.61.9.2 is on a link where nobody answers ARP: a connect to it
	// hangs (until the neighbour entry fails, after about 3 s).
	ipRun(t, "link", "add", "ts-bh0", "type", "veth", "peer", "name", "ts-bh1")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "ts-bh0").Run() })
	ipRun(t, "addr", "add", "10.61.9.1/24", "dev", "ts-bh0")
	ipRun(t, "link", "set", "ts-bh0", "up")
	ipRun(t, "link", "set", "ts-bh1", "up")

	for _, tc := range []struct {
		name  string
		first string // host of the first address; empty: none
		// silent: a listener at the first address accepts connections
		// and never says a word.
		silent bool
		// listen is where the node listens; empty: 127.0.0.1. The good
		// address has the scope of the first, or address selection (RFC
		// 6724, which net.Resolver applies) would put it first.
		listen string
	}{
		{name: "no bad address"},
		{name: "refused", first: "127.0.0.3"},
		{name: "silent listener", first: "127.0.0.2", silent: true},
		{name: "packets vanish", first: "10.61.9.2", listen: "10.61.9.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tcfg := testConfig("t")
			if tc.listen != "" {
				tcfg.Listen = tc.listen
			}
			tgt := start(t, "unreach", tcfg)
			good := tgt.Addrs()[0]
			accepted := 0
			var acceptMu sync.Mutex
			if tc.silent {
				ln, err := net.Listen("tcp", net.JoinHostPort(tc.first, strconv.Itoa(int(good.Port()))))
				if err != nil {
					t.Skipf("cannot listen at the silent address: %v", err)
				}
				var conns []net.Conn
				done := make(chan struct{})
				go func() {
					defer close(done)
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						acceptMu.Lock()
						accepted++
						conns = append(conns, c)
						acceptMu.Unlock()
					}
				}()
				t.Cleanup(func() {
					ln.Close()
					<-done
					for _, c := range conns {
						c.Close()
					}
				})
			}
			z := startSRVZone(t, "127.0.0.1:0", "_tallship._tcp.unreach.test")
			var addrs []netip.Addr
			if tc.first != "" {
				addrs = append(addrs, netip.MustParseAddr(tc.first))
			}
			z.set("t.unreach.test", good.Port(), append(addrs, good.Addr())...)
			cfg := testConfig("d")
			cfg.Discovery = []discovery.Discoverer{&discovery.DNS{Name: "_tallship._tcp.unreach.test", Server: z.addr, Interval: 250 * time.Millisecond}}
			began := time.Now()
			d := start(t, "unreach", cfg)
			waitFor(t, "linked", 10*time.Second, func() bool { return settled(d, tgt) })
			took := time.Since(began)
			acceptMu.Lock()
			n := accepted
			acceptMu.Unlock()
			t.Logf("linked %v after start (handshake timeout %v); dials that reached the silent listener: %d", took, cfg.HandshakeTimeout, n)
			if limit := cfg.HandshakeTimeout + 750*time.Millisecond; took > limit {
				t.Fatalf("linked after %v, more than the handshake timeout and slack (%v)", took, limit)
			}
		})
	}
}
