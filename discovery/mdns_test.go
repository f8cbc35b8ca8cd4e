package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// Every test here sends multicast: each calls netns.Require first, which
// skips it unless the binary runs in a private network namespace whose only
// interfaces are loopback and the ts* veths the tests make.

func TestMDNSTwoNodesFindEachOther(t *testing.T) {
	long := func(prefix string, n int) string {
		return prefix + strings.Repeat("x", n-len(prefix))
	}
	binary := string([]byte{0, 1, 2, 0xff, '"', '\\', '=', ' ', 'z'}) + strings.Repeat("\xfe", 290)
	for _, tc := range []struct {
		name           string
		cluster        string
		idA, idB       string
		wantHashedName bool
	}{
		{name: "uuid ids", cluster: "my-cluster", idA: "0b0ab5a4-9b0c-4f51-9c64-2b1a0a8f6d11", idB: "5e8a6d2c-6f4e-4c1b-8a3e-7f2d9c1b0a99"},
		{name: "300-byte cluster, long ids", cluster: long("c", 300), idA: long("a", 300), idB: long("b", MaxIDLen)},
		{name: "binary id", cluster: "c\x00\xff", idA: binary, idB: "B/ü"},
		{name: "cluster over 320 bytes", cluster: long("big", 5000), idA: "a", idB: "b", wantHashedName: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netns.Require(t)
			p := newProbe(t)
			a := startNode(t, &MDNS{}, Self{Cluster: tc.cluster, ID: tc.idA})
			p.awaitRunning(t, a)
			b := startNode(t, &MDNS{}, Self{Cluster: tc.cluster, ID: tc.idB})
			bFound := b.rec.waitFor(t, 5*time.Second, "new node finds the running one", knows(tc.idA))
			aFound := a.rec.waitFor(t, 5*time.Second, "running node finds the new one", knows(tc.idB))
			t.Logf("new node found the running one in %v; the running one found it in %v",
				bFound.Sub(b.started), aFound.Sub(b.started))
			// Both must come from the announcement and query sent at
			// once, not from the second round one second later.
			for who, at := range map[string]time.Time{"new": bFound, "running": aFound} {
				if d := at.Sub(b.started); d > 900*time.Millisecond {
					t.Errorf("%s node took %v, want well under the 1 s of the second round", who, d)
				}
			}
			got := peers(b.rec.snapshot())[tc.idA]
			want := []netip.AddrPort{
				netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(a.self.Port)),
				netip.AddrPortFrom(netip.MustParseAddr("::1"), uint16(a.self.Port)),
			}
			if fmt.Sprint(got.Addrs) != fmt.Sprint(want) {
				t.Errorf("addrs of A = %v, want %v", got.Addrs, want)
			}
		})
	}
}

func TestMDNSTenNodesFindAll(t *testing.T) {
	netns.Require(t)
	const n = 10
	var nodes []*node
	start := time.Now()
	for i := range n {
		nodes = append(nodes, startNode(t, &MDNS{}, Self{Cluster: "ten", ID: fmt.Sprintf("node-%d", i)}))
	}
	var last time.Time
	for i, nd := range nodes {
		var others []string
		for j := range n {
			if j != i {
				others = append(others, fmt.Sprintf("node-%d", j))
			}
		}
		at := nd.rec.waitFor(t, 10*time.Second, nd.self.ID+" knows all others", knows(others...))
		if at.After(last) {
			last = at
		}
		if len(peers(nd.rec.snapshot())) != n-1 {
			t.Errorf("%s knows %v, want the %d others", nd.self.ID, peers(nd.rec.snapshot()), n-1)
		}
	}
	t.Logf("%d nodes started together: full knowledge in %v", n, last.Sub(start))
}

