package discovery

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/miekg/dns"
)

// Claiming the node's id on the link: probing and conflict resolution
// (RFC 6762 §8, §9) for its unique records, the SRV and TXT of its
// instance name and the addresses of its host name, both named after the
// id. Two live nodes with one id publish the same names with other data
// (another port, another address); the one that comes later finds out by
// mDNS alone and stops, with an error wrapping ErrIDConflict.
//
// Joining stays fast: a node announces at once, as before, and probes
// alongside (§8.1 asks to probe first, 750 ms that a random UUID, which
// cannot collide, should not wait). A probe is a query for the node's
// names, QU bit set, with the records it means to hold in the Authority
// section; it goes three times, 250 ms apart, the first before the first
// announcement. The rules:
//
//   - While probing, every conflicting response is noted. At the end of
//     the round the node yields (Run returns ErrIDConflict, with no
//     goodbye: the names are the other node's) when a conflicting
//     response came from a node that did not probe too (a node that holds
//     the id already), or when a node probing at the same time won the
//     tie-break of §8.2 (the lexicographically later records win).
//     Otherwise the id is the node's: Claimed is reported.
//   - Once claimed, a probe or an announcement for its names with other
//     data, from a node that is probing (a newcomer), is defended: the
//     node multicasts its records at once (at most every 250 ms), which
//     makes the newcomer yield. A conflicting response from a node that
//     is not probing (two claimed twins meeting, after a partition heals
//     or a frozen process wakes) sends the node back to probing (§9):
//     both probe, the tie-break picks one, and the other yields.
//
// Records are compared with what this node publishes on every interface,
// so its own packets, looped back or heard on another interface, are
// never a conflict; a goodbye (TTL 0) never is; neither is a copy with
// the same data (a restarted node on the same port).
const (
	probeCount = 3
	probeGap   = 250 * time.Millisecond
	// defendGap: a defense is multicast at most this often per interface
	// (§6 allows answers to probes at 250 ms).
	defendGap = 250 * time.Millisecond
	// proberMemory: how long a probe's records mark their sender as a
	// node that is probing.
	proberMemory = 2 * time.Second
	// maxProbers bounds the records remembered from other nodes' probes.
	maxProbers = 64
)

// claimState is where the engine stands in claiming its id.
type claimState struct {
	probing    bool
	roundStart time.Time
	sent       int       // probes sent this round
	next       time.Time // the next probe, or the end of the round
	claimed    bool      // Claimed has been reported
	beatenBy   netip.AddrPort
	heard      []rivalResponse      // conflicting responses this round
	probers    map[string]time.Time // conflicting records heard in probes, when
	defended   map[respKey]time.Time
	warned     time.Time // the last warning of a defense
	lost       error
}

// rivalResponse is a conflicting response heard while probing.
type rivalResponse struct {
	keys []string
	from netip.AddrPort
	port uint16 // the port its SRV names, if it holds one
}

// String names the rival: its address, and its port when known.
func (r rivalResponse) String() string {
	if r.port == 0 {
		return r.from.Addr().String()
	}
	return fmt.Sprintf("%v (port %d)", r.from.Addr(), r.port)
}

// startRound starts a round of probes at now.
func (e *engine) startRound(now time.Time) {
	c := &e.claim
	c.probing, c.roundStart, c.sent, c.next = true, now, 0, now
	c.beatenBy, c.heard = netip.AddrPort{}, nil
}

