package registry

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Applying what peers send. Every function here runs with r.mu held.
//
// An owner's records change by contiguous steps (inc, seq): a Put or Del is
// applied only on top of seq-1 of the same incarnation (or as seq 1 of a
// newer one); an older or equal one is a duplicate, dropped and not
// relayed, which is what keeps cycles free of duplicates; a newer one
// leaves a gap that a Want fills with a snapshot. A snapshot or a state
// replaces what is stored when it is newer. What is applied is relayed to
// the peers that may lack it.

// owner returns the owner id, created empty when unknown.
func (r *Registry) owner(id string) *owner {
	o := r.owners[id]
	if o == nil {
		o = &owner{id: id, records: map[string]*entry{}, renewed: time.Now(), idx: r.newIdx()}
		r.byIdx[o.idx] = o
		r.above.set(o.idx, id > r.self.id)
		r.owners[id] = o
		r.ids.add(id)
		r.ownersGen++
	}
	return o
}

// onState applies a node's state: its adjacency, its renewal, its leaving.
// A delta applies on top of the adjacency it names (its base); one that
// does not find it here is not applied, and the whole state is asked
// for (with a snapshot of the records: see onWant).
func (r *Registry) onState(l *link, m *message, payload []byte) error {
	if m.owner == r.self.id {
		return nil
	}
	if r.secondHand(l, m.owner, m.inc) {
		l.noteState(r.owners[m.owner], m.inc, m.beat) // (known here: this node links it)
		return nil
	}
	o := r.owner(m.owner)
	l.noteState(o, m.inc, m.beat)
	if m.inc < o.inc {
		return nil
	}
	if r.signing() {
		// Checked before anything changes: a later run, above all, drops
		// what is held of the owner.
		newer := m.inc > o.inc
		if !newer && m.beat <= o.beat {
			return nil
		}
		if m.delta && (newer || o.beat == 0 || o.adjAt != m.base) {
			r.want(l, o.id)
			return nil
		}
		if ok, err := r.checkState(l, o, m); !ok {
			return err
		}
	}
	if m.inc > o.inc {
		r.resetOwner(o, m.inc)
	}
	if m.beat <= o.beat {
		return nil
	}
	changes := m.peers
	if m.delta {
		if o.beat == 0 || o.adjAt != m.base {
			r.want(l, o.id)
			return nil
		}
	} else {
		changes = r.wholeDelta(o.peers, m.peers)
	}
	if len(r.links[o.id]) > 0 {
		r.peerMoved(o, m, changes)
	}
	// Liveness follows: a state that only adds links (or brings an owner
	// back) can only make more owners reachable, which the walk extends
	// from the new edges; anything lost needs the whole walk again.
	wasEligible := eligible(o)
	lost, removed := false, false
	var grown []string
	if len(changes) > 0 && o.peers == nil {
		o.peers = make(map[string]uint64, len(changes))
	}
	for _, c := range changes {
		old, had := o.peers[c.id]
		x := r.owners[c.id] // (nil: not known here)
		if c.id == r.self.id {
			o.namedAt = 0
			if c.inc == r.self.inc {
				o.namedAt = m.beat
			}
		}
		removed = removed || had
		if inc := old; had && !lost {
			// Removed, or at a new incarnation: the edge to the old run
			// is gone. Only an edge to an owner that can be reachable
			// carried reachability (see spread): losing one to an owner
			// known to be leaving, gone or restarted needs no walk, as
			// when every neighbour of a node that left drops it. Nor
			// does an edge between two of this node's neighbours: what
			// either reaches, this node reaches through the other's
			// link of its own (see shortcut).
			lost = x == nil || x == r.self || x.inc == inc && eligible(x) && !r.shortcut(o, x)
		}
		if x != nil {
			o.names.set(x.idx, c.inc != 0 && c.inc == x.inc) // (nameBit)
		}
		if c.inc == 0 {
			delete(o.peers, c.id)
			continue
		}
		o.peers[c.id] = c.inc
		grown = append(grown, c.id)
	}
	if len(changes) > 0 {
		o.adj = nil
	}
	if !wasEligible {
		grown = slices.Collect(maps.Keys(o.peers))
	}
	switch {
	case wasEligible && m.leaving && !lost && r.bypassed(o):
		// Everything o reached, this node reaches without it: no walk
		// (in a whole mesh, every node's, as each has o's leaving
		// state at once).
		o.reached = false
		r.setLive(o, false)
		grown = nil
	case wasEligible && (m.leaving || lost):
		r.dirty = true
		grown = nil
	}
	if len(changes) > 0 || !wasEligible || o.leaving != m.leaving {
		r.peersGen++
	}
	o.beat = m.beat
	o.leaving = m.leaving
	o.lifetime = m.lifetime
	o.renewed = time.Now()
	o.expired, o.gone = false, false
	if r.signing() {
		o.stateSig, o.stateSeq = cloneSig(m.sig), m.seq
	}
	if m.delta {
		o.adjAt, o.frame = m.beat, nil
		o.delta, o.deltaBase = l.keepFrame(payload), m.base
	} else {
		o.adjAt, o.frame = m.base, l.keepFrame(payload) // for syncs and relays, as received
		o.delta, o.deltaBase = nil, 0
	}
	// Another owner's state is relayed when it says something that
	// matters to nodes not linked to the owner: it is the first of its
	// run here, or a heartbeat (renewal), or it removes links or leaves,
	// or the links it adds make an owner reachable here that was not.
	// The others only add links between owners reachable already: in a
	// forming mesh, nearly every state, and relaying them was most of a
	// 100-node mesh's work. Those wait for the owner's next heartbeat,
	// or its next loss, which goes whole to a peer that does not hold
	// its base (see stateTo); but every half of the owner's lifetime its
	// newest state is relayed all the same (after relayDelay), to renew
	// it on nodes that know it through relays (see renewLater): while
	// its links keep coming it issues merged states, not heartbeats.
	now := time.Now()
	news := !wasEligible || len(changes) == 0 || removed || o.leaving
	if removed || o.leaving {
		o.lossBeat = m.beat
	}
	grew := false
	if o.leaving {
		r.wipeRecords(o)
	} else {
		grew = r.grow(o, grown)
	}
	switch {
	case news || grew:
		r.relayLater(o, len(grown) > 0 && !o.leaving)
		o.relayedAt = now
	case now.Sub(o.relayedAt) >= r.lifetimeOf(o)/2:
		r.renewLater(o)
		o.relayedAt = now
	}
	if !o.leaving && m.seq > o.seq {
		r.want(l, o.id)
	}
	return nil
}