func TestMDNSOtherClustersNeverReported(t *testing.T) {
	netns.Require(t)
	p := newProbe(t)
	blue := startNode(t, &MDNS{}, Self{Cluster: "blue", ID: "blue-1"})
	red := startNode(t, &MDNS{}, Self{Cluster: "red", ID: "red-1"})
	red2 := startNode(t, &MDNS{}, Self{Cluster: "red", ID: "red-2"})
	red.rec.waitFor(t, 5*time.Second, "red-1 knows red-2", knows("red-2"))
	red2.rec.waitFor(t, 5*time.Second, "red-2 knows red-1", knows("red-1"))
	// Blue's second announcement comes after red started listening.
	p.await(t, 5*time.Second, "blue's second announcement", announces("blue", "blue-1"))
	p.await(t, 5*time.Second, "blue's second announcement", announces("blue", "blue-1"))

	// Records under red's service name that are not red's: a hash
	// collision, another version, garbage.
	red3 := fakeAnnouncement(t, "red", "red-3", 9, 120)
	for _, tc := range []struct {
		name string
		txt  [][]byte
	}{
		{"colliding hash, other name", encodeTXT("not-red", "intruder-1")},
		{"colliding hash, hashed name", encodeTXT(strings.Repeat("n", 400), "intruder-2")},
		{"version 2", [][]byte{[]byte("v=2"), []byte("c=red"), []byte("i=intruder-3")}},
		{"no version", [][]byte{[]byte("c=red"), []byte("i=intruder-4")}},
		{"garbage", [][]byte{[]byte("\xff\xfe"), []byte("i=intruder-5")}},
	} {
		rs, err := newRecordSet(newNames("red", tc.name), tc.txt, 9, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, 120)
		if err != nil {
			t.Fatal(err)
		}
		b, err := rs.announcement().Pack()
		if err != nil {
			t.Fatal(err)
		}
		inject(t, b)
	}
	inject(t, []byte("not dns at all"))
	inject(t, red3[:len(red3)/2]) // truncated
	syncMarker(t, red.rec, "red", "marker")
	syncMarker(t, blue.rec, "blue", "marker")

	for _, nd := range []*node{red, red2, blue} {
		for id := range peers(nd.rec.snapshot()) {
			if id == "marker" {
				continue
			}
			if nd.self.Cluster != "red" || !strings.HasPrefix(id, "red-") {
				t.Errorf("%s (%s) reported %q", nd.self.ID, nd.self.Cluster, id)
			}
		}
	}
}

