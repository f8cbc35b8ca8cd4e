package discovery

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// startupAnnouncements are sent one second apart when Run starts
	// (RFC 6762 §8.3 asks for at least two).
	startupAnnouncements = 2
	startupGap           = time.Second
	// answerSpacing keeps the answers that periodic queries draw under half
	// a packet per second per node: each query is answered by every node,
	// so with n nodes each querying every n×2 s, each node sends n answers
	// per n×2 s.
	answerSpacing = 2 * time.Second
	// maxSighted bounds the table of nodes sighted against a hostile LAN.
	maxSighted = 4096
	// maxTTL bounds the lifetime a received record can claim.
	maxTTL = 24 * time.Hour
	// The first query's delay (RFC 6762 §5.2).
	firstQueryLo = 20 * time.Millisecond
	firstQueryHi = 120 * time.Millisecond
)

// packetKind says what an outgoing packet is.
type packetKind uint8

const (
	sendAnnounce packetKind = iota + 1
	sendGoodbye
	sendQuery
	sendAnswer
	sendProbe
)

func (k packetKind) String() string {
	switch k {
	case sendAnnounce:
		return "announcement"
	case sendGoodbye:
		return "goodbye"
	case sendQuery:
		return "query"
	case sendAnswer:
		return "answer"
	case sendProbe:
		return "probe"
	}
	return "unknown"
}

// outPacket is one packet to send on one interface: multicast to the group of
// IP version v6, or, for an answer, by unicast to a querier.
type outPacket struct {
	kind  packetKind
	iface *iface
	v6    bool
	to    netip.AddrPort // the querier, for a unicast answer
	data  []byte
	// oneShot: a query from the querier socket's ephemeral port (§5.1),
	// whose answers come back by unicast to it alone.
	oneShot bool
}

// inPacket is one received packet. ifindex is the interface it arrived on.
type inPacket struct {
	data    []byte
	src     netip.AddrPort
	ifindex int
}

// sender sends packets. The engine's goroutine is its only caller.
type sender interface {
	send(p outPacket) error
}

// sighted is what the engine knows of one node, from its sightings.
type sighted struct {
	instance  string // its DNS-SD instance name
	port      uint16
	addrs     map[netip.AddrPort]addrState
	ttl       time.Duration
	seen      time.Time // when its PTR was last heard (for known answers)
	refreshAt time.Time // query for it if nothing refreshed it by then
	reported  []netip.AddrPort
}

type addrState struct {
	expires time.Time
	rank    int // lower is better; see rank
}

// engine is the state of one MDNS run: schedules and the nodes sighted.
// One goroutine owns it; packets reach it through in.
type engine struct {
	set     settings
	passive bool // Self.Passive: announce, probe and answer nothing
	cluster string
	id      string
	service string
	names   names           // this node's names
	own     map[string]bool // keys of the records this node publishes, on any interface
	ifaces  []*iface
	out     sender
	in      <-chan inPacket
	report  func(Event)
	log     *slog.Logger

	sighted      map[string]*sighted // by node id
	sightedDue   time.Time           // the earliest refresh or address expiry of the sighted nodes, or before (see noteSightedDue); zero: none
	announced    int
	nextAnnounce time.Time
	queried      int
	queryGap     time.Duration
	nextQuery    time.Time

	responders  map[respKey]*responder
	held        map[netip.AddrPort]*heldQuery // truncated queries (§7.2)
	addrWaits   map[string]*addrWait          // sightings waiting for addresses, by SRV target
	addrQueries bucket                        // the queries for their addresses

	claim claimState // probing for the id (mdns_claim.go)
}

func newEngine(set settings, self Self, ifaces []*iface, out sender, in <-chan inPacket, report func(Event)) (*engine, error) {
	e := &engine{
		set:     set,
		passive: self.Passive,
		cluster: self.Cluster,
		id:      self.ID,
		service: serviceName(self.Cluster),
		names:   newNames(self.Cluster, self.ID),
		own:     map[string]bool{},
		ifaces:  ifaces,
		out:     out,
		in:      in,
		report:  report,
		log:     set.log,
		sighted: map[string]*sighted{},

		responders: map[respKey]*responder{},
		held:       map[netip.AddrPort]*heldQuery{},
		addrWaits:  map[string]*addrWait{},
	}
	if _, err := browseQueries(e.service, true, nil); err != nil {
		return nil, err
	}
	for _, ifc := range ifaces {
		for _, rr := range ifc.rs.instanceRecords() {
			e.own[recordKey(rr)] = true
		}
	}
	return e, nil
}

