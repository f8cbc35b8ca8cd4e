// Package srvzone is a DNS server for tests of discovery by DNS: one SRV
// name, whose targets it serves with their A records in the additional
// section, as Consul and Kubernetes do.
//
//	z := srvzone.Start(t, "127.0.0.1:0", "_tallship._tcp.mesh.test")
//	z.SetAt("a.mesh.test", netip.MustParseAddrPort("10.0.0.2:7000"))
//	cfg.Discovery = []discovery.Discoverer{&discovery.DNS{Name: "_tallship._tcp.mesh.test", Server: z.Addr()}}
package srvzone

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is a DNS server that answers SRV queries for one name. Its
// methods may be called from any goroutine.
type Zone struct {
	addr string
	name string

	mu      sync.Mutex
	targets map[string]target // by host name
	asked   int               // SRV queries answered
	wake    chan struct{}     // closed and replaced on every answer
}

type target struct {
	port  uint16
	addrs []netip.Addr
}

// Start serves name on UDP at listen until t ends.
func Start(t testing.TB, listen, name string) *Zone {
	t.Helper()
	z := &Zone{name: dns.Fqdn(name), targets: map[string]target{}, wake: make(chan struct{})}
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

// Addr is the server's address (host:port), for discovery.DNS.Server.
func (z *Zone) Addr() string { return z.addr }

// Set makes host a target at port, with addrs in order; no addrs removes
// it.
func (z *Zone) Set(host string, port uint16, addrs ...netip.Addr) {
	z.mu.Lock()
	defer z.mu.Unlock()
	host = dns.Fqdn(host)
	if len(addrs) == 0 {
		delete(z.targets, host)
		return
	}
	z.targets[host] = target{port, addrs}
}

// SetAt makes host a target at ap.
func (z *Zone) SetAt(host string, ap netip.AddrPort) { z.Set(host, ap.Port(), ap.Addr()) }

// Asked returns how many SRV queries the zone has answered.
func (z *Zone) Asked() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.asked
}

// AwaitAsked waits up to 10 s until the zone has answered n more SRV
// queries than it had at mark (an earlier Asked), failing t when it has
// not.
func (z *Zone) AwaitAsked(t testing.TB, n, mark int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		z.mu.Lock()
		got, wake := z.asked-mark, z.wake
		z.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-wake:
		case <-deadline.C:
			t.Fatalf("srvzone: %d queries answered within 10 s, want %d", got, n)
		}
	}
}

// ServeDNS answers, with authority, an SRV query for the zone's name with
// every target, sorted by host name, their A records in the additional
// section; an A query for a target with its addresses (discovery.DNS asks
// for them by name); anything else with an empty answer.
func (z *Zone) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	z.mu.Lock()
	defer z.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
		if tg, ok := z.targets[strings.ToLower(q.Question[0].Name)]; ok {
			for _, a := range tg.addrs {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   a.AsSlice(),
				})
			}
		}
	}
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeSRV && strings.EqualFold(q.Question[0].Name, z.name) {
		z.asked++
		close(z.wake)
		z.wake = make(chan struct{})
		for _, host := range slices.Sorted(maps.Keys(z.targets)) {
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
