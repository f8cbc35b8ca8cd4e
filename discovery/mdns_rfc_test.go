package discovery

import (
	"fmt"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/miekg/dns"
)

// The responder's and querier's RFC 6762 rules, one crafted packet each,
// on the simulated LAN in virtual time (see mdns_engine_test.go).

var (
	peerMDNS   = netip.MustParseAddrPort("10.0.9.9:5353")  // a compliant querier on the link
	peerLegacy = netip.MustParseAddrPort("10.0.9.9:40000") // a legacy one (dig, hashicorp/mdns)
	offLink    = netip.MustParseAddrPort("192.0.2.1:5353") // not on the link
)

// quietNode starts node "a" of cluster "c" and waits until its startup
// announcements and first queries are over.
func quietNode(t *testing.T) (*simLAN, *simNode) {
	lan := newSimLAN(t)
	a := lan.start("c", "a", &MDNS{})
	time.Sleep(5 * time.Second)
	return lan, a
}

// inject hands a packet from src to n.
func (n *simNode) inject(t *testing.T, src netip.AddrPort, m *dns.Msg) {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	n.lan.mu.Lock()
	defer n.lan.mu.Unlock()
	n.deliver(inPacket{data: b, src: src, ifindex: 1})
}

// answersSince returns the answers node n sent since from, unpacked, with
// where they went (invalid: multicast).
func (lan *simLAN) answersSince(t *testing.T, n *simNode, from time.Time) (msgs []*dns.Msg, to []netip.AddrPort) {
	t.Helper()
	lan.mu.Lock()
	defer lan.mu.Unlock()
	for _, p := range lan.log {
		if p.from != n.idx || p.kind != "answer" || p.at.Before(from) {
			continue
		}
		m := new(dns.Msg)
		if err := m.Unpack(p.data); err != nil {
			t.Fatal(err)
		}
		msgs, to = append(msgs, m), append(to, p.to)
	}
	return msgs, to
}

func ptrQuestion(name string, class uint16) *dns.Msg {
	return &dns.Msg{MsgHdr: dns.MsgHdr{Id: 0x4242}, Question: []dns.Question{{Name: name, Qtype: dns.TypePTR, Qclass: class}}}
}

