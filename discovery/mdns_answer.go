package discovery

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// The responder, per RFC 6762:
//
//   - A query from port 5353 is a fully compliant querier's. Its questions
//     without the QU bit (QM) are answered by multicast, so that every
//     node and every other responder on the link sees the answer and no
//     unicast packet lands on the wrong one of the sockets that share
//     port 5353 on a host (§6, §5.4). QU questions are answered by
//     unicast, unless the record has not been multicast on the interface
//     for a quarter of its TTL (§5.4).
//   - A query from any other port is a legacy querier's (§6.7): answered
//     by unicast, with the query's id and questions, no cache-flush bit and
//     TTLs of at most 10 s.
//   - Known answers (§7.1): a record the query lists with at least half
//     its TTL left is not sent. A truncated query (§7.2) is held for its
//     continuation packets, 400–500 ms, and answered with all of their
//     known answers.
//   - Rate limits: a record is multicast on an interface at most once a
//     second (§6); unicast answers to one querier (address and port) at
//     most unicastBurst at once and unicastRate a second, and on an
//     interface at most ifaceBurst and ifaceRate, so that queries cannot
//     make a node a reflector; a multicast answer holding a shared record (a
//     PTR) waits 20–120 ms (§6), and one that another responder sends
//     meanwhile is not sent again (duplicate answer suppression, §7.4).
//   - Source checks (§11): queries from off the interface's link are
//     ignored.
const (
	mdnsPort      = 5353
	legacyMaxTTL  = 10 // seconds, §6.7
	multicastGap  = time.Second
	sharedDelayLo = 20 * time.Millisecond
	sharedDelayHi = 120 * time.Millisecond
	heldLo        = 400 * time.Millisecond
	heldHi        = 500 * time.Millisecond
	maxHeld       = 64 // truncated queries held at once, per engine
	maxHeldKnown  = 256
	// A legacy querier (dig, hashicorp/mdns) asks once and maybe again a
	// second later; 1000 spoofed queries draw at most unicastBurst plus
	// unicastRate a second while they are worked through (≤ 10 in all).
	unicastBurst = 4
	unicastRate  = 2 // per second
	ifaceBurst   = 200
	ifaceRate    = 100 // per second
	maxBuckets   = 4096
)

// qu is the top bit of a question's class: a unicast response is asked
// for (RFC 6762 §5.4). It is the same bit as cacheFlush in a record.
const qu = cacheFlush

// responder is the answering state of one interface and IP version.
type responder struct {
	lastMulticast map[string]time.Time // record key → when last multicast
	pending       *pendingAnswer       // the next multicast answer
	unicast       bucket               // unicast answers on the interface
	queriers      map[netip.AddrPort]*bucket
}

// bucket is a token bucket of unicast answers.
type bucket struct {
	tokens   float64
	refilled time.Time
}

// take takes a token, refilled at rate a second up to burst, if one is
// left.
func (b *bucket) take(now time.Time, burst, rate float64) bool {
	if b.refilled.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.refilled).Seconds()*rate)
	}
	b.refilled = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pendingAnswer is a multicast answer waiting for its time.
type pendingAnswer struct {
	due    time.Time
	answer []dns.RR
	extra  []dns.RR
}

// heldQuery is a truncated query waiting for its known answers (§7.2).
type heldQuery struct {
	ifc      *iface
	q        *dns.Msg
	known    []dns.RR
	due      time.Time
	fromMDNS bool
}

func (e *engine) responder(ifc *iface, v6 bool) *responder {
	r := e.responders[respKey{ifc.index, v6}]
	if r == nil {
		r = &responder{lastMulticast: map[string]time.Time{}, queriers: map[netip.AddrPort]*bucket{}}
		e.responders[respKey{ifc.index, v6}] = r
	}
	return r
}

type respKey struct {
	ifindex int
	v6      bool
}