// wholeDelta returns the changes from the adjacency have to the whole one
// peers names, in the form of a delta.
func (r *Registry) wholeDelta(have map[string]uint64, peers []peerRef) []peerRef {
	d := make([]peerRef, 0, max(len(peers)-len(have), 4)) // (what is added, when nothing is dropped)
	kept := 0
	for _, p := range peers {
		if inc, ok := have[p.id]; ok && inc == p.inc {
			kept++
		} else {
			d = append(d, p)
		}
	}
	if kept == len(have) {
		return d // nothing removed
	}
	named := make(map[string]bool, len(peers))
	for _, p := range peers {
		named[p.id] = true
	}
	for id := range have {
		if !named[id] {
			d = append(d, peerRef{id: id})
		}
	}
	return d
}

// peerMoved takes a new State of p, a peer with a link here, before it
// is applied (changes: what it changes in p's adjacency, as a delta
// does): for the links on which p's Hello named its neighbours, the
// State supersedes the Hello if p issued it after. A neighbour that p
// named before and names no more may have sent p something that never
// arrived, which this node did not relay to p on the word of the old
// adjacency (see peerNames): the neighbour's State is relayed to p again,
// and shows p any gap in its records.
func (r *Registry) peerMoved(p *owner, m *message, changes []peerRef) {
	var changed map[string]uint64 // changes by id, when first needed
	for _, l := range r.links[p.id] {
		if !l.hello || l.peerInc != m.inc {
			continue
		}
		if l.helloPeers == nil {
			// What p named is its adjacency here: what changes drops.
			for _, c := range changes {
				if inc, ok := p.peers[c.id]; ok && inc != c.inc {
					r.relayAgain(c.id, inc)
				}
			}
			continue
		}
		if m.beat <= l.helloBeat {
			continue // the Hello is newer
		}
		old := l.helloPeers
		l.helloPeers = nil
		if changed == nil {
			changed = make(map[string]uint64, len(changes))
			for _, c := range changes {
				changed[c.id] = c.inc
			}
		}
		for id, inc := range old {
			now, ok := changed[id]
			if !ok {
				now = p.peers[id]
			}
			if now != inc {
				r.relayAgain(id, inc)
			}
		}
	}
}

// relayAgain queues the state of owner id's run inc for relaying, if
// this node holds one.
func (r *Registry) relayAgain(id string, inc uint64) {
	if x := r.owners[id]; x != nil && x != r.self && x.inc == inc && x.beat > 0 {
		r.relayLater(x, false)
	}
}

