package discovery

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/miekg/dns"
)

// Probing and conflict resolution (mdns_claim.go), on the simulated LAN in
// virtual time.

// claimed reports whether n reported Claimed.
func claimed(n *simNode) bool {
	for _, ev := range n.rec.snapshot() {
		if ev.Kind == Claimed {
			return true
		}
	}
	return false
}

// ended reports whether n's run has returned, and what it returned.
func ended(n *simNode) (bool, error) {
	select {
	case <-n.done:
		return true, n.runErr
	default:
		return false, nil
	}
}

func TestClaimProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lan := newSimLAN(t)
		start := time.Now()
		a := lan.start("c", "a", &MDNS{})
		time.Sleep(700 * time.Millisecond)
		if claimed(a) {
			t.Fatal("Claimed before the third probe's wait was over")
		}
		time.Sleep(100 * time.Millisecond)
		if !claimed(a) {
			t.Fatal("no Claimed 800 ms after start")
		}
		lan.mu.Lock()
		defer lan.mu.Unlock()
		var probes []time.Duration
		firstAnnouncement := -1
		for i, p := range lan.log {
			switch p.kind {
			case "announcement":
				if firstAnnouncement < 0 {
					firstAnnouncement = i
				}
			case "probe":
				if firstAnnouncement >= 0 && len(probes) == 0 {
					t.Error("the first announcement went before the first probe")
				}
				probes = append(probes, p.at.Sub(start))
				m := new(dns.Msg)
				if err := m.Unpack(p.data); err != nil {
					t.Fatal(err)
				}
				if len(p.data) > maxPacketSize {
					t.Errorf("probe of %d bytes", len(p.data))
				}
				if m.Response || len(m.Question) != 2 {
					t.Fatalf("probe %v: want a query with two questions", m)
				}
				for _, q := range m.Question {
					if q.Qtype != dns.TypeANY || q.Qclass != dns.ClassINET|qu {
						t.Errorf("probe question %v: want ANY with the QU bit (RFC 6762 §8.1)", q)
					}
				}
				if !sameName(m.Question[0].Name, a.iface.rs.names.instance) || !sameName(m.Question[1].Name, a.iface.rs.names.host) {
					t.Errorf("probe asks for %v, want the instance and host names", m.Question)
				}
				if !holds(m.Ns, a.iface.rs.srv) || !holds(m.Ns, a.iface.rs.txt) || !holds(m.Ns, a.iface.rs.addrs[0]) {
					t.Errorf("probe's authority section %v, want SRV, TXT and address", m.Ns)
				}
			}
		}
		want := []time.Duration{0, probeGap, 2 * probeGap}
		if fmt.Sprint(probes) != fmt.Sprint(want) {
			t.Errorf("probes at %v, want %v", probes, want)
		}
	})
}

// TestClaimNewcomerYields: a node with the id of a running one yields
// within 2 s, with an error that names the holder; the holder keeps its
// id, and a third node still sees it where it is.
func TestClaimNewcomerYields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lan := newSimLAN(t)
		a := lan.start("c", "a", &MDNS{})
		c := lan.start("c", "c", &MDNS{})
		time.Sleep(5 * time.Second)
		start := time.Now()
		twin := lan.start("c", "a", &MDNS{})
		<-twin.done
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the twin yielded after %v, want ≤ 2 s", took)
		}
		if !errors.Is(twin.runErr, ErrIDConflict) || !strings.Contains(twin.runErr.Error(), a.addr.String()) {
			t.Errorf("twin's run = %v, want ErrIDConflict naming %v", twin.runErr, a.addr)
		}
		if claimed(twin) {
			t.Error("the twin reported Claimed")
		}
		time.Sleep(3 * time.Minute)
		if done, err := ended(a); done {
			t.Fatalf("the holder stopped: %v", err)
		}
		want := netip.AddrPortFrom(a.addr, uint16(7000+a.idx))
		if got := peers(c.rec.snapshot())["a"].Addrs; len(got) != 1 || got[0] != want {
			t.Errorf("c sees a at %v, want [%v]", got, want)
		}
		for _, ev := range c.rec.snapshot() {
			if ev.Kind == Lost {
				t.Errorf("c reported %v: the twin's going must not take a away", ev)
			}
		}
	})
}