// run announces, probes, browses, answers and reports until ctx is done,
// and returns nil; or until another live node proves to hold this node's
// id, and returns an error wrapping ErrIDConflict. It does not say
// goodbye: once it has returned, nothing answers queries any more, and
// the caller says goodbye if the names are still its own (nil).
func (e *engine) run(ctx context.Context) error {
	now := time.Now()
	// The first query waits 20–120 ms (RFC 6762 §5.2), so that nodes
	// started together do not query at once. Probing starts at once.
	e.nextAnnounce, e.nextQuery = now, now.Add(randBetween(firstQueryLo, firstQueryHi))
	if e.passive {
		e.nextAnnounce = farFuture // nothing of its own is said (Self.Passive)
	} else {
		e.startRound(now)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		e.tick(now)
		if e.claim.lost != nil {
			return e.claim.lost
		}
		timer.Reset(e.deadline().Sub(now))
		select {
		case <-ctx.Done():
			return nil
		case p := <-e.in:
			e.receive(p, time.Now())
		case <-timer.C:
		}
	}
}

// farFuture is a deadline that never comes.
var farFuture = time.Now().Add(100 * 365 * 24 * time.Hour)

// tick does whatever is due at now.
func (e *engine) tick(now time.Time) {
	e.releaseHeld(now)
	e.sendDue(now)
	// A probe goes before the announcement it comes with: a node that
	// already holds the id then knows the announcement is a newcomer's.
	if !e.passive {
		e.probeDue(now)
	}
	if e.claim.lost != nil {
		return
	}
	if !now.Before(e.nextAnnounce) {
		e.sendAll(sendAnnounce, nil)
		for _, ifc := range e.ifaces {
			for _, v6 := range []bool{false, true} {
				r := e.responder(ifc, v6)
				for _, rr := range ifc.rs.all() {
					r.lastMulticast[recordKey(rr)] = now
				}
			}
		}
		e.announced++
		if e.announced < startupAnnouncements {
			e.nextAnnounce = now.Add(startupGap)
		} else {
			// Twice per TTL, a little early: one lost announcement
			// never lets a record lapse.
			half := e.set.ttl / 2
			e.nextAnnounce = now.Add(half - jitter(half/10))
		}
	}
	due := !now.Before(e.nextQuery)
	if due {
		// The first query is a one-shot query (§5.1) asking for unicast
		// answers (§5.4), from a port of this node's own: its answers
		// reach it even where other responders share port 5353 on this
		// host. The later ones, from port 5353, list what this node
		// knows, so that only what it lacks is sent (§7.1).
		first := e.queried == 0
		qs, err := browseQueries(e.service, first, e.knownAnswers(now))
		if err != nil {
			e.log.Debug("mdns: cannot build query", "err", err)
		}
		for _, q := range qs {
			e.sendQuery(q, first)
		}
		e.queried++
		e.queryGap = e.nextGap()
		e.nextQuery = now.Add(e.queryGap + jitter(e.queryGap/10))
	}
	// RFC 6762 §5.2: ask again for a record at 80% and 90% of its life,
	// by name, so that only its owner answers (a browse would draw an
	// answer from every node, for every node that vanished).
	if now.Before(e.sightedDue) {
		return // nothing of the sighted nodes is due
	}
	var stale []string
	for _, n := range e.sighted {
		if !now.Before(n.refreshAt) {
			n.refreshAt = now.Add(n.ttl / 10)
			if !due {
				stale = append(stale, n.instance)
			}
		}
	}
	for len(stale) > 0 {
		q, rest, err := refreshQuery(stale)
		if err != nil || len(rest) == len(stale) {
			e.log.Debug("mdns: cannot build refresh query", "err", err)
			break
		}
		e.sendQuery(q, false)
		stale = rest
	}
	e.sightedDue = time.Time{}
	for id, n := range e.sighted {
		changed := false
		for a, st := range n.addrs {
			if !now.Before(st.expires) {
				delete(n.addrs, a)
				changed = true
			}
		}
		if changed {
			e.publish(id, n)
		}
		e.noteSightedDue(n)
	}
}