// onChange applies a Put or a Del.
func (r *Registry) onChange(l *link, m *message, payload []byte) error {
	if m.owner == r.self.id {
		return nil
	}
	if r.secondHand(l, m.owner, m.inc) {
		l.noteRecords(r.owners[m.owner], m.inc, m.seq) // (known here: this node links it)
		return nil
	}
	o := r.owner(m.owner)
	l.noteRecords(o, m.inc, m.seq)
	if m.inc < o.inc || (m.inc == o.inc && m.seq <= o.seq) {
		return nil // stale or duplicate
	}
	if !(m.inc == o.inc && m.seq == o.seq+1) && !(m.inc > o.inc && m.seq == 1) {
		r.want(l, o.id)
		return nil
	}
	if m.typ == msgPut {
		e := m.recs[0]
		if _, ok := o.records[e.rec.ID]; !ok && !o.leaving && len(o.records) >= r.cfg.MaxRecordsPerOwner {
			return fmt.Errorf("%w: owner %s already holds %d records", ErrTooManyRecords, o.id, len(o.records))
		}
	}
	if r.signing() {
		if m.inc == o.inc && o.leaving {
			return nil // its records are gone here: nothing to check it on
		}
		held, id, put := o.records, m.id, (*entry)(nil)
		if m.inc > o.inc {
			held = nil // seq 1 of a later run
		}
		if m.typ == msgPut {
			put = m.recs[0]
			id = put.rec.ID
		}
		if ok, err := r.checkRecords(l, o, m.inc, m.seq, recordsDigest(held, id, put), m.sig); !ok {
			return err
		}
	}
	if m.inc > o.inc {
		r.resetOwner(o, m.inc)
	}
	o.seq = m.seq
	if o.leaving {
		return nil
	}
	if m.typ == msgPut {
		r.setRecord(o, m.recs[0])
	} else {
		r.delRecord(o, m.id)
	}
	if r.signing() {
		o.recSig = cloneSig(m.sig)
	}
	r.relay(l, o, true, Rev{o.inc, o.seq}, payload, nil)
	return nil
}

// onSnap accumulates a snapshot's chunks and applies it whole.
func (r *Registry) onSnap(l *link, m *message, payload []byte) error {
	s := l.snap
	if s == nil {
		s = &snapshot{owner: m.owner, inc: m.inc, seq: m.seq, recs: map[string]*entry{}, sig: cloneSig(m.sig)}
		l.snap = s
	} else if s.owner != m.owner || s.inc != m.inc || s.seq != m.seq || !bytes.Equal(s.sig, m.sig) {
		return fmt.Errorf("%w: snapshot chunks of different versions", ErrProtocol)
	}
	for _, e := range m.recs {
		s.recs[e.rec.ID] = e
	}
	if len(s.recs) > r.cfg.MaxRecordsPerOwner {
		return fmt.Errorf("%w: snapshot of %s holds more than %d records", ErrTooManyRecords, s.owner, r.cfg.MaxRecordsPerOwner)
	}
	s.frames = append(s.frames, frameOf(payload))
	if !m.last {
		return nil
	}
	l.snap = nil
	delete(l.wanted, s.owner)
	if s.owner == r.self.id || s.inc == 0 || r.secondHand(l, s.owner, s.inc) {
		l.noteRecords(r.owners[s.owner], s.inc, s.seq) // (nil when not known here)
		return nil
	}
	o := r.owner(s.owner)
	l.noteRecords(o, s.inc, s.seq)
	if (Rev{s.inc, s.seq}).Compare(Rev{o.inc, o.seq}) <= 0 {
		return nil
	}
	if r.signing() {
		// At seq 0 it holds nothing, and is signed by nobody: the owner's
		// State, which follows it, says the rest.
		if s.seq == 0 || s.inc == o.inc && o.leaving {
			return nil
		}
		if ok, err := r.checkRecords(l, o, s.inc, s.seq, recordsDigest(s.recs, "", nil), s.sig); !ok {
			return err
		}
	}
	if s.inc > o.inc {
		r.resetOwner(o, s.inc)
	}
	o.seq = s.seq
	if o.leaving {
		return nil
	}
	r.replaceRecords(o, s.recs)
	if r.signing() {
		o.recSig = s.sig
	}
	if o.seq > 0 { // at seq 0, it says nothing the owner's state does not
		r.relay(l, o, true, Rev{o.inc, o.seq}, nil, s.frames)
	}
	return nil
}