// answer handles a query that arrived on one of our interfaces, answering
// from that interface's records only: a node never answers on an
// interface it was not told to use, nor with the records of another.
func (e *engine) answer(q *dns.Msg, p inPacket, now time.Time) {
	if e.passive {
		return // it says nothing of itself (Self.Passive)
	}
	src := netip.AddrPortFrom(p.src.Addr().Unmap(), p.src.Port())
	v6 := src.Addr().Is6()
	ifc := e.queryIface(p.ifindex, src.Addr())
	if ifc == nil || !ifc.runs(v6) {
		return
	}
	if !e.onLink(ifc, src.Addr()) {
		e.log.Debug("mdns: query from off the link ignored", "iface", ifc.name, "addr", src)
		return
	}
	fromMDNS := src.Port() == mdnsPort
	e.noteProbe(q, ifc, src, now)
	if h := e.held[src]; h != nil && len(q.Question) == 0 {
		// A continuation of a held query: more known answers.
		h.known = append(h.known, q.Answer[:min(len(q.Answer), maxHeldKnown-len(h.known))]...)
		if !q.Truncated {
			h.due = now // the last one: answer now
		}
		return
	}
	if len(q.Question) == 0 {
		return
	}
	if fromMDNS && !e.ownAddr(src.Addr()) {
		e.noteQuery(q, now)
	}
	if q.Truncated && fromMDNS {
		if len(e.held) >= maxHeld {
			return
		}
		e.held[src] = &heldQuery{ifc: ifc, q: q, known: q.Answer[:min(len(q.Answer), maxHeldKnown)],
			due: now.Add(randBetween(heldLo, heldHi)), fromMDNS: true}
		return
	}
	e.respond(ifc, src, q, q.Answer, fromMDNS, now)
}

// randBetween returns a uniformly random duration in [lo, hi).
func randBetween(lo, hi time.Duration) time.Duration { return lo + rand.N(hi-lo) }

// releaseHeld answers the held queries that are due.
func (e *engine) releaseHeld(now time.Time) {
	for src, h := range e.held {
		if !now.Before(h.due) {
			delete(e.held, src)
			e.respond(h.ifc, src, h.q, h.known, h.fromMDNS, now)
		}
	}
}

// respond answers q from src on ifc, leaving out the records known lists.
func (e *engine) respond(ifc *iface, src netip.AddrPort, q *dns.Msg, known []dns.RR, fromMDNS bool, now time.Time) {
	v6 := src.Addr().Is6()
	r := e.responder(ifc, v6)
	var multi, uni pendingAnswer
	for _, question := range q.Question {
		answer, extra := ifc.rs.answers(question)
		answer = withoutKnown(answer, known)
		if len(answer) == 0 {
			continue
		}
		extra = withoutKnown(extra, known)
		to := &multi
		if !fromMDNS || question.Qclass&qu != 0 && multicastRecently(r, answer, now) {
			to = &uni
		}
		to.answer = appendNew(to.answer, answer)
		to.extra = appendNew(to.extra, extra)
	}
	if len(uni.answer) > 0 && e.unicastAllowed(r, src, now) {
		m := &dns.Msg{
			MsgHdr:   dns.MsgHdr{Id: q.Id, Response: true, Authoritative: true},
			Compress: true,
			Answer:   uni.answer,
			Extra:    uni.extra,
		}
		if !fromMDNS {
			m.Question = legacyQuestions(q.Question)
			legacyRecords(m.Answer)
			legacyRecords(m.Extra)
		}
		e.sendPacked(outPacket{kind: sendAnswer, iface: ifc, v6: v6, to: src}, m)
	}
	if len(multi.answer) > 0 {
		e.queueMulticast(ifc, v6, r, multi, now)
	}
}

// queueMulticast adds an answer to the interface's next multicast answer,
// without the records multicast there within the last second. An answer
// holding a shared record waits 20–120 ms; one of unique records only goes
// at once (within the loop's next turn).
func (e *engine) queueMulticast(ifc *iface, v6 bool, r *responder, a pendingAnswer, now time.Time) {
	var answer []dns.RR
	shared := false
	for _, rr := range a.answer {
		if last, ok := r.lastMulticast[recordKey(rr)]; ok && now.Sub(last) < multicastGap {
			continue
		}
		answer = append(answer, rr)
		shared = shared || rr.Header().Class&cacheFlush == 0
	}
	if len(answer) == 0 {
		return
	}
	due := now
	if shared {
		due = now.Add(randBetween(sharedDelayLo, sharedDelayHi))
	}
	if r.pending == nil {
		r.pending = &pendingAnswer{due: due}
	} else if due.Before(r.pending.due) {
		r.pending.due = due
	}
	r.pending.answer = appendNew(r.pending.answer, answer)
	r.pending.extra = appendNew(r.pending.extra, a.extra)
}

