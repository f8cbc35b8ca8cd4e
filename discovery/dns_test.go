package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// fakeDNS is a DNS server for tests, on a loopback address: it answers from
// a list of records that the test changes as it goes, with authority, as
// Consul and a cluster DNS answer for their zones.
type fakeDNS struct {
	addr string // host:port, UDP and TCP

	mu  sync.Mutex
	rrs []dns.RR
	// extra: SRV answers carry their targets' A, AAAA and TXT records in
	// the additional section, as Consul's and a cluster DNS's do.
	extra bool
	// rcode, when not zero, is the answer to everything.
	rcode int
	// silent: no answer at all.
	silent bool
	// maxUDP, when not zero, truncates UDP answers with more records.
	maxUDP int
	// asked counts the questions, by "network type name".
	asked map[string]int
}

// startFakeDNS serves DNS on host (an address of this namespace, port 0 for
// any) over UDP and TCP, until the test ends.
func startFakeDNS(t testing.TB, host string, rrs ...string) *fakeDNS {
	t.Helper()
	netns.Require(t)
	z := &fakeDNS{extra: true, asked: map[string]int{}}
	z.set(t, rrs...)
	var pc net.PacketConn
	var ln net.Listener
	for range 10 {
		var err error
		if pc, err = net.ListenPacket("udp", host); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("fakeDNS: no port free for both UDP and TCP")
	}
	z.addr = pc.LocalAddr().String()
	var wg sync.WaitGroup
	servers := []*dns.Server{{PacketConn: pc}, {Listener: ln}}
	for _, s := range servers {
		s.Handler = z
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { s.ActivateAndServe() })
		<-started
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
		wg.Wait()
		pc.Close()
		ln.Close()
	})
	return z
}

// set replaces the records, given in zone file syntax.
func (z *fakeDNS) set(t testing.TB, rrs ...string) {
	t.Helper()
	var parsed []dns.RR
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("record %q: %v", s, err)
		}
		parsed = append(parsed, rr)
	}
	z.mu.Lock()
	z.rrs = parsed
	z.mu.Unlock()
}

func (z *fakeDNS) configure(f func(z *fakeDNS)) {
	z.mu.Lock()
	defer z.mu.Unlock()
	f(z)
}

// count returns how many times the question "type name" was asked, over
// UDP or TCP; "tcp type name" counts those over TCP only.
func (z *fakeDNS) count(key string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	if strings.HasPrefix(key, "tcp ") {
		return z.asked[key]
	}
	return z.asked["udp "+key] + z.asked["tcp "+key]
}

func (z *fakeDNS) questions() map[string]int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return maps.Clone(z.asked)
}

func (z *fakeDNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(q.Question) != 1 {
		return
	}
	question := q.Question[0]
	network := w.LocalAddr().Network()
	z.asked[fmt.Sprintf("%s %s %s", network, dns.TypeToString[question.Qtype], strings.ToLower(question.Name))]++
	if z.silent {
		return
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if z.rcode != 0 {
		m.Rcode = z.rcode
		w.WriteMsg(m)
		return
	}
	exists := false
	for _, rr := range z.rrs {
		if !strings.EqualFold(rr.Header().Name, question.Name) {
			continue
		}
		exists = true
		if rr.Header().Rrtype == question.Qtype {
			m.Answer = append(m.Answer, rr)
		}
	}
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	if z.extra {
		for _, a := range m.Answer {
			srv, ok := a.(*dns.SRV)
			if !ok {
				continue
			}
			for _, rr := range z.rrs {
				if t := rr.Header().Rrtype; strings.EqualFold(rr.Header().Name, srv.Target) && (t == dns.TypeA || t == dns.TypeAAAA || t == dns.TypeTXT) && !slices.Contains(m.Extra, rr) {
					m.Extra = append(m.Extra, rr)
				}
			}
		}
	}
	if network == "udp" && z.maxUDP > 0 && len(m.Answer) > z.maxUDP {
		m.Answer, m.Extra = m.Answer[:z.maxUDP], nil
		m.Truncated = true
	}
	w.WriteMsg(m)
}

// startDNS runs d until the test ends.
func startDNS(t testing.TB, d *DNS, self Self) *node {
	t.Helper()
	if d.Interval == 0 {
		d.Interval = 50 * time.Millisecond
	}
	return startNode(t, d, self)
}

// found describes the Found events, in order: id and addresses.
func found(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Kind == Found {
			out = append(out, fmt.Sprintf("%s%v", ev.Peer.ID, ev.Peer.Addrs))
		}
	}
	return out
}

