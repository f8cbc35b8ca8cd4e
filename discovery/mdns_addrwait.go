package discovery

import (
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// A responder may leave a service's address records out of its answer or
// announcement: avahi does for a record it multicast within the last
// second, and always for a service of another host (avahi-publish
// --host), whose addresses only that host's responder holds. RFC 6763
// §12 asks a client to ask for what it needs then: a sighting with a
// port but no address waits for addrWaitFor while the node asks for its
// SRV target's A and AAAA records, and an answer holding them completes
// it.
const (
	maxAddrWaits = 64
	addrWaitFor  = 3 * time.Second
	addrQueryGap = time.Second // the least time between two queries for one target
	// All address queries together: at most addrQueryBurst at once and
	// addrQueryRate a second, so that packets naming many hosts without
	// addresses cannot make a node multicast a query for each.
	addrQueryBurst = 4
	addrQueryRate  = 2
)

// addrWait is a sighting waiting for its addresses.
type addrWait struct {
	s     sighting
	ifc   *iface
	until time.Time
	asked time.Time
}

// awaitAddrs keeps s, seen on ifc without addresses, and asks for the
// addresses of its SRV target, at most once per addrQueryGap.
func (e *engine) awaitAddrs(s sighting, ifc *iface, now time.Time) {
	e.dropExpiredWaits(now)
	key := dns.CanonicalName(s.target)
	w := e.addrWaits[key]
	if w == nil {
		if len(e.addrWaits) >= maxAddrWaits {
			return
		}
		w = &addrWait{}
		e.addrWaits[key] = w
	}
	w.s, w.ifc, w.until = s, ifc, now.Add(addrWaitFor)
	if now.Sub(w.asked) < addrQueryGap {
		return
	}
	if !e.addrQueries.take(now, addrQueryBurst, addrQueryRate) {
		e.log.Debug("mdns: address query rate limit reached", "name", s.target)
		return
	}
	w.asked = now
	q := &dns.Msg{Compress: true, Question: []dns.Question{
		{Name: s.target, Qtype: dns.TypeA, Qclass: dns.ClassINET},
		{Name: s.target, Qtype: dns.TypeAAAA, Qclass: dns.ClassINET},
	}}
	b, err := q.Pack()
	if err != nil {
		e.log.Debug("mdns: cannot build address query", "name", s.target, "err", err)
		return
	}
	e.sendQuery(b, false)
}

// completeAddrs completes, with the address records of m (a response
// from src on ifc), the sightings of ifc waiting for them.
func (e *engine) completeAddrs(m *dns.Msg, ifc *iface, src netip.Addr, now time.Time) {
	if len(e.addrWaits) == 0 {
		return
	}
	e.dropExpiredWaits(now)
	rrs := append(append([]dns.RR(nil), m.Answer...), m.Extra...)
	if len(rrs) > maxRecordsPerPacket {
		rrs = rrs[:maxRecordsPerPacket]
	}
	var done []string
	for _, rr := range rrs {
		key := dns.CanonicalName(rr.Header().Name)
		w := e.addrWaits[key]
		if w == nil || w.ifc != ifc || rr.Header().Ttl == 0 || rr.Header().Class&^cacheFlush != dns.ClassINET {
			continue
		}
		if a, ok := addrOf(rr); ok && len(w.s.addrs) < maxAddrsPerInstance {
			if len(w.s.addrs) == 0 {
				done = append(done, key)
			}
			w.s.addrs = append(w.s.addrs, a)
		}
	}
	for _, key := range done {
		w := e.addrWaits[key]
		delete(e.addrWaits, key)
		e.observe(w.s, w.ifc, src, now)
	}
}

func (e *engine) dropExpiredWaits(now time.Time) {
	for key, w := range e.addrWaits {
		if now.After(w.until) {
			delete(e.addrWaits, key)
		}
	}
}