// sendDue multicasts the pending answers that are due.
func (e *engine) sendDue(now time.Time) {
	for _, ifc := range e.ifaces {
		for _, v6 := range []bool{false, true} {
			r := e.responders[respKey{ifc.index, v6}]
			if r == nil || r.pending == nil || now.Before(r.pending.due) {
				continue
			}
			a := r.pending
			r.pending = nil
			for _, rr := range a.answer {
				r.lastMulticast[recordKey(rr)] = now
			}
			// Additional records the answer already holds go once.
			extra := a.extra[:0:0]
			for _, rr := range a.extra {
				if !holds(a.answer, rr) {
					extra = append(extra, rr)
				}
			}
			m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: a.answer, Extra: extra}
			e.sendPacked(outPacket{kind: sendAnswer, iface: ifc, v6: v6}, m)
		}
	}
}

// noteAnswers applies duplicate answer suppression (§7.4) to the pending
// answer of ifc: a record another responder has just multicast, with at
// least half the TTL ours has, is not sent again, and counts as multicast
// for the rate limit (a record all nodes share, the service type's PTR).
func (e *engine) noteAnswers(ifc *iface, v6 bool, m *dns.Msg, now time.Time) {
	r := e.responders[respKey{ifc.index, v6}]
	if r == nil {
		return
	}
	for _, rr := range m.Answer {
		if rr.Header().Ttl > 0 && sameRecord(rr, ifc.rs.enum) {
			r.lastMulticast[recordKey(rr)] = now
		}
	}
	if r.pending == nil {
		return
	}
	r.pending.answer = withoutKnown(r.pending.answer, m.Answer)
	if len(r.pending.answer) == 0 {
		r.pending = nil
	}
}

// sendPacked packs m, leaving out additional records that do not fit, and
// sends it as p.
func (e *engine) sendPacked(p outPacket, m *dns.Msg) {
	b, err := m.Pack()
	for err == nil && len(b) > maxPacketSize && len(m.Extra) > 0 {
		m.Extra = m.Extra[:len(m.Extra)-1]
		b, err = m.Pack()
	}
	if err != nil {
		e.log.Debug("mdns: cannot pack answer", "iface", p.iface.name, "err", err)
		return
	}
	p.data = b
	if err := e.out.send(p); err != nil {
		e.log.Debug("mdns: answer failed", "iface", p.iface.name, "addr", p.to, "err", err)
	}
}

// unicastAllowed takes one unicast answer to src from r's buckets, if
// both have one left.
func (e *engine) unicastAllowed(r *responder, src netip.AddrPort, now time.Time) bool {
	b := r.queriers[src]
	if b == nil {
		if len(r.queriers) >= maxBuckets {
			clear(r.queriers) // a flood of sources: the interface's bucket still holds
		}
		b = &bucket{}
		r.queriers[src] = b
	}
	if !b.take(now, unicastBurst, unicastRate) || !r.unicast.take(now, ifaceBurst, ifaceRate) {
		e.log.Debug("mdns: unicast answer rate limit reached; query not answered", "addr", src)
		return false
	}
	return true
}

// multicastRecently reports whether every record of rrs was multicast on
// r's interface within a quarter of its TTL: a QU question then gets its
// answer by unicast (§5.4).
func multicastRecently(r *responder, rrs []dns.RR, now time.Time) bool {
	for _, rr := range rrs {
		last, ok := r.lastMulticast[recordKey(rr)]
		if !ok || now.Sub(last) > time.Duration(rr.Header().Ttl)*time.Second/4 {
			return false
		}
	}
	return true
}