// noteSightedDue keeps e.sightedDue at or before n's next refresh and
// address expiry. It may fall before what is due (a sighting refreshed
// later, or gone): tick then walks the sighted nodes once more than
// needed, and sets it exactly. Without it, every packet received walked
// them all, at a hundred nodes a tenth of the engine's time.
func (e *engine) noteSightedDue(n *sighted) {
	due := n.refreshAt
	for _, st := range n.addrs {
		if st.expires.Before(due) {
			due = st.expires
		}
	}
	if e.sightedDue.IsZero() || due.Before(e.sightedDue) {
		e.sightedDue = due
	}
}

// nextGap is the wait after the query just sent: QueryMin after the
// first, then doubling up to QueryMax; never, after the second, under
// answerSpacing per node known.
func (e *engine) nextGap() time.Duration {
	if e.queried <= 1 {
		return e.set.queryMin
	}
	floor := answerSpacing * time.Duration(len(e.sighted)+1)
	return min(max(2*e.queryGap, floor), max(e.set.queryMax, floor))
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// knownAnswers are the PTRs of the nodes sighted with more than half their
// TTL left, with the TTL left (§7.1).
func (e *engine) knownAnswers(now time.Time) []dns.RR {
	var out []dns.RR
	for _, id := range slices.Sorted(maps.Keys(e.sighted)) {
		n := e.sighted[id]
		left := n.ttl - now.Sub(n.seen)
		if n.instance == "" || left <= n.ttl/2 {
			continue
		}
		out = append(out, &dns.PTR{
			Hdr: dns.RR_Header{Name: e.service, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: uint32(left / time.Second)},
			Ptr: n.instance,
		})
	}
	return out
}

// noteQuery applies duplicate question suppression (§7.3): another
// querier's browse of our service, listing every answer this node would
// list, stands for this node's next query.
func (e *engine) noteQuery(q *dns.Msg, now time.Time) {
	if q.Truncated || len(q.Question) != 1 || q.Question[0].Qclass&qu != 0 ||
		q.Question[0].Qtype != dns.TypePTR || !sameName(q.Question[0].Name, e.service) || e.queried < 2 {
		return
	}
	listed := make(map[string]bool, len(q.Answer))
	for _, rr := range q.Answer {
		if ptr, ok := rr.(*dns.PTR); ok && ptr.Hdr.Class&^cacheFlush == dns.ClassINET && sameName(ptr.Hdr.Name, e.service) {
			listed[strings.ToLower(ptr.Ptr)] = true
		}
	}
	for _, k := range e.knownAnswers(now) {
		if !listed[strings.ToLower(k.(*dns.PTR).Ptr)] {
			return
		}
	}
	if e.nextQuery.Sub(now) < e.queryGap/2 {
		e.nextQuery = now.Add(e.queryGap/2 + jitter(e.queryGap/10))
	}
}

// deadline is when tick has something to do next.
func (e *engine) deadline() time.Time {
	next := e.nextAnnounce
	if e.nextQuery.Before(next) {
		next = e.nextQuery
	}
	if e.claim.probing && e.claim.next.Before(next) {
		next = e.claim.next
	}
	for _, h := range e.held {
		if h.due.Before(next) {
			next = h.due
		}
	}
	for _, r := range e.responders {
		if r.pending != nil && r.pending.due.Before(next) {
			next = r.pending.due
		}
	}
	if !e.sightedDue.IsZero() && e.sightedDue.Before(next) {
		next = e.sightedDue
	}
	return next
}

// sendAll multicasts one kind of packet on every interface and IP version:
// query, or each interface's announcement or goodbye.
func (e *engine) sendAll(kind packetKind, query []byte) {
	for _, ifc := range e.ifaces {
		data := query
		switch kind {
		case sendAnnounce:
			data = ifc.announce
		case sendGoodbye:
			data = ifc.goodbye
		}
		for _, v6 := range []bool{false, true} {
			if !ifc.runs(v6) {
				continue
			}
			if err := e.out.send(outPacket{kind: kind, iface: ifc, v6: v6, data: data}); err != nil {
				e.log.Debug("mdns: send failed", "kind", kind, "iface", ifc.name, "err", err)
				e.report(Event{Source: "mdns", Err: err})
			}
		}
	}
}

// sendQuery multicasts a query on every interface and IP version.
func (e *engine) sendQuery(q []byte, oneShot bool) {
	for _, ifc := range e.ifaces {
		for _, v6 := range []bool{false, true} {
			if !ifc.runs(v6) {
				continue
			}
			if err := e.out.send(outPacket{kind: sendQuery, iface: ifc, v6: v6, data: q, oneShot: oneShot}); err != nil {
				e.log.Debug("mdns: send failed", "kind", sendQuery, "iface", ifc.name, "err", err)
				e.report(Event{Source: "mdns", Err: err})
			}
		}
	}
}

// goodbye withdraws this node's records everywhere.
func (e *engine) goodbye() {
	if !e.passive {
		e.sendAll(sendGoodbye, nil)
	}
}

// receive handles one packet from the network.
func (e *engine) receive(p inPacket, now time.Time) {
	m, skipped, err := unpackTolerant(p.data)
	if err != nil {
		e.log.Debug("mdns: undecodable packet", "addr", p.src, "err", err)
		return
	}
	if skipped > 0 {
		e.log.Debug("mdns: records skipped that do not decode", "addr", p.src, "skipped", skipped)
	}
	// RFC 6762 §18 says to ignore messages with a non-zero opcode or rcode.
	if m.Opcode != dns.OpcodeQuery || m.Rcode != dns.RcodeSuccess {
		return
	}
	if !m.Response {
		e.answer(m, p, now)
		return
	}
	// §6: a response not from port 5353 is not an mDNS response.
	if p.src.Port() != mdnsPort {
		e.log.Debug("mdns: response from a port other than 5353 ignored", "addr", p.src)
		return
	}
	ifc := e.ifaceFor(p.ifindex, p.src.Addr())
	if ifc == nil {
		return
	}
	if !e.onLink(ifc, p.src.Addr().Unmap()) {
		e.log.Debug("mdns: response from off the link ignored", "iface", ifc.name, "addr", p.src)
		return
	}
	if !e.ownAddr(p.src.Addr().Unmap()) {
		e.noteAnswers(ifc, p.src.Addr().Unmap().Is6(), m, now)
	}
	e.noteConflicts(m, ifc, p.src, now)
	sightings, errs := parseResponse(m, e.service)
	for _, err := range errs {
		e.log.Debug("mdns: bad record", "addr", p.src, "err", err)
	}
	for _, s := range sightings {
		e.observe(s, ifc, p.src.Addr(), now)
	}
	e.completeAddrs(m, ifc, p.src.Addr(), now)
}

// ifaceFor returns the interface a packet belongs to: the one it arrived
// on; but a packet from a node on this host sent to one of our addresses
// is delivered through loopback whatever interface it was meant for, so a
// packet that arrives on loopback or on an interface we do not run on
// belongs to the interface its source address is on, when it is ours.
func (e *engine) ifaceFor(ifindex int, src netip.Addr) *iface {
	var arrival *iface
	for _, ifc := range e.ifaces {
		if ifc.index == ifindex {
			arrival = ifc
		}
	}
	if arrival != nil && !arrival.loopback {
		return arrival
	}
	zone, bare := src.Zone(), src.WithZone("")
	var owner *iface
	for _, ifc := range e.ifaces {
		for _, p := range ifc.prefixes {
			if p.Addr() == bare && (owner == nil || ifc.name == zone) {
				owner = ifc
			}
		}
	}
	if owner != nil {
		return owner
	}
	return arrival
}

// observe records what a packet from src, on interface ifc, said of a
// node.
func (e *engine) observe(s sighting, ifc *iface, src netip.Addr, now time.Time) {
	if !s.txt.matches(e.cluster) {
		e.log.Debug("mdns: other cluster under our service name", "iface", ifc.name)
		return
	}
	id := s.txt.id
	if id == e.id {
		return
	}
	n := e.sighted[id]
	if s.goodbye {
		if n != nil {
			delete(e.sighted, id)
			if n.reported != nil {
				e.report(Event{Kind: Lost, Peer: Peer{ID: id}, Source: "mdns"})
			}
		}
		return
	}
	addrs := e.usable(s.addrs, ifc, slices.Contains(s.addrs, src.WithZone("")))
	if s.port == 0 || len(addrs) == 0 {
		// No address in the packet (avahi leaves them out when it
		// multicast them within the last second): ask for them, even
		// for a node known already, say by its IPv6 packet alone.
		if s.port != 0 && len(s.addrs) == 0 {
			e.awaitAddrs(s, ifc, now)
		}
		return
	}
	if n == nil {
		if len(e.sighted) >= maxSighted {
			e.log.Warn("mdns: too many nodes sighted", "cluster", e.cluster, "peer", id)
			return
		}
		n = &sighted{addrs: map[netip.AddrPort]addrState{}}
		e.sighted[id] = n
	}
	if n.port != s.port {
		clear(n.addrs) // a new incarnation: its old addresses are stale
		n.port = s.port
	}
	ttl := min(time.Duration(s.ttl)*time.Second, maxTTL)
	// A short-lived copy (a legacy answer's 10 s TTL, say) never cuts
	// short what a longer one said.
	if n.instance != "" && !n.seen.IsZero() && now.Add(ttl).Before(n.seen.Add(n.ttl)) {
		ttl = n.seen.Add(n.ttl).Sub(now)
	} else {
		n.ttl, n.seen = ttl, now
	}
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.addr, s.port)
		expires := now.Add(ttl)
		if old, ok := n.addrs[ap]; ok && old.expires.After(expires) {
			expires = old.expires
		}
		n.addrs[ap] = addrState{expires: expires, rank: a.rank}
	}
	n.instance = s.instance
	n.refreshAt = n.seen.Add(n.ttl * 8 / 10)
	e.noteSightedDue(n)
	e.publish(id, n)
	// A responder that answers over IPv6 with its IPv6 addresses only
	// (avahi: publish-a-on-ipv6=no) and whose IPv4 packet carried no A
	// leaves an IPv4 node unknown at its IPv4 address: ask for it
	// (RFC 6763 §12).
	if ifc.v4 && e.set.v4 && !slices.ContainsFunc(addrs, func(a rankedAddr) bool { return a.addr.Is4() }) && !n.hasIPv4() {
		bare := s
		bare.addrs = nil
		e.awaitAddrs(bare, ifc, now)
	}
}