// TestMDNSTwinYields: a node never reports its own id, and a second live
// node with it, on real sockets, yields within 2 s with ErrIDConflict
// while the first keeps its id and its place in other nodes' view.
func TestMDNSTwinYields(t *testing.T) {
	netns.Require(t)
	a := startNode(t, &MDNS{}, Self{Cluster: "self", ID: "same", Port: 41001})
	other := startNode(t, &MDNS{}, Self{Cluster: "self", ID: "other", Port: 41002})
	a.rec.waitFor(t, 5*time.Second, "a claims its id", func(evs []Event) bool { return evs[len(evs)-1].Kind == Claimed })
	other.rec.waitFor(t, 5*time.Second, "other knows same", knows("same"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	twin := newRecorder()
	start := time.Now()
	err := (&MDNS{}).Run(ctx, Self{Cluster: "self", ID: "same", Port: 41003}, twin.report)
	if took := time.Since(start); !errors.Is(err, ErrIDConflict) || took > 2*time.Second {
		t.Fatalf("the twin's Run = %v after %v, want ErrIDConflict within 2 s", err, took)
	}
	t.Logf("the twin yielded after %v: %v", time.Since(start), err)
	syncMarker(t, a.rec, "self", "marker")
	syncMarker(t, other.rec, "self", "marker2")
	for _, ev := range a.rec.snapshot() {
		if ev.Peer.ID == "same" {
			t.Errorf("a reported its own id: %v", ev)
		}
	}
	if _, ok := peers(a.rec.snapshot())["other"]; !ok {
		t.Error("a did not find other")
	}
	for _, ap := range peers(other.rec.snapshot())["same"].Addrs {
		if ap.Port() != 41001 {
			t.Errorf("other sees same at %v: the twin's address", ap)
		}
	}
	select {
	case err := <-a.done:
		t.Fatalf("a's Run ended: %v", err)
	default:
	}
}

func TestMDNSGoodbyeReportsLost(t *testing.T) {
	netns.Require(t)
	a := startNode(t, &MDNS{}, Self{Cluster: "bye", ID: "a"})
	b := startNode(t, &MDNS{}, Self{Cluster: "bye", ID: "b"})
	a.rec.waitFor(t, 5*time.Second, "a knows b", knows("b"))
	b.rec.waitFor(t, 5*time.Second, "b knows a", knows("a"))
	stopped := time.Now()
	b.stop(t)
	at := a.rec.waitFor(t, 2*time.Second, "a loses b", lost("b"))
	t.Logf("goodbye: Lost reported %v after cancel", at.Sub(stopped))
	if d := at.Sub(stopped); d > time.Second {
		t.Errorf("Lost after %v, want promptly", d)
	}
}

func TestMDNSExpiry(t *testing.T) {
	netns.Require(t)
	p := newProbe(t)
	a := startNode(t, &MDNS{}, Self{Cluster: "exp", ID: "a"})
	p.awaitRunning(t, a)
	// A node that announces once with a TTL of 1 s and never answers.
	inject(t, fakeAnnouncement(t, "exp", "ghost", 9, 1))
	found := a.rec.waitFor(t, 5*time.Second, "a finds ghost", knows("ghost"))
	gone := a.rec.waitFor(t, 5*time.Second, "a loses ghost", lost("ghost"))
	t.Logf("record of TTL 1 s expired %v after it arrived", gone.Sub(found))
	if d := gone.Sub(found); d < 900*time.Millisecond || d > 2*time.Second {
		t.Errorf("expired after %v, want about 1 s", d)
	}
}

func TestMDNSRunLeavesNoGoroutine(t *testing.T) {
	netns.Require(t)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recA, recB := newRecorder(), newRecorder()
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	go func() { doneA <- (&MDNS{}).Run(ctx, Self{Cluster: "g", ID: "a", Port: 1}, recA.report) }()
	go func() { doneB <- (&MDNS{}).Run(ctx, Self{Cluster: "g", ID: "b", Port: 2}, recB.report) }()
	recA.waitFor(t, 5*time.Second, "a knows b", knows("b"))
	recB.waitFor(t, 5*time.Second, "b knows a", knows("a"))
	cancel()
	for _, done := range []chan error{doneA, doneB} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond) // polling against the deadline
	}
}

