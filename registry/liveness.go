package registry

import (
	"math/bits"
	"slices"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
)

// Liveness, link-state style. Every node floods a versioned state of its
// own: its adjacency (the peers it has a handshaken link with), a leaving
// flag, and a beat counter. From the states it holds, each node computes
// which owners it can reach over links that both ends announce. Only the
// records of reachable, renewed, not leaving owners are visible: an owner
// whose every neighbour dropped it is freed at once; one link dropping
// between nodes still joined through others changes nothing.
//
// Renewal has two sources. A neighbour (an owner this node has a link to)
// is renewed by that link: the transport notices a dead link, and the
// neighbour leaves the adjacency. So is an owner that a neighbour has a
// link to (see vouched): the neighbour announces that link's loss at
// once. An owner farther away is renewed by its heartbeat, a new state it
// issues every Heartbeat and that its neighbours relay; one that stops
// renewing is freed after Lifetime. So an owner sends its heartbeat only
// when a node is more than two hops away, and only to the neighbours
// that relay it to a node that is not its neighbour (see beatTargets): in
// a mesh two hops across, nobody, and such a mesh, idle, sends nothing at
// all.

// heartbeatLoop renews this node's state and expires silent owners.
func (r *Registry) heartbeatLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	defer r.stateTimer.Stop()
	defer r.walkTimer.Stop()
	defer r.relayTimer.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-r.relayTimer.C:
			r.mu.Lock()
			if !r.closed {
				r.relayStates()
			}
			r.mu.Unlock()
			continue
		case <-r.walkTimer.C:
			r.mu.Lock()
			r.walkDue = false
			if !r.closed {
				r.settle()
			}
			r.mu.Unlock()
			continue
		case <-r.stateTimer.C:
			r.mu.Lock()
			if r.stateDue && !r.closed {
				r.bumpState()
			}
			r.mu.Unlock()
			continue
		case <-t.C:
		}
		r.mu.Lock()
		if !r.closed {
			r.tick(time.Now())
		}
		r.mu.Unlock()
	}
}

// tick is what each Heartbeat does: the heartbeat, unless a merged
// change of adjacency waits (it goes to every peer when its window ends,
// within a heartbeat, and is the heartbeat: issued now, it would
// only cut the window short); then expire silent owners. r.mu is held.
func (r *Registry) tick(now time.Time) {
	if !r.stateDue {
		r.heartbeat()
	}
	r.expire(now)
	r.renewNeighbours(now)
	// Only once adjacencies have not changed for a heartbeat: while they
	// do (a mesh forming), the tables are only looked through, and what
	// they keep meanwhile is never wrong (see forgetCovered).
	if key := [2]uint64{r.peersGen, r.adjGen}; key == r.tickKey && key != r.coveredKey {
		r.forgetCovered()
		r.coveredKey = key
	} else {
		r.tickKey = key
	}
	r.settle()
	r.busTick(now)
}

// forgetCovered drops, from each link's table of what its peer holds,
// the owners that now name the peer's run: nothing of theirs goes to it
// any more (they send it all themselves), and kept, that was N entries
// on each of a whole mesh's links. It was done as each State arrived,
// for every change of adjacency and link of the peer named, a million
// times while 100 nodes formed a mesh; once a heartbeat, it looks only
// at the tables that hold anything (a whole mesh's links hold none),
// and only once adjacencies stand still (see tick): while 200 nodes
// formed a mesh in 90 s, looking through every link's table every
// heartbeat was a fiftieth of all the work. What a table keeps of an
// owner that names the peer is never read meanwhile (relay and the sync
// skip the owner's neighbours first) and is true: the peer had it.
// r.mu is held.
func (r *Registry) forgetCovered() {
	for id, ls := range r.links {
		p := r.owners[id]
		for _, l := range ls {
			if l.knownCount == 0 || p == nil || p.inc != l.peerInc {
				continue
			}
			// (A table may be longer than the owners' indices; forget
			// drops it when it empties.)
			for i := 0; i < min(len(l.known), len(r.byIdx)); i++ {
				if o := r.byIdx[i]; l.known[i].used && o.names.has(p.idx) {
					l.forget(o)
				}
			}
		}
	}
}