// secondHand reports whether a message from l's peer about another
// owner's run inc is to be dropped: this node has a link of its own to
// that run (its adjacency names it). The owner sends its neighbours all
// of its own first-hand, and nothing of it is relayed to them (see
// adjacent), so such a message is one that crossed the link's making
// (the owner's copy comes, or came, on its own link) or a forgery: a
// peer passing off records as another node's. In a whole mesh, where
// every owner is every node's neighbour, no node can change the records
// of another's current run; see below for what is left. r.mu is held.
func (r *Registry) secondHand(l *link, owner string, inc uint64) bool {
	if owner == l.peer {
		return false
	}
	// Only of the run linked here: a later run of the owner, relayed, may
	// be its restart while the old run's link hangs (that link goes within
	// the silent-peer bound), and is taken. So a peer can still claim a
	// neighbour restarted and hide its records for as long as it keeps
	// claiming so; records signed by their owners would close that.
	mine, ok := r.self.peers[owner]
	return ok && mine == inc
}

// want asks l's peer for a snapshot of an owner, once at a time.
func (r *Registry) want(l *link, id string) {
	if l.wanted[id] {
		return
	}
	f, err := encodeWant(id, r.cfg.MaxMessageBytes)
	if err != nil {
		return
	}
	l.wanted[id] = true
	l.enqueue(f)
}

// Relaying looked at every link for every state and change of another
// owner, and in a mesh that is whole, or nearly, found that the owner
// names every peer there (it sends them all it has itself): work in
// proportion to the peers, for nothing, on every node. So relay looks
// only at the peers of this node's adjacency that the owner's does not
// name (at the incarnation this node's names), found from the two
// adjacencies' bits (see uncoveredPeers); none, and it has nothing to
// do. While a mesh forms they grow fewer as the owner links with this
// node's peers, and a whole mesh has none. (They were kept as a set for
// each owner, updated on every change of either adjacency: while 100
// nodes formed a mesh, a tenth of all the work.)

// relay forwards what was just applied from src about o (one message's
// payload, or the frames of a snapshot) to each other peer that may lack
// it: not o itself, not o's neighbours (o sends them its changes and
// states directly; see adjacent), not peers known to have version v
// already, and, for a state, not peers that a neighbour of o relays it
// to first (see markLower).
func (r *Registry) relay(src *link, o *owner, records bool, v Rev, payload []byte, frames [][]byte) {
	marked := false // o's lower neighbours, marked for the first state that needs it
	// A peer that holds enough of o is not sent v: v itself, or, for a
	// state that only renews o (see renewLater), one that names this
	// node, its neighbour: the peer renews o by this node's link then.
	enough := v
	if !records && o.renewOnly && o.namedAt > 0 && r.neighbour(o) {
		enough = Rev{o.inc, o.namedAt}
	}
	// The peers o names it sends all itself; uncoveredPeers lists the
	// others (never o). The cheap tests go first: this runs for every owner
	// relayed and every peer, a hundred times a hundred and more while a
	// large mesh is partial.
	for _, c := range r.uncoveredPeers(o) {
		peer, p := c.id, c.o
		if src != nil && peer == src.peer {
			continue
		}
		for _, l := range r.links[peer] {
			// o's own adjacency first: in a mesh that is whole or
			// nearly, it names most peers.
			if !l.ready || r.announcesTo(o, l, p) || r.peerNames(l, o) {
				continue
			}
			if !records {
				if !marked {
					r.markLower(o)
					marked = true
				}
				if r.relayedBefore(l) {
					break // (a test of the peer, not of this link)
				}
			}
			k := l.knows(o)
			known := k.state
			if records {
				known = k.records
			}
			if known.Compare(enough) >= 0 {
				continue
			}
			if records {
				if frames == nil {
					frames = [][]byte{frameOf(payload)}
				}
				if c := r.credTo(l, o, v.Incarnation); c != nil {
					l.enqueue(c)
				}
				l.noteRecords(o, v.Incarnation, v.Seq)
				l.enqueue(frames...)
			} else {
				f, err := r.stateTo(o, known)
				if err != nil {
					r.log.Warn("registry: cannot encode state", "owner", o.id, "err", err)
					return
				}
				if c := r.credTo(l, o, v.Incarnation); c != nil {
					l.enqueue(c)
				}
				l.noteState(o, v.Incarnation, v.Seq)
				l.enqueue(f)
			}
			r.relayed.Add(1)
		}
	}
}