// lastRound reports whether the last events are Found events that found
// describes as want: a DNS discoverer reports every peer each round.
func lastRound(evs []Event, want []string) bool {
	if len(evs) < len(want) {
		return false
	}
	tail := found(evs[len(evs)-len(want):])
	return slices.Equal(tail, want)
}

func TestDNSBadConfig(t *testing.T) {
	for _, tc := range []struct {
		d    DNS
		want error
	}{
		{DNS{}, ErrBadName},
		{DNS{Name: "."}, ErrBadName},
		{DNS{Name: "bad name.example"}, ErrBadName},
		{DNS{Name: "a..b"}, ErrBadName},
		{DNS{Name: strings.Repeat("x", 64) + ".example"}, ErrBadName},
		{DNS{Name: strings.Repeat("abcdefg.", 40)}, ErrBadName},
		{DNS{Name: "tallship.service.consul", Server: "localhost:8600"}, ErrBadServer},
		{DNS{Name: "tallship.service.consul", Server: "127.0.0.1:"}, ErrBadServer},
		{DNS{Name: "tallship.service.consul", Server: ":53"}, ErrBadServer},
		{DNS{Name: "tallship.service.consul", Server: "127.0.0.1:0"}, ErrBadServer},
		{DNS{Name: "tallship.service.consul", Server: "127.0.0.1:99999"}, ErrBadServer},
		{DNS{Name: "tallship.service.consul", Server: "0.0.0.0:53"}, ErrBadServer},
		{DNS{Name: "tallship.service.consul", Server: "224.0.0.251"}, ErrBadServer},
		{DNS{Name: "tallship.service.consul", Server: "[::1"}, ErrBadServer},
	} {
		t.Run(fmt.Sprintf("%q at %q", tc.d.Name, tc.d.Server), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			begin := time.Now()
			err := tc.d.Run(ctx, Self{}, func(ev Event) { t.Errorf("event %+v before the error", ev) })
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run = %v, want %v", err, tc.want)
			}
			if d := time.Since(begin); d > time.Second {
				t.Errorf("the error took %v", d)
			}
			t.Log(err)
		})
	}
}