// legacyQuestions copies a legacy query's questions for its answer, with
// the QU bit cleared.
func legacyQuestions(qs []dns.Question) []dns.Question {
	out := make([]dns.Question, len(qs))
	for i, q := range qs {
		q.Qclass &^= qu
		out[i] = q
	}
	return out
}

// legacyRecords makes records fit for a legacy querier (§6.7): no
// cache-flush bit, TTL at most 10 s.
func legacyRecords(rrs []dns.RR) {
	for _, rr := range rrs {
		h := rr.Header()
		h.Class &^= cacheFlush
		h.Ttl = min(h.Ttl, legacyMaxTTL)
	}
}

// withoutKnown returns the records of rrs that known does not list with at
// least half their TTL left (§7.1).
func withoutKnown(rrs, known []dns.RR) []dns.RR {
	if len(known) == 0 {
		return rrs
	}
	out := rrs[:0:0]
	for _, rr := range rrs {
		suppressed := false
		for _, k := range known {
			if k.Header().Ttl >= rr.Header().Ttl/2 && sameRecord(k, rr) {
				suppressed = true
				break
			}
		}
		if !suppressed {
			out = append(out, rr)
		}
	}
	return out
}

// sameRecord reports whether a and b are the same record: name, type,
// class (without the cache-flush bit) and data, whatever their TTLs. It
// agrees with comparing their recordKeys, without building them for the
// types mDNS browsing carries: at a hundred nodes, every known-answer list
// is checked against every answer, on every node.
func sameRecord(a, b dns.RR) bool {
	ha, hb := a.Header(), b.Header()
	if ha.Rrtype != hb.Rrtype || ha.Class&^cacheFlush != hb.Class&^cacheFlush || !strings.EqualFold(ha.Name, hb.Name) {
		return false
	}
	switch a := a.(type) {
	case *dns.PTR:
		b, ok := b.(*dns.PTR)
		return ok && strings.EqualFold(a.Ptr, b.Ptr)
	case *dns.SRV:
		b, ok := b.(*dns.SRV)
		return ok && a.Priority == b.Priority && a.Weight == b.Weight && a.Port == b.Port && strings.EqualFold(a.Target, b.Target)
	case *dns.TXT:
		b, ok := b.(*dns.TXT)
		return ok && slices.Equal(a.Txt, b.Txt)
	case *dns.A:
		b, ok := b.(*dns.A)
		return ok && a.A.Equal(b.A)
	case *dns.AAAA:
		b, ok := b.(*dns.AAAA)
		return ok && a.AAAA.Equal(b.AAAA)
	}
	return recordKey(a) == recordKey(b)
}

// recordKey names a record by its name, type, class and data.
func recordKey(rr dns.RR) string {
	c := dns.Copy(rr)
	h := c.Header()
	h.Ttl = 0
	h.Class &^= cacheFlush
	h.Name = strings.ToLower(h.Name)
	if ptr, ok := c.(*dns.PTR); ok {
		ptr.Ptr = strings.ToLower(ptr.Ptr)
	}
	if srv, ok := c.(*dns.SRV); ok {
		srv.Target = strings.ToLower(srv.Target)
	}
	return c.String()
}

func holds(rrs []dns.RR, rr dns.RR) bool {
	for _, have := range rrs {
		if sameRecord(have, rr) {
			return true
		}
	}
	return false
}

// queryIface returns the interface a query belongs to: the one it arrived
// on, when MDNS runs there. Where the platform does not tell the arrival
// interface (ifindex 0) and MDNS runs on several, it is the one whose
// subnet holds the querier's address.
func (e *engine) queryIface(ifindex int, src netip.Addr) *iface {
	if ifindex != 0 {
		for _, ifc := range e.ifaces {
			if ifc.index == ifindex {
				return ifc
			}
		}
		return nil
	}
	src = src.WithZone("")
	for _, ifc := range e.ifaces {
		for _, p := range ifc.prefixes {
			if !ifc.loopback && p.Contains(src) {
				return ifc
			}
		}
	}
	return nil
}