// peerRefOwner is a peer of this node's adjacency, and its owner here
// (nil: none known).
type peerRefOwner struct {
	id string
	o  *owner
}

// uncoveredPeers lists the peers of this node's adjacency (other than o)
// that o's does not name at the incarnation this node's names, each with
// its owner here (nil: none known), in a buffer the next call reuses.
// When every peer of this node's adjacency is an owner known here at the
// run it links (as good as always), those are the bits of this node's
// names that o's lack, less o: found a word at a time, with no look-up
// by id. r.mu is held.
func (r *Registry) uncoveredPeers(o *owner) []peerRefOwner {
	out := r.uncovBuf[:0]
	if r.linksCurrent() {
		for i := range r.self.names.without(o.names) {
			if p := r.byIdx[i]; p != o {
				out = append(out, peerRefOwner{p.id, p})
			}
		}
	} else {
		for peer, mine := range r.self.peers {
			if peer != o.id && o.peers[peer] != mine {
				out = append(out, peerRefOwner{peer, r.owners[peer]})
			}
		}
	}
	r.uncovBuf = out
	return out
}

// stateTo returns o's latest state as a frame for a peer known to hold
// its state at have: the delta it came as, when the peer holds the
// adjacency that delta changes (any beat from its base on names that
// one), else the whole state. r.mu is held.
func (r *Registry) stateTo(o *owner, have Rev) ([]byte, error) {
	if o.delta != nil && have.Incarnation == o.inc && have.Seq >= o.deltaBase {
		return o.delta, nil
	}
	return r.stateFrame(o)
}

// relayDelay is how long another owner's new state waits before it is
// relayed. While a mesh forms, nearly every state of o would be relayed to
// peers that o links with a moment later, and o's next state often
// follows within the delay: after it, only the newest is relayed, and
// only to peers o still does not announce. Third nodes then hear of a
// change of adjacency that much later; o's own peers, in a full mesh every
// node, hear it from o at once.
const relayDelay = 100 * time.Millisecond

// relayLater queues o's state, just applied, for relayStates: after
// relayDelay, or, for a state that only adds links (adds), after the
// window this node merges its own additions over, if that is longer (see
// mergeWindow). An addition is not urgent (see announce), and while a
// mesh forms o's next one is due within that window. A state queued
// already keeps the earlier of the two times. r.mu is held.
func (r *Registry) relayLater(o *owner, adds bool) {
	o.renewOnly = false
	d := relayDelay
	if adds {
		d = max(d, r.mergeWindow())
	}
	at := time.Now().Add(d)
	if due, ok := r.relayDue[o]; ok && !due.After(at) {
		return
	}
	r.relayDue[o] = at
	if r.relayNext.IsZero() || at.Before(r.relayNext) {
		r.relayNext = at
		r.relayTimer.Reset(d)
	}
}

// renewLater queues o's state, just applied, for relayStates to renew o
// on the peers that know it through relays: when this node is o's
// neighbour, only those that hold no state of o naming this node (see
// vouched); a relay queued already covers it. r.mu is held.
func (r *Registry) renewLater(o *owner) {
	if _, ok := r.relayDue[o]; ok {
		return
	}
	r.relayLater(o, false)
	o.renewOnly = true
}

// relayStates relays the newest state of each owner that relayLater
// queued and that is due, to the peers that lack it (see relay), and sets
// relayTimer for the next. r.mu is held.
func (r *Registry) relayStates() {
	now := time.Now()
	r.relayNext = time.Time{}
	for o, at := range r.relayDue {
		if at.After(now) {
			if r.relayNext.IsZero() || at.Before(r.relayNext) {
				r.relayNext = at
			}
			continue
		}
		delete(r.relayDue, o)
		if r.owners[o.id] == o && o.beat > 0 {
			r.relay(nil, o, false, Rev{o.inc, o.beat}, nil, nil)
		}
		o.renewOnly = false
	}
	if !r.relayNext.IsZero() {
		r.relayTimer.Reset(r.relayNext.Sub(now))
	}
}

// States are flooded to every node, and most of their copies are
// redundant: a node p that o has no link to hears o's new state from
// every node linked to both, and from every other node linked to p that
// had it relayed. So a state is relayed to p by one node only: the
// neighbour of o with the lowest id among those p announces too. It has
// the state first-hand from o and relays it; a node that is not o's
// neighbour (o's state does not name it) leaves p to it, and relays o's
// state to p only when p has no neighbour of o at all, as far as it
// knows. When that knowledge is out of date (the link between p and that
// neighbour just failed), p misses one state of o, and has o's next one
// (o renews it every Heartbeat while p is not its neighbour) through
// another node; records are relayed without this rule, since a missed
// change is only found at the next one.