func TestMDNSStartErrors(t *testing.T) {
	netns.Require(t)
	down := net.Interface{Index: 999, Name: "nope", Flags: 0}
	for _, tc := range []struct {
		name string
		d    *MDNS
		self Self
		want error
	}{
		{"no cluster", &MDNS{}, Self{ID: "a", Port: 1}, ErrNoCluster},
		{"no id", &MDNS{}, Self{Cluster: "c", Port: 1}, ErrNoID},
		{"id too long", &MDNS{}, Self{Cluster: "c", ID: strings.Repeat("a", MaxIDLen+1), Port: 1}, ErrIDTooLong},
		{"no port", &MDNS{}, Self{Cluster: "c", ID: "a"}, ErrNoPort},
		{"port out of range", &MDNS{}, Self{Cluster: "c", ID: "a", Port: 70000}, ErrNoPort},
		{"no IP version", &MDNS{DisableIPv4: true, DisableIPv6: true}, Self{Cluster: "c", ID: "a", Port: 1}, ErrNoInterface},
		{"interface down", &MDNS{Interfaces: []net.Interface{down}}, Self{Cluster: "c", ID: "a", Port: 1}, ErrNoInterface},
		// lo has no IPv6 multicast and ::1 is its only IPv6 address.
		{"IPv6 only on loopback", &MDNS{DisableIPv4: true}, Self{Cluster: "c", ID: "a", Port: 1}, ErrNoInterface},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := tc.d.Run(ctx, tc.self, func(ev Event) { t.Errorf("unexpected event %v", ev) })
			if !errors.Is(err, tc.want) {
				t.Errorf("Run = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMDNSAnnouncedAddrs(t *testing.T) {
	netns.Require(t)
	for _, tc := range []struct {
		name  string
		self  Self
		want  string
		v4off bool
	}{
		{"interface addresses", Self{Port: 7}, "[127.0.0.1:7 [::1]:7]", false},
		{"unspecified IPv4", Self{Addrs: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:8")}}, "[127.0.0.1:8]", false},
		{"unspecified IPv6 means both", Self{Addrs: []netip.AddrPort{netip.MustParseAddrPort("[::]:9")}}, "[127.0.0.1:9 [::1]:9]", false},
		{"foreign address goes everywhere", Self{Port: 10, Addrs: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:10")}}, "[192.0.2.1:10]", false},
		{"other port dropped", Self{Port: 11, Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:11"), netip.MustParseAddrPort("192.0.2.1:12")}}, "[127.0.0.1:11]", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.self.Cluster, tc.self.ID = "addrs "+tc.name, "a"
			a := startNode(t, &MDNS{}, tc.self)
			b := startNode(t, &MDNS{}, Self{Cluster: tc.self.Cluster, ID: "b"})
			b.rec.waitFor(t, 5*time.Second, "b knows a", knows("a"))
			if got := fmt.Sprint(peers(b.rec.snapshot())["a"].Addrs); got != tc.want {
				t.Errorf("addrs = %s, want %s", got, tc.want)
			}
			_ = a
		})
	}
}

// TestMDNSAnswersQueries asks a running node as a legacy querier does
// (from an ephemeral port: dig, hashicorp/mdns) and checks its unicast
// answer (RFC 6762 §6.7): the query's id and questions, no cache-flush
// bit, TTLs of at most 10 s; every record for a browse (of the cluster
// subtype or the base type) and a refresh, the one asked for else, each
// record once; the service type for an enumeration (RFC 6763 §9).
func TestMDNSAnswersQueries(t *testing.T) {
	netns.Require(t)
	p := newProbe(t)
	a := startNode(t, &MDNS{}, Self{Cluster: "ask", ID: "a"})
	p.awaitRunning(t, a)
	n := newNames("ask", "a")
	refresh, _, err := refreshQuery([]string{n.instance})
	if err != nil {
		t.Fatal(err)
	}
	questions := func(class uint16, qs ...dns.Question) []byte {
		m := new(dns.Msg)
		m.Id = 0x7a11
		for _, q := range qs {
			q.Qclass = class
			m.Question = append(m.Question, q)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	question := func(name string, qtype uint16) []byte {
		return questions(dns.ClassINET, dns.Question{Name: name, Qtype: qtype})
	}
	browse := dns.Question{Name: serviceName("ask"), Qtype: dns.TypePTR}
	byName := dns.Question{Name: n.instance, Qtype: dns.TypeANY}
	for _, tc := range []struct {
		name     string
		query    []byte
		complete bool     // a full sighting of a
		types    []uint16 // else: the record types answered
	}{
		{"browse", question(serviceName("ask"), dns.TypePTR), true, nil},
		{"browse, upper case", question(strings.ToUpper(serviceName("ask")), dns.TypePTR), true, nil},
		{"browse of the base type", question(serviceType, dns.TypePTR), true, nil},
		{"service type enumeration", question(servicesName, dns.TypePTR), false, []uint16{dns.TypePTR}},
		{"refresh by name", refresh, true, nil},
		{"browse, unicast response asked", questions(dns.ClassINET|qu, browse), true, nil},
		{"browse and refresh at once", questions(dns.ClassINET, browse, byName), true, nil},
		{"TXT", question(n.instance, dns.TypeTXT), false, []uint16{dns.TypeTXT}},
		{"address", question(n.host, dns.TypeA), false, []uint16{dns.TypeA}},
		{"other cluster", question(serviceName("other"), dns.TypePTR), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.WriteToUDP(tc.query, group4); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			buf := make([]byte, maxReadSize)
			nr, _, err := c.ReadFromUDP(buf)
			if tc.types == nil && !tc.complete {
				if err == nil {
					t.Fatalf("answered a query for another cluster")
				}
				return
			}
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			m := new(dns.Msg)
			if err := m.Unpack(buf[:nr]); err != nil {
				t.Fatal(err)
			}
			var q dns.Msg
			if err := q.Unpack(tc.query); err != nil {
				t.Fatal(err)
			}
			if m.Id != q.Id {
				t.Errorf("answer id %#x, want the query's %#x", m.Id, q.Id)
			}
			if len(m.Question) != len(q.Question) || !sameName(m.Question[0].Name, q.Question[0].Name) || m.Question[0].Qclass&qu != 0 {
				t.Errorf("answer questions %v, want the query's %v without the QU bit", m.Question, q.Question)
			}
			for _, rr := range append(m.Answer, m.Extra...) {
				if h := rr.Header(); h.Ttl > 10 || h.Class&cacheFlush != 0 {
					t.Errorf("legacy answer holds %v: want TTL ≤ 10 and no cache-flush bit", rr)
				}
			}
			for i, rr := range m.Answer {
				for _, other := range m.Answer[:i] {
					if dns.IsDuplicate(rr, other) {
						t.Errorf("answer holds %v twice", rr)
					}
				}
			}
			if tc.complete {
				if len(m.Answer) > 0 && m.Answer[0].Header().Rrtype == dns.TypePTR && sameName(m.Answer[0].Header().Name, serviceType) {
					m.Answer[0].Header().Name = serviceName("ask") // parse the base type's PTR as the subtype's
				}
				ss, errs := parseResponse(m, serviceName("ask"))
				if len(ss) != 1 || ss[0].txt.id != "a" || len(errs) != 0 {
					t.Fatalf("answer %v gives %+v, %v", m, ss, errs)
				}
				return
			}
			var types []uint16
			for _, rr := range m.Answer {
				types = append(types, rr.Header().Rrtype)
			}
			if fmt.Sprint(types) != fmt.Sprint(tc.types) {
				t.Errorf("answer types %v, want %v", types, tc.types)
			}
		})
	}
}

// TestMDNSPassiveNodeSaysNothing: a passive node (an observer) finds the
// others, and no packet on the network ever names it: no announcement,
// probe, answer or goodbye of its own, so no other node reports it. Its
// queries carry only what it knows of the others.
func TestMDNSPassiveNodeSaysNothing(t *testing.T) {
	netns.Require(t)
	p := newProbe(t)
	a := startNode(t, &MDNS{}, Self{Cluster: "c", ID: "node-a"})
	p.awaitRunning(t, a)
	o := startNode(t, &MDNS{}, Self{Cluster: "c", ID: "the-observer", Passive: true})
	o.rec.waitFor(t, 5*time.Second, "the observer finds a", knows("node-a"))
	b := startNode(t, &MDNS{}, Self{Cluster: "c", ID: "node-b"})
	a.rec.waitFor(t, 5*time.Second, "a finds b", knows("node-b"))
	b.rec.waitFor(t, 5*time.Second, "b finds a", knows("node-a"))
	o.rec.waitFor(t, 5*time.Second, "the observer finds b", knows("node-b"))
	o.stop(t)
	syncMarker(t, a.rec, "c", "marker") // what was sent before has been read
	for _, nd := range []*node{a, b} {
		if _, ok := peers(nd.rec.snapshot())["the-observer"]; ok {
			t.Errorf("%s reported the passive node", nd.self.ID)
		}
	}
	for {
		select {
		case m := <-p.msgs:
			if strings.Contains(m.msg.String(), "the-observer") {
				t.Fatalf("a packet names the passive node:\n%v", m.msg)
			}
			continue
		default:
		}
		break
	}
}