// TestClaimSimultaneousTwins: of two nodes that start at the same moment
// with one id, exactly one yields: the tie-break of RFC 6762 §8.2.
func TestClaimSimultaneousTwins(t *testing.T) {
	for round := range 10 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lan := newSimLAN(t)
				x := lan.start("c", "twin", &MDNS{})
				y := lan.start("c", "twin", &MDNS{})
				time.Sleep(3 * time.Second)
				xDone, xErr := ended(x)
				yDone, yErr := ended(y)
				if xDone == yDone {
					t.Fatalf("x ended %v (%v), y ended %v (%v): want exactly one to yield", xDone, xErr, yDone, yErr)
				}
				loser, winner := x, y
				if yDone {
					loser, winner = y, x
				}
				if !errors.Is(loser.runErr, ErrIDConflict) || !claimed(winner) {
					t.Errorf("loser's run = %v (want ErrIDConflict), winner claimed %v", loser.runErr, claimed(winner))
				}
				// The lexicographically later records win: here, the
				// later address (A sorts first).
				if winner.addr.Less(loser.addr) {
					t.Errorf("%v won over %v: the tie-break favours the later data", winner.addr, loser.addr)
				}
			})
		})
	}
}

// TestClaimRestartIsNoTwin: a node that restarts with its id after a crash
// (new port and address, its old records still in others' caches) is no
// twin: nobody answers for a dead node.
func TestClaimRestartIsNoTwin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lan := newSimLAN(t)
		lan.start("c", "a", &MDNS{})
		b := lan.start("c", "b", &MDNS{})
		time.Sleep(time.Minute)
		b.stop(false)
		b2 := lan.start("c", "b", &MDNS{})
		time.Sleep(5 * time.Second)
		if done, err := ended(b2); done || !claimed(b2) {
			t.Errorf("the restarted node: ended %v (%v), claimed %v; want it running with its id", done, err, claimed(b2))
		}
	})
}

// TestClaimTwinsMeetAfterPartition: two nodes that claimed one id apart
// (a partition) meet when it heals; both probe again (§9) and exactly one
// keeps the id.
func TestClaimTwinsMeetAfterPartition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lan := newSimLAN(t)
		x := lan.start("c", "twin", &MDNS{})
		lan.startGroup = 1
		y := lan.start("c", "twin", &MDNS{})
		time.Sleep(2 * time.Second)
		if !claimed(x) || !claimed(y) {
			t.Fatalf("apart, claimed x %v, y %v: want both", claimed(x), claimed(y))
		}
		lan.mu.Lock()
		y.group = 0
		lan.mu.Unlock()
		time.Sleep(2 * time.Minute)
		xDone, xErr := ended(x)
		yDone, yErr := ended(y)
		if xDone == yDone {
			t.Fatalf("after the heal, x ended %v (%v), y ended %v (%v): want exactly one to yield", xDone, xErr, yDone, yErr)
		}
	})
}