// markLower marks, in r.lower, the neighbours of o that relay its state
// before this node, for relayedBefore: those whose ids sort below this
// node's, or all of them when this node is not one: o's names, less,
// when this node is one of them, the owners whose ids sort above it
// (r.above), and itself. (It was a loop over o's neighbours, resolved
// again whenever owners came or went: while 200 nodes formed a mesh in
// 90 s, a twentieth of all the work.) r.mu is held.
func (r *Registry) markLower(o *owner) {
	r.lower = append(r.lower[:0], o.names...)
	if !o.names.has(r.self.idx) {
		return
	}
	for w := range r.lower {
		if w < len(r.above) {
			r.lower[w] &^= r.above[w]
		}
	}
	r.lower.set(r.self.idx, false)
}

// relayedBefore reports whether l's peer p names one of the owners
// markLower marked (other than itself) as its neighbour, in its Hello or
// in its latest State (see peerNames): that node relays o's state to p.
// r.mu is held.
func (r *Registry) relayedBefore(l *link) bool {
	if l.helloPeers != nil {
		for id, inc := range l.helloPeers {
			if x := r.owners[id]; x != nil && x.inc == inc && r.lower.has(x.idx) {
				return true
			}
		}
		return false
	}
	po := r.owners[l.peer]
	return po != nil && po.names.intersects(r.lower) // (po never names itself)
}

// adjacent reports whether o and l's peer have a link of their own, as
// either's word says: o's State names the peer (announces), or the peer
// names o (peerNames). o then sends the peer its changes and states
// itself, and nothing of o is relayed to the peer nor sent in its sync.
// p is the owner of l's peer, if known here. r.mu is held.
func (r *Registry) adjacent(o *owner, l *link, p *owner) bool {
	return r.announcesTo(o, l, p) || r.peerNames(l, o)
}

// peerNames reports whether l's peer names o's current run as its
// neighbour: in its Hello, or in a State it issued after (see
// link.helloPeers). The peer's word is the freshest there is: while a
// mesh forms, o's State as this node holds it lags behind the links o
// makes. When the peer's link to o fails, its next State (a loss: sent at
// once) no longer names o, and what o's State says is relayed to it (see
// peerMoved). r.mu is held.
func (r *Registry) peerNames(l *link, o *owner) bool {
	if l.helloPeers == nil {
		p := r.owners[l.peer]
		return p != nil && p.inc == l.peerInc && p.names.has(o.idx)
	}
	inc, ok := l.helloPeers[o.id]
	return ok && inc == o.inc
}

// announces reports whether o's state names the run of l's peer at the
// other end of l as its neighbour. o then has a link of its own to that
// peer and sends it its changes and states itself: when that link fails,
// o's next state no longer names the peer, and that state, with all that
// follows, is relayed to it. One direction is enough, and during a
// mesh's formation, when links come up faster than states spread, it
// spares most of the relaying.
func announces(o *owner, l *link) bool {
	inc, ok := o.peers[l.peer]
	return ok && inc == l.peerInc
}

// announcesTo is announces, with p the owner of l's peer if known here:
// a test of a bit when p is at the run l reaches. r.mu is held.
func (r *Registry) announcesTo(o *owner, l *link, p *owner) bool {
	if p != nil && p.inc == l.peerInc {
		return o.names.has(p.idx)
	}
	return announces(o, l)
}

// shortcut reports whether u and v are both this node's neighbours,
// each with an edge to it: an edge between them carries no reachability
// that this node lacks without it. r.mu is held.
func (r *Registry) shortcut(u, v *owner) bool {
	return r.linked(r.self, u) && r.linked(r.self, v)
}

// bypassed reports whether every owner that o has an edge to is this
// node, or its neighbour with an edge to it: o's edges then carry no
// reachability that this node lacks without o. r.mu is held.
func (r *Registry) bypassed(o *owner) bool {
	for _, a := range r.neighbours(o) {
		x := a.o
		if x != r.self && a.inc == x.inc && r.linked(o, x) && !r.linked(r.self, x) {
			return false
		}
	}
	return true
}

// linked reports whether u and v both announce a link to each other's
// current incarnation: an edge of the graph liveness walks.
func (r *Registry) linked(u, v *owner) bool {
	return u.names.has(v.idx) && v.names.has(u.idx)
}