// probeDue sends the next probe of the round, or ends the round, when due.
func (e *engine) probeDue(now time.Time) {
	c := &e.claim
	if !c.probing || now.Before(c.next) {
		return
	}
	if c.sent < probeCount {
		for _, ifc := range e.ifaces {
			b, err := probeQuery(ifc.rs)
			if err != nil {
				e.log.Debug("mdns: cannot pack probe", "iface", ifc.name, "err", err)
				continue
			}
			for _, v6 := range []bool{false, true} {
				if ifc.runs(v6) {
					if err := e.out.send(outPacket{kind: sendProbe, iface: ifc, v6: v6, data: b}); err != nil {
						e.log.Debug("mdns: probe failed", "iface", ifc.name, "err", err)
					}
				}
			}
		}
		c.sent++
		c.next = now.Add(probeGap)
		return
	}
	c.probing = false
	if c.beatenBy.IsValid() {
		e.yield(fmt.Errorf("%w: %q is claimed at the same time by the node at %v, which wins the tie-break (RFC 6762 §8.2)",
			ErrIDConflict, e.id, c.beatenBy.Addr()))
		return
	}
	for _, h := range c.heard {
		if !e.allProbing(h.keys, c.roundStart.Add(-proberMemory)) {
			e.yield(fmt.Errorf("%w: %q is held by the node at %v", ErrIDConflict, e.id, h))
			return
		}
	}
	if !c.claimed {
		c.claimed = true
		e.log.Debug("mdns: id claimed", "node", e.id)
		e.report(Event{Kind: Claimed, Source: "mdns"})
	}
}

// yield gives the id up: run returns err.
func (e *engine) yield(err error) {
	e.log.Debug("mdns: yielding the id", "err", err)
	e.claim.lost = err
}

// probeQuery packs a probe for rs's unique names (§8.1): both names,
// type ANY, QU bit set, and the records proposed in the Authority section,
// the last addresses left out if they would not fit maxPacketSize.
func probeQuery(rs *recordSet) ([]byte, error) {
	m := &dns.Msg{Compress: true, Question: []dns.Question{
		{Name: rs.names.instance, Qtype: dns.TypeANY, Qclass: dns.ClassINET | qu},
		{Name: rs.names.host, Qtype: dns.TypeANY, Qclass: dns.ClassINET | qu},
	}}
	m.Ns = rs.instanceRecords()
	for {
		b, err := m.Pack()
		if err != nil || len(b) <= maxPacketSize || len(m.Ns) <= 2 {
			return b, err
		}
		m.Ns = m.Ns[:len(m.Ns)-1]
	}
}

// conflicts returns the keys of the records of rrs that conflict with
// this node's: our names, a type we publish there, other data, a TTL
// above zero unless probe (a probe's records are proposals).
func (e *engine) conflicts(rrs []dns.RR, probe bool) []string {
	var keys []string
	for _, rr := range rrs {
		h := rr.Header()
		if h.Class&^cacheFlush != dns.ClassINET || (h.Ttl == 0 && !probe) {
			continue
		}
		switch {
		case sameName(h.Name, e.names.instance) && (h.Rrtype == dns.TypeSRV || h.Rrtype == dns.TypeTXT):
		case sameName(h.Name, e.names.host) && (h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA):
		default:
			continue
		}
		if k := recordKey(rr); !e.own[k] {
			keys = append(keys, k)
		}
	}
	return keys
}

// noteProbe handles a query's Authority section: another node probing
// for names. A node probing for ours with other data is a rival: while
// we probe, the tie-break says who yields; once we hold the id, we
// defend it.
func (e *engine) noteProbe(q *dns.Msg, ifc *iface, src netip.AddrPort, now time.Time) {
	if len(q.Ns) == 0 {
		return
	}
	keys := e.conflicts(q.Ns, true)
	if len(keys) == 0 {
		return
	}
	c := &e.claim
	if c.probers == nil {
		c.probers = map[string]time.Time{}
	}
	for k, at := range c.probers {
		if now.Sub(at) > proberMemory {
			delete(c.probers, k)
		}
	}
	for _, k := range keys {
		if len(c.probers) < maxProbers {
			c.probers[k] = now
		}
	}
	switch {
	case c.probing:
		if !c.beatenBy.IsValid() && compareRecords(q.Ns, ifc.rs.instanceRecords(), e.names) > 0 {
			c.beatenBy = src
		}
	case c.claimed:
		e.defend(ifc, src, now)
	}
}