// TestClaimNotAConflict: what is no conflict: this node's own records from
// another of its interfaces, a goodbye, a copy with the same data.
func TestClaimNotAConflict(t *testing.T) {
	set, err := (&MDNS{}).settings()
	if err != nil {
		t.Fatal(err)
	}
	self := Self{Cluster: "c", ID: "a", Port: 7000}
	var ifaces []*iface
	for i, addr := range []string{"10.0.0.1", "10.1.0.1"} {
		a := netip.MustParseAddr(addr)
		ifc := &iface{index: i + 1, name: fmt.Sprint("eth", i), prefixes: []netip.Prefix{netip.PrefixFrom(a, 16)}}
		if ok, err := ifc.build(set, self, 7000, newNames("c", "a"), encodeTXT("c", "a"), nil); !ok || err != nil {
			t.Fatalf("build: %v %v", ok, err)
		}
		ifaces = append(ifaces, ifc)
	}
	e, err := newEngine(set, self, ifaces, nil, nil, func(Event) {})
	if err != nil {
		t.Fatal(err)
	}
	other := ifaces[1].rs.instanceRecords()
	if keys := e.conflicts(other, false); len(keys) != 0 {
		t.Errorf("own records of another interface conflict: %v", keys)
	}
	twin := ifaces[1].rs.instanceRecords()
	twin[0].(*dns.SRV).Port = 7001
	if keys := e.conflicts(twin, false); len(keys) != 1 {
		t.Errorf("a twin's SRV with another port: conflicts %v, want one", keys)
	}
	for _, rr := range twin {
		rr.Header().Ttl = 0
	}
	if keys := e.conflicts(twin, false); len(keys) != 0 {
		t.Errorf("a goodbye conflicts: %v", keys)
	}
	if keys := e.conflicts(twin, true); len(keys) != 1 {
		t.Errorf("a probe's proposal (TTL 0 allowed) conflicts %v, want one", keys)
	}
}

// TestTolerantParsing: a record miekg/dns cannot decode (an NSEC whose
// bitmap it refuses, as python-zeroconf's can be) is skipped; the service
// beside it is still seen.
func TestTolerantParsing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a := quietNode(t)
		rs, err := newRecordSet(newNames("c", "other"), encodeTXT("c", "other"), 7100, []netip.Addr{peerMDNS.Addr()}, 120)
		if err != nil {
			t.Fatal(err)
		}
		m := rs.announcement()
		// An NSEC at the front of the answers, its bitmap a window of
		// length 0, which miekg/dns rejects; then a record cut short.
		nsec := &dns.NSEC{Hdr: dns.RR_Header{Name: "x.local.", Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: 120}, NextDomain: "x.local.", TypeBitMap: []uint16{dns.TypeA}}
		m.Answer = append([]dns.RR{nsec}, m.Answer...)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		// Find the NSEC's bitmap (window 0, length 1, 0x40) and make the
		// length 0.
		i := strings.Index(string(b), "\x00\x01\x40")
		if i < 0 {
			t.Fatal("no NSEC bitmap in the packet")
		}
		b[i+1] = 0
		if err := new(dns.Msg).Unpack(b); err == nil {
			t.Fatal("miekg/dns decodes the packet: the test no longer shows a bad record")
		}
		a.lan.mu.Lock()
		a.deliver(inPacket{data: b, src: peerMDNS, ifindex: 1})
		a.lan.mu.Unlock()
		synctest.Wait()
		if _, ok := peers(a.rec.snapshot())["other"]; !ok {
			t.Errorf("the service beside a bad record was not seen: %v", a.rec.snapshot())
		}
		got, skipped, err := unpackTolerant(b[:len(b)-3])
		if err != nil || skipped != 2 || len(got.Answer) != len(m.Answer)-2 {
			t.Errorf("a packet cut inside its last record: %d answers, %d skipped, %v; want the %d good records before it, the NSEC and the cut one skipped",
				len(got.Answer), skipped, err, len(m.Answer)-2)
		}
	})
}

// TestProbeFits: the probe of a node with the longest names and the most
// addresses fits an mDNS packet.
func TestProbeFits(t *testing.T) {
	cluster := strings.Repeat("\xff", maxClusterInTXT)
	id := strings.Repeat("\x00", MaxIDLen)
	var many []netip.Addr
	for i := range maxAddrsPerInstance {
		many = append(many, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}))
	}
	rs, err := newRecordSet(newNames(cluster, id), encodeTXT(cluster, id), 7, many, 120)
	if err != nil {
		t.Fatal(err)
	}
	b, err := probeQuery(rs)
	if err != nil || len(b) > maxPacketSize {
		t.Fatalf("probe: %d bytes, %v; want ≤ %d", len(b), err, maxPacketSize)
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil || !holds(m.Ns, rs.srv) || !holds(m.Ns, rs.txt) {
		t.Errorf("probe %v (%v): want SRV and TXT in the Authority section", m, err)
	}
}