func TestResponderRFC6762(t *testing.T) {
	browse := serviceName("c")
	ours := func(a *simNode) dns.RR { return dns.Copy(a.iface.rs.ptr) }
	withKnown := func(q *dns.Msg, ttl uint32, rrs ...dns.RR) *dns.Msg {
		for _, rr := range rrs {
			rr.Header().Ttl = ttl
			q.Answer = append(q.Answer, rr)
		}
		return q
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, a *simNode)
		// want: the answers sent, "multicast" or "unicast", in order.
		want  []string
		check func(t *testing.T, a *simNode, m *dns.Msg)
	}{
		{name: "QM question: multicast, id 0",
			run:  func(t *testing.T, a *simNode) { a.inject(t, peerMDNS, ptrQuestion(browse, dns.ClassINET)) },
			want: []string{"multicast"},
			check: func(t *testing.T, a *simNode, m *dns.Msg) {
				if m.Id != 0 || len(m.Answer) != 1 || !sameRecord(m.Answer[0], ours(a)) || len(m.Extra) < 3 {
					t.Errorf("answer %v, want id 0, our PTR, SRV/TXT/addresses as additional records", m)
				}
			}},
		{name: "QU question, record multicast recently: unicast",
			run:  func(t *testing.T, a *simNode) { a.inject(t, peerMDNS, ptrQuestion(browse, dns.ClassINET|qu)) },
			want: []string{"unicast"}},
		{name: "legacy querier: unicast with its id and question, TTL ≤ 10, no cache-flush",
			run:  func(t *testing.T, a *simNode) { a.inject(t, peerLegacy, ptrQuestion(browse, dns.ClassINET)) },
			want: []string{"unicast"},
			check: func(t *testing.T, a *simNode, m *dns.Msg) {
				if m.Id != 0x4242 || len(m.Question) != 1 || m.Question[0].Name != browse {
					t.Errorf("legacy answer %v, want the query's id and question", m)
				}
				for _, rr := range append(m.Answer, m.Extra...) {
					if rr.Header().Ttl > 10 || rr.Header().Class&cacheFlush != 0 {
						t.Errorf("legacy answer holds %v", rr)
					}
				}
			}},
		{name: "base type browse (RFC 6763 §7.1)",
			run:  func(t *testing.T, a *simNode) { a.inject(t, peerMDNS, ptrQuestion(serviceType, dns.ClassINET)) },
			want: []string{"multicast"},
			check: func(t *testing.T, a *simNode, m *dns.Msg) {
				if len(m.Answer) != 1 || m.Answer[0].(*dns.PTR).Ptr != a.iface.rs.names.instance {
					t.Errorf("answer %v, want the PTR _tallship._tcp → our instance", m)
				}
			}},
		{name: "service type enumeration (RFC 6763 §9)",
			run:  func(t *testing.T, a *simNode) { a.inject(t, peerMDNS, ptrQuestion(servicesName, dns.ClassINET)) },
			want: []string{"multicast"},
			check: func(t *testing.T, a *simNode, m *dns.Msg) {
				if len(m.Answer) != 1 || m.Answer[0].(*dns.PTR).Ptr != serviceType {
					t.Errorf("answer %v, want the PTR → _tallship._tcp.local.", m)
				}
			}},
		{name: "known answer with its full TTL: not answered (§7.1)",
			run: func(t *testing.T, a *simNode) {
				a.inject(t, peerMDNS, withKnown(ptrQuestion(browse, dns.ClassINET), 120, ours(a)))
			}},
		{name: "known answer with under half its TTL: answered",
			run: func(t *testing.T, a *simNode) {
				a.inject(t, peerMDNS, withKnown(ptrQuestion(browse, dns.ClassINET), 50, ours(a)))
			},
			want: []string{"multicast"}},
		{name: "truncated query, known answer in its continuation: not answered (§7.2)",
			run: func(t *testing.T, a *simNode) {
				q := ptrQuestion(browse, dns.ClassINET)
				q.Truncated = true
				a.inject(t, peerMDNS, q)
				time.Sleep(100 * time.Millisecond)
				a.inject(t, peerMDNS, withKnown(&dns.Msg{MsgHdr: dns.MsgHdr{Id: 0}}, 120, ours(a)))
			}},
		{name: "truncated query without continuation: answered after 400–500 ms",
			run: func(t *testing.T, a *simNode) {
				q := ptrQuestion(browse, dns.ClassINET)
				q.Truncated = true
				a.inject(t, peerMDNS, q)
			},
			want: []string{"multicast"}},
		{name: "query from off the link: ignored (§11)",
			run: func(t *testing.T, a *simNode) { a.inject(t, offLink, ptrQuestion(browse, dns.ClassINET)) }},
		{name: "1000 QM queries in a second: one multicast answer a second per record (§6)",
			run: func(t *testing.T, a *simNode) {
				for range 1000 {
					a.inject(t, peerMDNS, ptrQuestion(browse, dns.ClassINET))
					time.Sleep(time.Millisecond)
				}
			},
			want: []string{"multicast"}}, // the next would be due 1 s after the first
		{name: "question for a type the name lacks: NSEC (§6.1)",
			run: func(t *testing.T, a *simNode) {
				q := &dns.Msg{Question: []dns.Question{{Name: a.iface.rs.names.host, Qtype: dns.TypeAAAA, Qclass: dns.ClassINET}}}
				a.inject(t, peerMDNS, q)
			},
			want: []string{"multicast"},
			check: func(t *testing.T, a *simNode, m *dns.Msg) {
				nsec, ok := m.Answer[0].(*dns.NSEC)
				if len(m.Answer) != 1 || !ok || nsec.NextDomain != a.iface.rs.names.host || fmt.Sprint(nsec.TypeBitMap) != fmt.Sprint([]uint16{dns.TypeA}) {
					t.Errorf("answer %v, want an NSEC of the host name saying it has A only", m)
				}
			}},
		{name: "another responder's answer first: not sent again (§7.4)",
			run: func(t *testing.T, a *simNode) {
				a.inject(t, peerMDNS, ptrQuestion(servicesName, dns.ClassINET))
				resp := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true}, Answer: []dns.RR{dns.Copy(a.iface.rs.enum)}}
				a.inject(t, peerMDNS, resp)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lan, a := quietNode(t)
				from := time.Now()
				tc.run(t, a)
				time.Sleep(time.Second)
				msgs, to := lan.answersSince(t, a, from)
				var got []string
				for _, dst := range to {
					if dst.IsValid() {
						got = append(got, "unicast")
						if dst != peerMDNS && dst != peerLegacy {
							t.Errorf("unicast answer to %v", dst)
						}
					} else {
						got = append(got, "multicast")
					}
				}
				if len(got) != len(tc.want) {
					t.Fatalf("answers sent: %v, want %v", got, tc.want)
				}
				for i := range got {
					if got[i] != tc.want[i] {
						t.Fatalf("answers sent: %v, want %v", got, tc.want)
					}
				}
				if tc.check != nil && len(msgs) > 0 {
					tc.check(t, a, msgs[0])
				}
			})
		})
	}
}

// TestLegacyBurstIsBounded: a flood of unicast-answered queries (spoofed
// sources, say) draws at most the unicast budget, not an answer each.
func TestLegacyBurstIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lan, a := quietNode(t)
		from := time.Now()
		for range 1000 {
			a.inject(t, peerLegacy, ptrQuestion(serviceName("c"), dns.ClassINET))
		}
		time.Sleep(time.Second)
		msgs, _ := lan.answersSince(t, a, from)
		if len(msgs) > 10 {
			t.Errorf("1000 legacy queries drew %d answers, want ≤ 10 (a 1000-query burst costs at most 10 answers per record)", len(msgs))
		}
		t.Logf("1000 legacy queries in a burst drew %d answers", len(msgs))
	})
}