// onLink reports whether a packet from src may belong to ifc's link
// (§11): anything on loopback (only this host sends there), else src is
// IPv6 link-local, on one of ifc's subnets, or an address of ours.
func (e *engine) onLink(ifc *iface, src netip.Addr) bool {
	src = src.WithZone("")
	switch {
	case ifc.loopback:
		return true
	case src.IsLoopback():
		return false
	case src.Is6() && src.IsLinkLocalUnicast():
		return true
	case e.ownAddr(src):
		return true
	}
	for _, p := range ifc.prefixes {
		if p.Masked().Contains(src) {
			return true
		}
	}
	return false
}

// ownAddr reports whether a is an address of one of our interfaces.
func (e *engine) ownAddr(a netip.Addr) bool {
	a = a.WithZone("")
	for _, ifc := range e.ifaces {
		for _, p := range ifc.prefixes {
			if p.Addr().WithZone("") == a {
				return true
			}
		}
	}
	return false
}

// runs reports whether mDNS runs over IPv6 (v6) or IPv4 on ifc.
func (ifc *iface) runs(v6 bool) bool { return (v6 && ifc.v6) || (!v6 && ifc.v4) }

// appendNew appends the records of rrs that out does not hold yet, so that
// an answer to several questions holds each record once.
func appendNew(out, rrs []dns.RR) []dns.RR {
	for _, rr := range rrs {
		if !holds(out, rr) {
			out = append(out, rr)
		}
	}
	return out
}

// answers returns the records that answer one question, and the
// additional records that go with them (RFC 6763 §12): a browse of the
// cluster subtype or of the base type gets the node's PTR, with SRV, TXT
// and addresses as additional records, so that one answer is enough to
// dial; service type enumeration gets the base type.
func (rs *recordSet) answers(q dns.Question) (answer, extra []dns.RR) {
	if class := q.Qclass &^ qu; class != dns.ClassINET && class != dns.ClassANY {
		return nil, nil
	}
	ptr := q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY
	switch {
	case sameName(q.Name, rs.names.service) && ptr:
		return []dns.RR{dns.Copy(rs.ptr)}, rs.instanceRecords()
	case sameName(q.Name, serviceType) && ptr:
		return []dns.RR{dns.Copy(rs.base)}, rs.instanceRecords()
	case sameName(q.Name, servicesName) && ptr:
		return []dns.RR{dns.Copy(rs.enum)}, nil
	case sameName(q.Name, rs.names.instance):
		switch q.Qtype {
		case dns.TypeSRV:
			return []dns.RR{dns.Copy(rs.srv)}, rs.addrRecords(dns.TypeANY)
		case dns.TypeTXT:
			return []dns.RR{dns.Copy(rs.txt)}, nil
		case dns.TypeANY:
			// A refresh (§5.2): with the PTR, so that the asker's
			// sighting is whole again.
			return []dns.RR{dns.Copy(rs.srv), dns.Copy(rs.txt)}, append([]dns.RR{dns.Copy(rs.ptr)}, rs.addrRecords(dns.TypeANY)...)
		}
		return []dns.RR{rs.nsec(rs.names.instance, dns.TypeTXT, dns.TypeSRV)}, nil
	case sameName(q.Name, rs.names.host):
		addrs := rs.addrRecords(q.Qtype)
		switch q.Qtype {
		case dns.TypeANY:
			return addrs, nil
		case dns.TypeA, dns.TypeAAAA:
			if len(addrs) > 0 {
				return addrs, nil
			}
		}
		var types []uint16
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			if len(rs.addrRecords(t)) > 0 {
				types = append(types, t)
			}
		}
		return []dns.RR{rs.nsec(rs.names.host, types...)}, nil
	}
	return nil, nil
}

// nsec is the negative answer for a name of ours that has only the given
// types (RFC 6762 §6.1): an NSEC record naming itself, its bitmap those
// types, so that a querier for another type (AAAA of a node with IPv4
// only, say) learns at once that there is none.
func (rs *recordSet) nsec(name string, types ...uint16) dns.RR {
	return &dns.NSEC{
		Hdr:        dns.RR_Header{Name: name, Rrtype: dns.TypeNSEC, Class: dns.ClassINET | cacheFlush, Ttl: rs.srv.Header().Ttl},
		NextDomain: name,
		TypeBitMap: types,
	}
}