// hasIPv4 reports whether an IPv4 address of the node is known.
func (n *sighted) hasIPv4() bool {
	for a := range n.addrs {
		if a.Addr().Is4() {
			return true
		}
	}
	return false
}

type rankedAddr struct {
	addr netip.Addr
	rank int
}

// usable keeps the addresses of a sighting that can be dialed from
// interface ifc and ranks them, best first: 0 loopback (a node on this
// host; counted only from loopback), 1 on a subnet of ifc, 2 IPv6
// link-local (zoned to ifc), 3 anything else.
//
// IPv6 link-local addresses count only when fromOwnAddr says the packet
// came from one of the sighting's addresses: then the records describe the
// interface they came over. A responder whose socket hears the queries of
// every interface (Linux's IP_MULTICAST_ALL, on by default) may answer
// them with another interface's records: link-local addresses of another
// interface, which no zone would make reachable.
func (e *engine) usable(addrs []netip.Addr, ifc *iface, fromOwnAddr bool) []rankedAddr {
	var out []rankedAddr
	for _, a := range addrs {
		switch {
		case a.IsUnspecified() || a.IsMulticast():
			continue
		case a.Is4() && !e.set.v4, a.Is6() && !e.set.v6:
			continue
		case a.IsLoopback():
			if ifc.loopback {
				out = append(out, rankedAddr{a, 0})
			}
			continue
		case a.Is6() && a.IsLinkLocalUnicast():
			if fromOwnAddr && !ifc.loopback {
				out = append(out, rankedAddr{a.WithZone(ifc.name), 2})
			}
			continue
		}
		rank := 3
		for _, p := range ifc.prefixes {
			if p.Contains(a) {
				rank = 1
				break
			}
		}
		out = append(out, rankedAddr{a, rank})
	}
	return out
}

// publish reports node id (sighted as n) if its address list changed:
// Found with the new list, or Lost when none is left.
func (e *engine) publish(id string, n *sighted) {
	addrs := make([]netip.AddrPort, 0, len(n.addrs))
	for a := range n.addrs {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(a, b netip.AddrPort) int {
		if c := cmp.Compare(n.addrs[a].rank, n.addrs[b].rank); c != 0 {
			return c
		}
		if a.Addr().Is4() != b.Addr().Is4() {
			if a.Addr().Is4() {
				return -1
			}
			return 1
		}
		return a.Compare(b)
	})
	if len(addrs) == 0 {
		delete(e.sighted, id)
		if n.reported != nil {
			e.report(Event{Kind: Lost, Peer: Peer{ID: id}, Source: "mdns"})
		}
		return
	}
	if slices.Equal(addrs, n.reported) {
		return
	}
	n.reported = addrs
	e.report(Event{Kind: Found, Peer: Peer{ID: id, Addrs: slices.Clone(addrs)}, Source: "mdns"})
}