// TestResponseFromOtherPortIgnored: a response not from port 5353 is not
// mDNS (§6): a node never learns a peer, so never dials, from one.
func TestResponseFromOtherPortIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a := quietNode(t)
		rs, err := newRecordSet(newNames("c", "spoof"), encodeTXT("c", "spoof"), 9, []netip.Addr{netip.MustParseAddr("10.0.9.9")}, 120)
		if err != nil {
			t.Fatal(err)
		}
		a.inject(t, peerLegacy, rs.announcement())
		synctest.Wait()
		if _, ok := peers(a.rec.snapshot())["spoof"]; ok {
			t.Fatal("a node reported from a response sent from port 40000")
		}
		a.inject(t, peerMDNS, rs.announcement())
		synctest.Wait()
		if _, ok := peers(a.rec.snapshot())["spoof"]; !ok {
			t.Fatal("the same announcement from port 5353 was not reported")
		}
	})
}

// queriesOf returns the browse queries node n sent in [from, to), unpacked,
// with the port they went from (a one-shot query's is simQueryPort).
func (lan *simLAN) queriesOf(t *testing.T, n *simNode, from, to time.Time) (msgs []*dns.Msg, at []time.Time) {
	t.Helper()
	lan.mu.Lock()
	defer lan.mu.Unlock()
	for _, p := range lan.log {
		if p.from != n.idx || p.kind != "query" || p.at.Before(from) || !p.at.Before(to) {
			continue
		}
		m := new(dns.Msg)
		if err := m.Unpack(p.data); err != nil {
			t.Fatal(err)
		}
		if len(m.Question) == 1 && m.Question[0].Qtype == dns.TypePTR {
			msgs, at = append(msgs, m), append(at, p.at)
		}
	}
	return msgs, at
}

// TestQuerierRFC6762: the querier's rules, as the packets show them.
func TestQuerierRFC6762(t *testing.T) {
	browse := serviceName("c")
	t.Run("first query: 20–120 ms after start, QU bit (§5.2, §5.4)", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			lan := newSimLAN(t)
			start := time.Now()
			a := lan.start("c", "a", &MDNS{})
			time.Sleep(time.Second)
			qs, at := lan.queriesOf(t, a, start, time.Now())
			if len(qs) == 0 {
				t.Fatal("no query in the first second")
			}
			if d := at[0].Sub(start); d < firstQueryLo || d >= firstQueryHi {
				t.Errorf("first query after %v, want 20–120 ms", d)
			}
			if q := qs[0].Question[0]; q.Name != browse || q.Qclass != dns.ClassINET|qu {
				t.Errorf("first query asks %v, want the cluster's PTR with the QU bit", q)
			}
		})
	})
	t.Run("later queries list the answers known, QM (§7.1)", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			lan := newSimLAN(t)
			a := lan.start("c", "a", &MDNS{})
			b := lan.start("c", "b", &MDNS{})
			time.Sleep(5 * time.Second)
			from := time.Now()
			time.Sleep(20 * time.Second)
			qs, _ := lan.queriesOf(t, a, from, time.Now())
			if len(qs) == 0 {
				t.Fatal("no query in 20 s")
			}
			for _, q := range qs {
				if q.Question[0].Qclass != dns.ClassINET {
					t.Errorf("a later query asks %v, want QM", q.Question[0])
				}
				if !holds(q.Answer, b.iface.rs.ptr) {
					t.Errorf("a's query %v does not list b's PTR as a known answer", q)
				}
			}
		})
	})
	t.Run("another querier's same question stands for ours (§7.3)", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			lan := newSimLAN(t)
			a := lan.start("c", "a", &MDNS{})
			b := lan.start("c", "b", &MDNS{})
			time.Sleep(5 * time.Second)
			from := time.Now()
			// A peer asks a's question, listing every answer a knows,
			// every half second for a minute.
			for range 120 {
				q := ptrQuestion(browse, dns.ClassINET)
				q.Id = 0
				q.Answer = []dns.RR{dns.Copy(b.iface.rs.ptr)}
				a.inject(t, peerMDNS, q)
				time.Sleep(500 * time.Millisecond)
			}
			qs, at := lan.queriesOf(t, a, from.Add(5*time.Second), time.Now())
			if len(qs) != 0 {
				t.Errorf("a sent %d browse queries (at %v) while another querier asked the same every 500 ms, want none", len(qs), at)
			}
			// Without it, a asks at its own pace.
			from = time.Now()
			time.Sleep(time.Minute)
			if qs, _ := lan.queriesOf(t, a, from, time.Now()); len(qs) == 0 {
				t.Error("a sent no query in the minute after the other querier stopped")
			}
		})
	})
	t.Run("response from off the link: ignored (§11)", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, a := quietNode(t)
			rs, err := newRecordSet(newNames("c", "far"), encodeTXT("c", "far"), 9, []netip.Addr{offLink.Addr()}, 120)
			if err != nil {
				t.Fatal(err)
			}
			a.inject(t, offLink, rs.announcement())
			synctest.Wait()
			if _, ok := peers(a.rec.snapshot())["far"]; ok {
				t.Fatal("a node reported from a response sent from off the link")
			}
		})
	})
}