func TestDNSServerForms(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.2":          "10.0.0.2:53",
		"10.0.0.2:8600":     "10.0.0.2:8600",
		"::1":               "[::1]:53",
		"[::1]":             "[::1]:53",
		"[::1]:5353":        "[::1]:5353",
		"[fe80::1%ts0]:53":  "[fe80::1%ts0]:53",
		"::ffff:10.0.0.2":   "[::ffff:10.0.0.2]:53",
		"[2001:db8::1]:853": "[2001:db8::1]:853",
	} {
		got, err := parseDNSServer(in)
		if err != nil || got != want {
			t.Errorf("parseDNSServer(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestDNSFindsAndLoses serves the shapes of answer Consul and Kubernetes
// give (addresses in the additional section too), and the bare one a zone
// file gives: each finds every target, in order of priority, weight, name
// and port, IPv4 first, with the addresses it asked for; a record removed
// is reported Lost, one added Found.
func TestDNSFindsAndLoses(t *testing.T) {
	for _, tc := range []struct {
		name, query string
		extra       bool
		rrs         []string
		want        []string // Found, in order
		target      string   // a target whose addresses must be asked for
		remove      int      // the record to remove, an SRV
		lost        string   // the peer then Lost
	}{
		{
			name: "consul", query: "tallship.service.consul", extra: true, target: "0a3d0202.addr.dc1.consul.",
			rrs: []string{
				"tallship.service.consul. 0 IN SRV 1 1 7946 0a3d0102.addr.dc1.consul.",
				"tallship.service.consul. 0 IN SRV 1 1 7946 0a3d0202.addr.dc1.consul.",
				"tallship.service.consul. 0 IN SRV 1 1 7947 0a3d0102.addr.dc1.consul.",
				"0a3d0102.addr.dc1.consul. 0 IN A 10.61.1.2",
				"0a3d0202.addr.dc1.consul. 0 IN A 10.61.2.2",
				"0a3d0102.addr.dc1.consul. 0 IN TXT \"consul-network-segment=\"",
			},
			want:   []string{"[10.61.1.2:7946]", "[10.61.1.2:7947]", "[10.61.2.2:7946]"},
			remove: 1, lost: "[10.61.2.2:7946]",
		},
		{
			name: "kubernetes", query: "_tallship._tcp.tallship.default.svc.cluster.local", extra: true,
			target: "tallship-1.tallship.default.svc.cluster.local.",
			rrs: []string{
				"_tallship._tcp.tallship.default.svc.cluster.local. 5 IN SRV 0 33 7946 tallship-0.tallship.default.svc.cluster.local.",
				"_tallship._tcp.tallship.default.svc.cluster.local. 5 IN SRV 0 33 7946 tallship-1.tallship.default.svc.cluster.local.",
				"_tallship._tcp.tallship.default.svc.cluster.local. 5 IN SRV 0 33 7946 tallship-2.tallship.default.svc.cluster.local.",
				"tallship-0.tallship.default.svc.cluster.local. 5 IN A 10.244.0.7",
				"tallship-1.tallship.default.svc.cluster.local. 5 IN AAAA fd00:10:244::8",
				"tallship-1.tallship.default.svc.cluster.local. 5 IN A 10.244.1.8",
				"tallship-2.tallship.default.svc.cluster.local. 5 IN A 10.244.2.9",
			},
			want:   []string{"[10.244.0.7:7946]", "[10.244.1.8:7946 [fd00:10:244::8]:7946]", "[10.244.2.9:7946]"},
			remove: 2, lost: "[10.244.2.9:7946]",
		},
		{
			name: "zone file", query: "_tallship._tcp.example.test", extra: false, target: "b.example.test.",
			rrs: []string{
				"_tallship._tcp.example.test. 60 IN SRV 20 0 7000 c.example.test.",
				"_tallship._tcp.example.test. 60 IN SRV 10 1 7000 b.example.test.",
				"_tallship._tcp.example.test. 60 IN SRV 10 5 7000 a.example.test.",
				"_tallship._tcp.example.test. 60 IN SRV 10 5 7000 gone.example.test.",
				"_tallship._tcp.example.test. 60 IN SRV 30 0 0 zero-port.example.test.",
				"_tallship._tcp.example.test. 60 IN SRV 30 0 7000 .",
				"a.example.test. 60 IN AAAA 2001:db8::a",
				"a.example.test. 60 IN A 192.0.2.1",
				"b.example.test. 60 IN A 192.0.2.2",
				"b.example.test. 60 IN AAAA fe80::b",
				"c.example.test. 60 IN A 192.0.2.3",
			},
			want:   []string{"[192.0.2.1:7000 [2001:db8::a]:7000]", "[192.0.2.2:7000]", "[192.0.2.3:7000]"},
			remove: 0, lost: "[192.0.2.3:7000]",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z := startFakeDNS(t, "127.0.0.1:0", tc.rrs...)
			z.configure(func(z *fakeDNS) { z.extra = tc.extra })
			n := startDNS(t, &DNS{Name: tc.query, Server: z.addr}, Self{ID: "self"})
			at := n.rec.waitFor(t, 5*time.Second, "every target", func(evs []Event) bool { return lastRound(evs, tc.want) })
			t.Logf("found %d targets %v after start", len(tc.want), at.Sub(n.started))
			for _, ev := range n.rec.snapshot() {
				if ev.Source != "dns" || ev.Kind != Found || ev.Peer.ID != "" {
					t.Fatalf("event %+v, want Found from dns without an id", ev)
				}
			}
			if z.count("A "+tc.target) == 0 || z.count("AAAA "+tc.target) == 0 {
				t.Errorf("the addresses of %s not asked for: %v", tc.target, z.questions())
			}

			rrs := slices.Delete(slices.Clone(tc.rrs), tc.remove, tc.remove+1)
			z.set(t, rrs...)
			removed := time.Now()
			at = n.rec.waitFor(t, 5*time.Second, "Lost", func(evs []Event) bool {
				ev := evs[len(evs)-1]
				return ev.Kind == Lost && fmt.Sprint(ev.Peer.Addrs) == tc.lost
			})
			t.Logf("Lost %v after the record was removed (interval 50 ms)", at.Sub(removed))
			rest := slices.DeleteFunc(slices.Clone(tc.want), func(s string) bool { return s == tc.lost })
			mark := len(n.rec.snapshot())
			n.rec.waitFor(t, 5*time.Second, "the others, still found", func(evs []Event) bool {
				return len(evs) >= mark+len(rest) && lastRound(evs, rest)
			})

			z.set(t, tc.rrs...)
			n.rec.waitFor(t, 5*time.Second, "found again", func(evs []Event) bool { return lastRound(evs, tc.want) })
			lostCount := 0
			for _, ev := range n.rec.snapshot() {
				if ev.Kind == Lost {
					lostCount++
				}
			}
			if lostCount != 1 {
				t.Errorf("%d Lost events, want 1", lostCount)
			}
		})
	}
}

func TestDNSNoSuchName(t *testing.T) {
	z := startFakeDNS(t, "127.0.0.1:0", "a.test. 0 IN A 10.0.0.1")
	n := startDNS(t, &DNS{Name: "nothing.test", Server: z.addr}, Self{})
	// a.test has no SRV records: no peers, and no error.
	n2 := startDNS(t, &DNS{Name: "a.test", Server: z.addr}, Self{})
	waitFor(t, 5*time.Second, "a few rounds", func() bool {
		return z.count("SRV nothing.test.") >= 3 && z.count("SRV a.test.") >= 3
	})
	if evs := append(n.rec.snapshot(), n2.rec.snapshot()...); len(evs) != 0 {
		t.Fatalf("events %v, want none", evs)
	}
}

// TestDNSIDs reads node ids from the TXT records of the SRV targets ("i="
// in a record of its own: net.Resolver joins the strings of one record),
// skips this node (by id and by address), ignores an id that names a host
// with several ports, and reports a node that changed its id at an address
// as Lost and then Found.
func TestDNSIDs(t *testing.T) {
	srv := func(target string, port int) string {
		return fmt.Sprintf("_tallship._tcp.test. 0 IN SRV 0 0 %d %s", port, target)
	}
	rrs := []string{
		srv("a.test.", 7000), "a.test. 0 IN A 10.0.0.1", `a.test. 0 IN TXT "i=node-a"`, `a.test. 0 IN TXT "v=1"`,
		srv("b.test.", 7000), "b.test. 0 IN A 10.0.0.2", `b.test. 0 IN TXT "i=node\032b\"x"`,
		srv("joined.test.", 7000), "joined.test. 0 IN A 10.0.0.7", `joined.test. 0 IN TXT "v=1" "i=joined"`,
		srv("self.test.", 7000), "self.test. 0 IN A 10.0.0.3", `self.test. 0 IN TXT "i=me"`,
		srv("self2.test.", 7000), "self2.test. 0 IN A 10.0.0.4",
		srv("shared.test.", 7000), srv("shared.test.", 7001), "shared.test. 0 IN A 10.0.0.5", `shared.test. 0 IN TXT "i=one"`,
		srv("two.test.", 7000), "two.test. 0 IN A 10.0.0.6", `two.test. 0 IN TXT "i=x"`, `two.test. 0 IN TXT "i=y"`,
	}
	z := startFakeDNS(t, "127.0.0.1:0", rrs...)
	self := Self{ID: "me", Addrs: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.4:7000")}}
	n := startDNS(t, &DNS{Name: "_tallship._tcp.test.", Server: z.addr}, self)
	want := []string{"node-a[10.0.0.1:7000]", "node b\"x[10.0.0.2:7000]", "[10.0.0.7:7000]", "[10.0.0.5:7000]", "[10.0.0.5:7001]", "[10.0.0.6:7000]"}
	n.rec.waitFor(t, 5*time.Second, "the peers with their ids", func(evs []Event) bool { return lastRound(evs, want) })

	rrs[2] = `a.test. 0 IN TXT "i=node-a2"`
	z.set(t, rrs...)
	mark := len(n.rec.snapshot())
	n.rec.waitFor(t, 5*time.Second, "the new id", func(evs []Event) bool {
		return len(evs) > mark && lastRound(evs, append([]string{"node-a2[10.0.0.1:7000]"}, want[1:]...))
	})
	var changes []string
	for _, ev := range n.rec.snapshot()[mark:] {
		if ev.Kind == Lost || ev.Peer.ID == "node-a2" {
			changes = append(changes, fmt.Sprintf("%v %s", ev.Kind, ev.Peer.ID))
		}
	}
	if len(changes) < 2 || changes[0] != "lost node-a" || changes[1] != "found node-a2" {
		t.Fatalf("after the id changed: %v, want lost node-a, then found node-a2", changes)
	}
}

// TestDNSTruncated serves more targets than fit the UDP answers it gives:
// the discoverer asks again over TCP and finds them all.
func TestDNSTruncated(t *testing.T) {
	var rrs, want []string
	for i := range 40 {
		rrs = append(rrs,
			fmt.Sprintf("_tallship._tcp.big.test. 0 IN SRV 0 0 7000 n%02d.big.test.", i),
			fmt.Sprintf("n%02d.big.test. 0 IN A 10.0.1.%d", i, i+1))
		want = append(want, fmt.Sprintf("[10.0.1.%d:7000]", i+1))
	}
	z := startFakeDNS(t, "127.0.0.1:0", rrs...)
	z.configure(func(z *fakeDNS) { z.maxUDP = 3 })
	n := startDNS(t, &DNS{Name: "_tallship._tcp.big.test", Server: z.addr}, Self{})
	n.rec.waitFor(t, 5*time.Second, "40 targets", func(evs []Event) bool { return lastRound(evs, want) })
	if z.count("tcp SRV _tallship._tcp.big.test.") == 0 {
		t.Fatalf("no SRV query over TCP: %v", z.questions())
	}
}

// TestDNSFailures makes the server fail (SERVFAIL, REFUSED, then no answer
// at all): each round is reported as an error that names the question and
// the server, within the bounds Timeout sets, and the peers known stay
// known (no Lost) until it answers again.
func TestDNSFailures(t *testing.T) {
	z := startFakeDNS(t, "127.0.0.1:0",
		"_tallship._tcp.test. 0 IN SRV 0 0 7000 a.test.", "a.test. 0 IN A 10.0.0.1")
	const timeout = 200 * time.Millisecond
	n := startDNS(t, &DNS{Name: "_tallship._tcp.test", Server: z.addr, Timeout: timeout}, Self{})
	n.rec.waitFor(t, 5*time.Second, "a", func(evs []Event) bool { return lastRound(evs, []string{"[10.0.0.1:7000]"}) })
	for _, tc := range []struct {
		name string
		f    func(z *fakeDNS)
		want string
	}{
		{"servfail", func(z *fakeDNS) { z.rcode = dns.RcodeServerFailure }, "server misbehaving"},
		{"refused", func(z *fakeDNS) { z.rcode = dns.RcodeRefused }, "server misbehaving"},
		{"silent", func(z *fakeDNS) { z.silent = true }, "no answer within"},
	} {
		mark := len(n.rec.snapshot())
		z.configure(tc.f)
		broke := time.Now()
		at := n.rec.waitFor(t, 5*time.Second, tc.name+" reported", func(evs []Event) bool {
			return len(evs) > mark && evs[len(evs)-1].Err != nil
		})
		evs := n.rec.snapshot()
		err := evs[len(evs)-1].Err
		for _, s := range []string{tc.want, "SRV", "_tallship._tcp.test.", z.addr} {
			if !errors.Is(err, ErrLookup) || !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %v, want ErrLookup saying %s", tc.name, err, s)
			}
		}
		var ne net.Error
		if timeout := errors.As(err, &ne) && ne.Timeout(); timeout != (tc.name == "silent") {
			t.Errorf("%s: error %v is a timeout: %v", tc.name, err, timeout)
		}
		t.Logf("%s: reported %v after the server broke: %v", tc.name, at.Sub(broke), err)
		// The next failure comes at least a round later: a round with no
		// answer lasts at least Timeout.
		mark = len(evs)
		n.rec.waitFor(t, 5*time.Second, "another failed round", func(evs []Event) bool {
			return len(evs) > mark && evs[len(evs)-1].Err != nil
		})
		for _, ev := range n.rec.snapshot() {
			if ev.Kind == Lost {
				t.Fatalf("%s: %+v: a failed look-up lost a peer", tc.name, ev)
			}
		}
		z.configure(func(z *fakeDNS) { z.rcode, z.silent = 0, false })
		mark = len(n.rec.snapshot())
		n.rec.waitFor(t, 5*time.Second, "a again", func(evs []Event) bool {
			return len(evs) > mark && lastRound(evs, []string{"[10.0.0.1:7000]"})
		})
	}
	// A server that is not there: the round fails at once (the port is
	// unreachable) or within Timeout.
	began := time.Now()
	dead := startDNS(t, &DNS{Name: "_tallship._tcp.test", Server: "127.0.0.1:1", Timeout: timeout}, Self{})
	at := dead.rec.waitFor(t, 5*time.Second, "an error", func(evs []Event) bool { return len(evs) > 0 })
	if ev := dead.rec.snapshot()[0]; !errors.Is(ev.Err, ErrLookup) || at.Sub(began) > 2*timeout {
		t.Errorf("no server: %+v after %v, want ErrLookup within %v", ev, at.Sub(began), timeout)
	}
}

// TestDNSCancel cancels Run while a query waits for a server that never
// answers: Run returns at once and leaves no goroutine.
func TestDNSCancel(t *testing.T) {
	z := startFakeDNS(t, "127.0.0.1:0")
	z.configure(func(z *fakeDNS) { z.silent = true })
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	d := &DNS{Name: "_tallship._tcp.test", Server: z.addr, Timeout: time.Minute}
	go func() { done <- d.Run(ctx, Self{}, func(ev Event) { t.Errorf("event %+v", ev) }) }()
	waitFor(t, 5*time.Second, "the query", func() bool { return z.count("SRV _tallship._tcp.test.") > 0 })
	cancelled := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		t.Logf("Run returned %v after cancel", time.Since(cancelled))
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return 2 s after cancel")
	}
	waitFor(t, 5*time.Second, "no goroutine left", func() bool { return runtime.NumGoroutine() <= before })
}

// TestDNSSystemResolver leaves Server empty, as in a Kubernetes pod: the
// look-ups go to the servers of /etc/resolv.conf, as the system
// resolver's would. The test's dial stands in for the network and takes
// every exchange to the test's own server, so no real server is asked.
func TestDNSSystemResolver(t *testing.T) {
	z := startFakeDNS(t, "127.0.0.1:0",
		"_tallship._tcp.tallship.default.svc.cluster.local. 5 IN SRV 0 50 7946 10-244-0-7.tallship.default.svc.cluster.local.",
		"10-244-0-7.tallship.default.svc.cluster.local. 5 IN A 10.244.0.7")
	var mu sync.Mutex
	servers := map[string]int{} // the addresses net.Resolver dialed
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		servers[address]++
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, z.addr)
	}
	n := startDNS(t, &DNS{Name: "_tallship._tcp.tallship.default.svc.cluster.local.", dial: dial}, Self{})
	n.rec.waitFor(t, 5*time.Second, "the pod", func(evs []Event) bool { return lastRound(evs, []string{"[10.244.0.7:7946]"}) })
	for _, ev := range n.rec.snapshot() {
		if ev.Err != nil {
			t.Errorf("error %v: the server answered", ev.Err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(servers) == 0 || servers[z.addr] > 0 {
		t.Fatalf("dialed %v, want the servers of /etc/resolv.conf (or its default, localhost)", servers)
	}
	t.Logf("dialed %v for the servers of /etc/resolv.conf", servers)
}

// waitFor polls cond until it holds, or fails t after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