// renewNeighbours queues, every half of its lifetime, the state of each
// neighbour that names this node for the peers that are not linked to it
// (see renewLater): a peer that holds none that names this node, or
// another neighbour of the owner, cannot have it renewed by a link (see
// vouched), and the owner sends no heartbeat when all its non-neighbours
// have a neighbour of its in common with it (see beatTargets). r.mu is
// held.
func (r *Registry) renewNeighbours(now time.Time) {
	for _, o := range r.owners {
		if o.namedAt == 0 || o.leaving || !r.neighbour(o) || len(r.uncoveredPeers(o)) == 0 {
			continue
		}
		if now.Sub(o.relayedAt) >= r.lifetimeOf(o)/2 {
			r.renewLater(o)
			o.relayedAt = now
		}
	}
}

// heartbeat renews this node's state with the nodes that know it only
// through relays: it issues a new beat and sends it to the neighbours
// that relay it to one of them (see beatTargets), and to no other. Those
// that are not sent it are neighbours, renewed by their link; when none
// relays, nothing is issued. r.mu is held.
func (r *Registry) heartbeat() {
	to := r.beatTargets()
	due := false
	for peer := range to {
		if slices.ContainsFunc(r.links[peer], func(l *link) bool { return l.ready }) {
			due = true
			break
		}
	}
	if !due {
		return
	}
	r.self.beat++
	f, err := r.ownState(false)
	if err != nil {
		r.log.Warn("registry: cannot encode own state", "err", err)
		return
	}
	for peer := range to {
		for _, l := range r.links[peer] {
			if l.ready {
				l.noteState(r.self, r.self.inc, r.self.beat)
				l.enqueue(f)
				l.selfAdj, l.selfIssued = r.self.adjAt, r.issued
			}
		}
	}
}

// beatTargets returns the neighbours that relay this node's heartbeat
// first-hand, as the states this node holds say (see markLower): for each
// owner that is not a neighbour, the neighbour with the lowest id among
// those its state names, if any (owners farther away have the heartbeat
// relayed on by those); and, as they may relay it too, the neighbours
// whose state is not known yet, and those whose state names a node that
// is not a neighbour and whose own state is not known. In a full mesh,
// none. The set is found again when an owner's adjacency, this node's, or
// the owners known have changed. r.mu is held.
func (r *Registry) beatTargets() map[string]bool {
	key := [3]uint64{r.peersGen, r.adjGen, r.ownersGen}
	if r.beatTo != nil && r.beatKey == key {
		return r.beatTo
	}
	if r.beatTo == nil {
		r.beatTo = map[string]bool{}
	}
	clear(r.beatTo)
	r.beatKey = key
	far := false // an owner that does not renew this node by a neighbour's link
	current := r.linksCurrent()
	for _, x := range r.owners {
		if x == r.self || x.beat == 0 || x.leaving || r.neighbour(x) {
			continue
		}
		if first := r.firstShared(x, current); first != "" {
			r.beatTo[first] = true
		}
		far = far || !r.sharedNeighbour(x, true)
	}
	for id, inc := range r.self.peers {
		q := r.owners[id]
		if q == nil || q.beat == 0 || q.inc != inc {
			r.beatTo[id] = true
			far = true
			continue
		}
		if r.beyond(q, current) {
			r.beatTo[id] = true
			far = true
		}
	}
	if !far {
		// Every owner this node is not linked to has a link to one of
		// its neighbours, which renews this node there (see vouched):
		// no heartbeat is needed.
		clear(r.beatTo)
	}
	return r.beatTo
}

// neighbour reports whether this node has a link to o's current
// incarnation (its adjacency names it): the link's liveness stands for
// o's heartbeat. r.mu is held.
func (r *Registry) neighbour(o *owner) bool { return r.self.names.has(o.idx) }

// selfLinks reports whether this node's adjacency names run inc of id,
// and returns the owner of id known here (nil: none): a bit for the
// owner's current run, a look-up for any other. It walks an adjacency's
// map, not neighbours: that would keep a resolved adjacency of every
// owner for good, 2 KiB per link side in a whole mesh of a hundred.
// r.mu is held.
func (r *Registry) selfLinks(id string, inc uint64) (p *owner, mine bool) {
	p = r.owners[id]
	if p != nil && inc == p.inc {
		return p, r.self.names.has(p.idx)
	}
	have, ok := r.self.peers[id]
	return p, ok && have == inc
}

// linksCurrent reports whether every run this node's adjacency names is
// its owner's current one here (as good as always: a peer that restarts
// is relinked at its new run). The names bits then say all that the
// adjacency's map does, and the heartbeat's targets are found from them
// (firstShared, beyond): while 200 nodes formed a mesh in 90 s, looking
// up by id every entry of every owner's adjacency was a fortieth of all
// the work. r.mu is held.
func (r *Registry) linksCurrent() bool {
	return r.self.names.count() == len(r.self.peers)
}