// noteConflicts handles a response's records for our names with other
// data.
func (e *engine) noteConflicts(m *dns.Msg, ifc *iface, src netip.AddrPort, now time.Time) {
	rrs := make([]dns.RR, 0, len(m.Answer)+len(m.Ns)+len(m.Extra))
	rrs = append(append(append(rrs, m.Answer...), m.Ns...), m.Extra...)
	keys := e.conflicts(rrs, false)
	if len(keys) == 0 {
		return
	}
	c := &e.claim
	switch {
	case c.probing:
		if len(c.heard) < maxProbers {
			h := rivalResponse{keys: keys, from: src}
			for _, rr := range rrs {
				if srv, ok := rr.(*dns.SRV); ok && sameName(srv.Hdr.Name, e.names.instance) && !e.own[recordKey(srv)] {
					h.port = srv.Port
				}
			}
			c.heard = append(c.heard, h)
		}
	case e.allProbing(keys, now.Add(-proberMemory)):
		e.defend(ifc, src, now) // a newcomer announcing while it probes
	default:
		e.log.Warn("mdns: another node announces this node's id; probing again (RFC 6762 §9)",
			"node", e.id, "addr", src.Addr(), "iface", ifc.name)
		e.startRound(now)
	}
}

// allProbing reports whether every key was heard in a probe since since.
func (e *engine) allProbing(keys []string, since time.Time) bool {
	for _, k := range keys {
		at, ok := e.claim.probers[k]
		if !ok || at.Before(since) {
			return false
		}
	}
	return true
}

// defend multicasts our records on ifc at once, at most every defendGap:
// a node probing for our id hears that it is taken.
func (e *engine) defend(ifc *iface, rival netip.AddrPort, now time.Time) {
	c := &e.claim
	if c.defended == nil {
		c.defended = map[respKey]time.Time{}
	}
	v6 := rival.Addr().Is6()
	if !ifc.runs(v6) {
		return
	}
	k := respKey{ifc.index, v6}
	if last, ok := c.defended[k]; ok && now.Sub(last) < defendGap {
		return
	}
	c.defended[k] = now
	if now.Sub(c.warned) > time.Minute {
		c.warned = now
		e.log.Warn("mdns: a node with this node's id tried to join; it is told the id is taken",
			"node", e.id, "addr", rival.Addr(), "iface", ifc.name)
		e.report(Event{Source: "mdns", Err: fmt.Errorf("discovery: the node at %v tried to join with this node's id %q; it is told the id is taken", rival.Addr(), e.id)})
	}
	r := e.responder(ifc, v6)
	answer := ifc.rs.instanceRecords()
	for _, rr := range answer {
		r.lastMulticast[recordKey(rr)] = now
	}
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Compress: true, Answer: answer}
	e.sendPacked(outPacket{kind: sendAnswer, iface: ifc, v6: v6}, m)
}

// compareRecords is the tie-break of two probes (§8.2): each side's
// records for our names, sorted by class, type and data, compared in
// turn; the first difference decides, and a side whose records run out
// first is the lesser. It returns +1 when theirs win.
func compareRecords(theirs, ours []dns.RR, n names) int {
	a, b := tieBreakData(theirs, n), tieBreakData(ours, n)
	for i := range min(len(a), len(b)) {
		if c := bytes.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a), len(b))
}

// tieBreakData returns the records of rrs named n.instance or n.host, each
// as class, type and data, sorted.
func tieBreakData(rrs []dns.RR, n names) [][]byte {
	var out [][]byte
	buf := make([]byte, 1500)
	for _, rr := range rrs {
		h := rr.Header()
		if !sameName(h.Name, n.instance) && !sameName(h.Name, n.host) {
			continue
		}
		c := dns.Copy(rr)
		c.Header().Name = "x." // the same short name for both sides
		end, err := dns.PackRR(c, buf, 0, nil, false)
		if err != nil || end < 13 {
			continue
		}
		// "x." packs to 3 bytes; then type(2) class(2) ttl(4) rdlength(2).
		key := make([]byte, 0, end-9)
		key = append(key, buf[5]&^0x80, buf[6]) // class without the cache-flush bit
		key = append(key, buf[3], buf[4])       // type
		key = append(key, buf[13:end]...)       // data
		out = append(out, key)
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}