// firstShared returns, of the owners that x names and this node has a
// link to, the one with the lowest id ("" if none): it relays this
// node's heartbeat to x first-hand (see markLower). current is
// linksCurrent's answer. r.mu is held.
func (r *Registry) firstShared(x *owner, current bool) string {
	first := ""
	if !current {
		for id, inc := range x.peers {
			if _, mine := r.selfLinks(id, inc); mine && (first == "" || id < first) {
				first = id
			}
		}
		return first
	}
	for i := range x.names.common(r.self.names) {
		if id := r.byIdx[i].id; first == "" || id < first {
			first = id
		}
	}
	return first
}

// beyond reports whether q, this node's neighbour, names a run that this
// node has no link to and holds no current state of: q's link to it is
// all this node knows of it, and this node's heartbeat is relayed there
// through q (see beatTargets). current is linksCurrent's answer. r.mu is
// held.
func (r *Registry) beyond(q *owner, current bool) bool {
	if current && q.names.count() == len(q.peers) {
		// Every run q names is a current one here: those this node has
		// no link to are q's bits that it lacks.
		for i := range q.names.without(r.self.names) {
			if p := r.byIdx[i]; p != r.self && p.beat == 0 {
				return true
			}
		}
		return false
	}
	for pid, pinc := range q.peers {
		p, mine := r.selfLinks(pid, pinc)
		if p == r.self || mine {
			continue
		}
		if p == nil || p.beat == 0 || p.inc != pinc {
			return true
		}
	}
	return false
}

// expire marks owners not renewed within Lifetime as expired, and forgets
// owners that have been expired and invisible for another Lifetime (their
// versions are kept that long so late duplicates are still recognised).
// A neighbour is renewed by its link, and a neighbour's neighbour by
// theirs (see vouched): neither expires, unless the transport said its
// run is over (PeerGone): a neighbour that has not noticed yet must not
// bring it back. r.mu is held.
func (r *Registry) expire(now time.Time) {
	for id, o := range r.owners {
		if o == r.self {
			continue
		}
		if !o.gone && (r.neighbour(o) || r.vouched(o)) {
			o.renewed = now
			if o.expired {
				o.expired = false
				r.dirty = true
			}
			continue
		}
		age := now.Sub(o.renewed)
		lifetime := r.lifetimeOf(o)
		// A process that runs its timers late (a machine overloaded, a
		// hundred nodes forming in one process) reads and relays the
		// heartbeats late too: it does not judge others by them until it
		// keeps time again. Expiring owners then only fed the load.
		lifetime = lag.Stretch(lifetime)
		if !o.expired && age > lifetime {
			o.expired = true
			r.dirty = true
			r.log.Debug("registry: owner expired", "owner", id)
		}
		if o.expired && !o.live && age > 2*lifetime {
			r.forgetIdx(o)
			delete(r.owners, id)
			r.ids.remove(id)
			r.ownersGen++
		}
	}
}

// vouched reports whether a neighbour of this node has a link to o's
// current run, as both their states say: that link renews o here as this
// node's own would (the neighbour announces its losses at once, and
// this node's link to it is renewed by the transport). In a mesh two hops
// across, or forming, no owner depends on heartbeats and relays to stay
// alive. r.mu is held.
func (r *Registry) vouched(o *owner) bool { return r.sharedNeighbour(o, false) }

// sharedNeighbour reports whether a neighbour z of this node has a link
// to o's current run, as both their states say; with mutual, z's state
// names this node too, so that o has this node renewed by z's link as
// well (see beatTargets). r.mu is held.
func (r *Registry) sharedNeighbour(o *owner, mutual bool) bool {
	// The owners o names at their current runs that this node names
	// too: the two names bitsets' common bits.
	for i := range o.names.common(r.self.names) {
		z := r.byIdx[i]
		if eligible(z) && z.names.has(o.idx) && (!mutual || z.names.has(r.self.idx)) {
			return true
		}
	}
	return false
}

// lifetimeOf returns how long o's records live unrenewed: the lifetime
// it announced, or this node's.
func (r *Registry) lifetimeOf(o *owner) time.Duration {
	if o.lifetime > 0 {
		return o.lifetime
	}
	return r.cfg.Lifetime
}

// walkGap spaces the whole walks of the graph that other nodes' states
// call for. The first such loss after a quiet spell is walked at once;
// the losses that follow within walkGap are walked together at its end.
// When links fail in numbers (a loaded machine, a switch rebooting) every
// state that drops one would otherwise cost every node a whole walk, and
// with many nodes in one process those walks were what kept it loaded.
// A link of this node's own that drops is walked at once (dropLink): a
// node killed, its records go at once.
const walkGap = 10 * time.Millisecond

// walkGapMax bounds what a process's lateness adds to walkGap.
const walkGapMax = time.Second

// settle walks the whole graph if a loss calls for it (r.dirty): now,
// or when walkGap has passed since the last walk. r.mu is held.
func (r *Registry) settle() {
	if !r.dirty || r.walkDue {
		return
	}
	// A process running late (internal/lag) spaces them by its lateness
	// too, up to walkGapMax: what they find comes that late anyway, and
	// with a whole mesh's worth of nodes in it, losses every few
	// milliseconds made each node walk a hundred times a second.
	gap := walkGap + min(lag.Current(), walkGapMax)
	if since := time.Since(r.walked); since < gap {
		r.walkDue = true
		r.walkTimer.Reset(gap - since)
		return
	}
	r.recompute()
}

// recompute finds the owners reachable from this node and shows or hides
// their records accordingly. r.mu is held.
func (r *Registry) recompute() {
	r.dirty = false
	r.walked = time.Now()
	for _, o := range r.owners {
		o.reached = false
	}
	r.spread(r.self)
	for _, o := range r.owners {
		if o != r.self {
			r.setLive(o, o.reached)
		}
	}
}

// grow extends reachability over the links u newly announces (peers
// added): when one end of a now complete edge is reachable and the other
// not, everything the other reaches becomes reachable. Nothing becomes
// unreachable by adding links, so no whole walk is needed. When one is
// due anyway (r.dirty), grow leaves it to that. r.mu is held.
func (r *Registry) grow(u *owner, added []string) (grew bool) {
	if r.dirty {
		return true
	}
	for _, id := range added {
		v := r.owners[id]
		// An edge between two owners both reached, or both not, makes
		// nothing reachable: in a mesh that is whole, or nearly, every
		// edge added, and the cheapest test first.
		if v == nil || v.reached == u.reached || !eligible(v) || !r.linked(u, v) {
			continue
		}
		switch {
		case u.reached && !v.reached:
			r.spread(v)
			grew = true
		case v.reached && !u.reached:
			r.spread(u)
			grew = true
		}
	}
	return grew
}

// spread marks from reachable, and every owner reachable from it that is
// not marked yet, showing their records. r.mu is held.
func (r *Registry) spread(from *owner) {
	from.reached = true
	if from != r.self {
		r.setLive(from, true)
	}
	queue := append(r.queue[:0], from)
	// The owners u names at their current runs are its names bits: no
	// look-up by id (a walk after a loss resolved every owner's
	// adjacency again by id, and allocated it: most of the work of a
	// mesh of a hundred when one of them died). Of those, only the ones
	// the walk has not done with (walkSeen: reached, or unable to be)
	// are looked at: in a whole mesh, none past this node's own.
	seen := &r.walkSeen
	clear(*seen)
	seen.set(from.idx, true)
	for i := 0; i < len(queue); i++ {
		u := queue[i]
		for w, word := range u.names {
			if w < len(*seen) {
				word &^= (*seen)[w]
			}
			for word != 0 {
				idx := w<<6 | bits.TrailingZeros64(word)
				word &= word - 1
				v := r.byIdx[idx]
				switch {
				case v.reached || !eligible(v):
					seen.set(idx, true)
				case v.names.has(u.idx): // else v does not announce u: no edge
					seen.set(idx, true)
					v.reached = true
					r.setLive(v, true)
					queue = append(queue, v)
				}
			}
		}
	}
	clear(queue)
	r.queue = queue[:0]
}

// neighbours returns the owners u announces as its peers (those known
// here), resolved once for each change of u's peers or of the owners.
// r.mu is held.
func (r *Registry) neighbours(u *owner) []adjRef {
	if u.adj != nil && u.adjGen == r.ownersGen {
		return u.adj
	}
	adj := u.adj[:0]
	for id, inc := range u.peers {
		if o := r.owners[id]; o != nil {
			adj = append(adj, adjRef{o, inc})
		}
	}
	if adj == nil {
		adj = []adjRef{}
	}
	u.adj, u.adjGen = adj, r.ownersGen
	return adj
}

// eligible reports whether o's own state lets it be reachable: known,
// renewed, not leaving.
func eligible(o *owner) bool {
	return o.beat != 0 && !o.leaving && !o.expired
}
