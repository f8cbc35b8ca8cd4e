package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Serve runs the replication protocol with the directly linked node peer
// over conn, one stream of the link between them; the peer runs Serve on the
// other end with this node's id. Both ends first send what they know that
// the other lacks (Config.OnEvent then receives Event{Kind: Synced}), then
// push every change as it happens, their own and those they relay.
//
// conn must be a reliable, ordered byte stream (a yamux stream, a TCP
// connection, net.Pipe) on which a Read and a Write may run at once: Serve
// reads it from the calling goroutine and writes it from one goroutine of
// its own. Serve owns conn and closes it before returning; to stop, it sets
// a deadline in the past first when conn has SetDeadline (as net.Conn and
// yamux streams do), so a pending Read or Write returns at once, else it
// relies on Close to unblock them.
// Serve returns when conn fails or reaches EOF (nil for a clean EOF), when
// ctx ends (ctx.Err()), when the registry closes (ErrClosed), or when the
// peer breaks the protocol or the limits (an error wrapping ErrProtocol,
// ErrMessageTooLarge, ErrMetadataTooLarge or ErrTooManyRecords, logged at
// Warn; with Config.Identity, ErrForged, which wraps ErrProtocol, for a
// message its owner did not sign) or falls too far behind (ErrSlowPeer).
//
// Several Serve calls for the same peer may run at once (a link being
// replaced); the peer counts as linked while at least one has completed
// its handshake, or while it is held (PeerUp). An invalid peer id (empty, too long, this node's) returns
// ErrBadPeer at once.
//
// A linked peer's records never expire: its link stands for its liveness,
// and the peer sends its heartbeat over it only when this node relays it
// to others. The caller must notice a dead link (the mesh's keepalive
// does) and end conn, or call PeerDown, so that the peer stops counting
// as linked.
func (r *Registry) Serve(ctx context.Context, peer string, conn io.ReadWriteCloser) error {
	if peer == "" || len(peer) > MaxIDBytes || peer == r.cfg.ID {
		conn.Close()
		return fmt.Errorf("%w: %q", ErrBadPeer, peer)
	}
	l := newLink(peer, conn)
	l.self = r.cfg.ID
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	hello, err := encodeHello(r.cfg.ID, r.digest(), r.cfg.MaxMessageBytes) // (the digest is reused: encoded at once)
	if err != nil {
		r.mu.Unlock()
		conn.Close()
		return err
	}
	l.enqueue(hello)
	if f := r.credTo(l, r.self, r.self.inc); f != nil {
		l.enqueue(f) // ahead of anything this node signs
	}
	r.links[peer] = append(r.links[peer], l)
	r.serving.Add(1)
	r.mu.Unlock()
	defer r.serving.Done()

	// ctx's end aborts the link (Close aborts every link itself); no
	// goroutine waits for it.
	stopWatch := context.AfterFunc(ctx, l.abort)
	r.log.Debug("registry: link up", "peer", peer)

	err = r.readLoop(l)

	stopWatch()
	l.abort()
	l.stopWriter()
	r.mu.Lock()
	r.dropLink(l)
	closed := r.closed
	r.mu.Unlock()

	switch {
	case closed:
		err = ErrClosed
	case ctx.Err() != nil:
		err = ctx.Err()
	case l.failure() != nil:
		err = fmt.Errorf("registry: link to %s: %w", peer, l.failure())
		r.log.Warn("registry: peer too slow, link closed", "peer", peer)
	case errors.Is(err, io.EOF):
		err = nil
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrMessageTooLarge),
		errors.Is(err, ErrMetadataTooLarge), errors.Is(err, ErrTooManyRecords):
		r.log.Warn("registry: peer refused, link closed", "peer", peer, "err", err)
		err = fmt.Errorf("registry: link to %s: %w", peer, err)
	default: // readLoop returns only errors
		err = fmt.Errorf("registry: link to %s: %w", peer, err)
	}
	r.log.Debug("registry: link down", "peer", peer, "err", err)
	return err
}

// readLoop reads and applies messages until an error.
func (r *Registry) readLoop(l *link) error {
	fr := newFrameReader(l.conn, r.cfg.MaxMessageBytes) // its buffer is small: idle links are many; big frames bypass it
	var buf []byte
	var m message
	dec := decoder{maxMeta: r.cfg.MaxMetadataBytes, known: &r.ids}
	for {
		t, payload, frame, err := readFrame(fr, buf)
		if err != nil {
			return err
		}
		buf = frame
		if err := dec.decode(t, payload, &m); err != nil {
			return err
		}
		r.mu.Lock()
		err = r.handle(l, &m, frame)
		r.settle()
		r.mu.Unlock()
		if err != nil {
			return err
		}
		// A sync's big frames, and the digest or adjacency of a big
		// Hello or State, need not be held while the link idles: on
		// each of a 100-node mesh's 9900 link sides, they were most of
		// what it held (a 4 KiB frame, a digest of 100 entries).
		if cap(buf) > 1<<10 || l.taken {
			buf, l.taken = nil, false
		}
		m.trim()
	}
}

// handle applies one message from l's peer. payload is the raw message
// (its whole frame, as received), valid until the next read. r.mu is held.
func (r *Registry) handle(l *link, m *message, payload []byte) error {
	if r.closed {
		return nil
	}
	if !l.hello && m.typ != msgHello {
		return fmt.Errorf("%w: %s message before hello", ErrProtocol, m.typ)
	}
	if l.snap != nil && m.typ != msgSnap {
		return fmt.Errorf("%w: %s message inside a snapshot", ErrProtocol, m.typ)
	}
	switch m.typ {
	case msgHello:
		return r.onHello(l, m)
	case msgState:
		return r.onState(l, m, payload)
	case msgPut, msgDel:
		return r.onChange(l, m, payload)
	case msgSnap:
		return r.onSnap(l, m, payload)
	case msgSynced:
		if l.synced {
			return fmt.Errorf("%w: second synced", ErrProtocol)
		}
		l.synced = true
		r.log.Debug("registry: synced", "peer", l.peer)
		r.queueEvent(Event{Kind: Synced, Peer: l.peer, Time: time.Now()})
	case msgWant:
		r.onWant(l, m.owner)
	case msgCred:
		return r.onCred(l, m, payload)
	}
	return nil
}

// onHello checks the peer's Hello, makes it adjacent and queues our sync:
// every owner's records and state that its digest shows it lacks.
func (r *Registry) onHello(l *link, m *message) error {
	if l.hello {
		return fmt.Errorf("%w: second hello", ErrProtocol)
	}
	if m.proto != protoVersion {
		return fmt.Errorf("%w: peer speaks version %d, want %d", ErrProtocol, m.proto, protoVersion)
	}
	if m.node != l.peer {
		return fmt.Errorf("%w: peer says it is %q, expected %q", ErrProtocol, m.node, l.peer)
	}
	l.hello = true
	l.helloPeers = make(map[string]uint64, len(m.digest))
	l.knownSize = len(r.byIdx)
	for _, d := range m.digest {
		if d.owner == l.peer {
			l.peerInc, l.helloBeat = d.inc, d.beat
		}
		if d.neighbour {
			l.helloPeers[d.owner] = d.inc
		}
		o := r.owners[d.owner]
		if o != nil && (!d.neighbour || d.owner == l.peer || d.owner == r.self.id) {
			// Of an owner the peer is linked to, nothing is synced or
			// relayed to it (see adjacent), and should their link fail,
			// what is sent to it then is at worst what it has: in a whole
			// mesh that would be N entries on each of a node's N−1 links.
			// (Of an owner not known here, what the peer holds is noted
			// as it sends it: known is by owner.)
			l.note(o, peerKnows{records: Rev{d.inc, d.seq}, state: Rev{d.inc, d.beat}})
		}
		// A peer that restarted: its old incarnation is gone for good,
		// before it can look reachable again through this link.
		if d.owner == l.peer && o != nil && d.inc > o.inc {
			r.resetOwner(o, d.inc)
		}
	}
	if p := r.owners[l.peer]; p != nil && p.inc == l.peerInc && p.beat > l.helloBeat {
		l.helloPeers = nil // a State issued after the Hello came first, on another link
	}
	r.updateAdjacency(l.peer)
	if r.stateDue {
		// The merged state waits; the new peer gets one that names it now,
		// so that this node's records show there without delay.
		r.self.beat++
		if _, err := r.ownState(false); err != nil {
			return err
		}
	}
	var frames [][]byte
	p := r.owners[l.peer]
	for _, o := range r.owners {
		if o.id == l.peer || o.inc == 0 || (o.expired && o != r.self) {
			continue
		}
		if o != r.self && r.adjacent(o, l, p) {
			continue // o syncs the peer itself (see relay)
		}
		k := l.knows(o)
		// An owner that never had records (seq 0) has no snapshot to
		// send: its state says as much.
		if v := (Rev{o.inc, o.seq}); o.seq > 0 && v.Compare(k.records) > 0 && r.provable(o) {
			fs, err := r.snapFrames(o)
			if err != nil {
				return err
			}
			if c := r.credTo(l, o, o.inc); c != nil {
				frames = append(frames, c)
			}
			frames = append(frames, fs...)
			l.noteRecords(o, o.inc, o.seq)
		}
		if v := (Rev{o.inc, o.beat}); o.beat > 0 && v.Compare(k.state) > 0 {
			if o != r.self && k.state.Incarnation == o.inc && k.state.Seq > 0 {
				// The peer holds a state of this run. What it lacks, if
				// only links added, it has with the owner's next
				// heartbeat, relayed (see onState); a loss is relayed to
				// it as states are, unless it has it by then.
				if k.state.Seq < o.lossBeat {
					r.relayLater(o, false)
				}
				continue
			}
			f, err := r.stateFrame(o)
			if err != nil {
				return err
			}
			if c := r.credTo(l, o, o.inc); c != nil {
				frames = append(frames, c)
			}
			frames = append(frames, f)
			l.noteState(o, o.inc, o.beat)
		}
	}
	// The peer has this node's current state now, or had it already.
	l.selfAdj, l.selfIssued = r.self.adjAt, r.issued
	frames = append(frames, encodeSynced())
	l.enqueueSync(true, frames)
	l.ready = true
	// What the peer holds of itself and of this node is noted no more
	// (see untracked); often nothing else is left.
	if p != nil {
		l.forget(p)
	}
	l.forget(r.self)
	return nil
}

// PeerUp tells the registry that the caller has a link to peer, whether
// or not a Serve for it runs yet; PeerDown, that it no longer has. Between
// the two, the peer stays linked while its Serve calls come and go: a
// transport that replaces one link to a peer with another (a duplicate
// retired, whichever end closes it first) keeps the peer's records shown
// throughout, instead of withdrawing and re-announcing them. Calls pair
// up: the peer is held while more PeerUp than PeerDown calls have been
// made for it, so they may come in any order from any goroutine. Without
// them, a peer is linked while one of its Serve calls has said hello.
func (r *Registry) PeerUp(peer string) { r.holdPeer(peer, 1) }

// PeerDown ends what one PeerUp began; see PeerUp.
func (r *Registry) PeerDown(peer string) { r.holdPeer(peer, -1) }

// PeerGone tells the registry that the caller knows the run of peer that
// its links reached to be over for good (an address of it refused the
// connection: nothing listens there any more, as after kill -9). Its
// records go now, whatever other nodes' States still say of their links
// to it: other nodes free them as they learn the same, or as the losses
// of its last neighbours reach them, and a node that waited for all of
// those (as it must for a link that is only silent) waited on the
// slowest of the dead node's neighbours. A newer State of that run (it
// was not over after all) brings the records back, as after expiry;
// a later run is a new owner as ever. Call it before the PeerDown that
// ends the peer's hold.
func (r *Registry) PeerGone(peer string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	inc, ok := r.self.peers[peer]
	o := r.owners[peer]
	if r.closed || !ok || o == nil || o.inc != inc || o.expired {
		return
	}
	o.expired, o.gone = true, true
	r.dirty = true
	r.log.Debug("registry: owner gone", "owner", peer)
	r.recompute()
}

func (r *Registry) holdPeer(peer string, delta int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held[peer] += delta; r.held[peer] == 0 {
		delete(r.held, peer)
	}
	if !r.closed {
		r.updateAdjacency(peer)
		if r.dirty {
			r.recompute() // a link of this node's own (see walkGap)
		}
	}
}

// sortedPeer keeps r.selfSorted in step with r.self.peers after
// r.self.peers[peer] became inc (0: removed). While a mesh forms, this
// node issues a State of its own for each peer it links (see onHello),
// and sorting its adjacency for each was a thirtieth of the registry's
// work at 200 nodes. r.mu is held.
func (r *Registry) sortedPeer(peer string, inc uint64) {
	i, found := slices.BinarySearchFunc(r.selfSorted, peer, func(p peerRef, id string) int { return strings.Compare(p.id, id) })
	switch {
	case found && inc == 0:
		r.selfSorted = slices.Delete(r.selfSorted, i, i+1)
	case found:
		r.selfSorted[i].inc = inc
	case inc != 0:
		r.selfSorted = slices.Insert(r.selfSorted, i, peerRef{id: peer, inc: inc})
	}
}

// updateAdjacency makes this node's adjacency entry for peer follow its
// handshaken links (the newest incarnation among them), and announces a
// change. While the peer is held (PeerUp) or a link that replaces the last
// handshaken one has not said hello yet, the adjacency stays: a duplicate
// link retired by the mesh would otherwise withdraw and re-announce it,
// and every node would walk the whole graph twice for nothing. r.mu is
// held.
func (r *Registry) updateAdjacency(peer string) {
	var inc uint64
	linked, pending := false, r.held[peer] > 0
	for _, l := range r.links[peer] {
		if l.hello {
			linked = true
			inc = max(inc, l.peerInc)
		} else {
			pending = true
		}
	}
	old, had := r.self.peers[peer]
	if linked == had && inc == old || !linked && had && pending {
		return
	}
	if had {
		if o := r.owners[peer]; o != nil && o.inc == old {
			// Its link stood for its heartbeat up to now; from now on it
			// is renewed by heartbeats relayed by others.
			o.renewed = time.Now()
		}
	}
	r.adjGen++
	r.sortedPeer(peer, inc)
	if linked {
		r.self.peers[peer] = inc
		r.nameBit(r.self, peer, inc)
		r.self.adj = nil
		if had {
			r.dirty = true // the peer restarted: the edge to its old run is gone
		} else {
			r.grow(r.self, []string{peer})
		}
	} else {
		delete(r.self.peers, peer)
		r.nameBit(r.self, peer, 0)
		r.self.adj = nil
		o := r.owners[peer]
		if o == nil || o.inc == old && eligible(o) {
			r.dirty = true // (an edge to a run that left or is gone carried nothing)
		}
		if o != nil && o.inc == old && o.leaving {
			// Every node has the peer's leaving State, which frees its
			// records, and an edge to a run that left carries nothing:
			// the loss is not urgent. It waits for the window's upper
			// bound, merged with whatever else changes by then: its N−1
			// neighbours would otherwise each flood it at once, all
			// while the leave spreads.
			r.announceLater()
			return
		}
	}
	r.announce(had)
}

// announce issues a new state for a change of adjacency. A loss (a peer
// gone, or restarted: the edge to its old run is gone) is what frees a
// dead node's records everywhere: it goes at once, with any additions
// that wait. An addition is not urgent: the new peer has this node's
// state in its sync, and third nodes learn the new link from it, but
// none of them can use the link before it holds the new peer's state
// too, which is relayed to it a merging window after it is first heard
// (see relayLater). So an addition waits for that window, and is merged
// with whatever else changes by then (announceLater). Links come up in
// bursts, and each state is pushed to every peer: a node joining a mesh
// of N made each of the N issue a state at once to the N − 1 others, N²
// frames while it joined; a forming mesh links everyone to everyone.
// The heartbeat loop issues a merged state when stateTimer fires. r.mu
// is held.
func (r *Registry) announce(loss bool) {
	if r.closed {
		return
	}
	if loss {
		r.bumpState()
		return
	}
	r.announceLater()
}

// announceLater issues a new state for a change of adjacency that no
// node needs soon: when the merging window has passed, unless a state is
// due before. r.mu is held.
func (r *Registry) announceLater() {
	if r.closed || r.stateDue {
		return
	}
	r.stateDue = true
	// A little earlier at random: the nodes that linked with one peer at
	// one time (every node of a mesh that a node joins or leaves) would
	// otherwise all push their States at the same instant, N − 1 frames
	// each, and whatever else they do then waits behind them (a record
	// registered then took 20–25 ms, not 6–8, to show on all of 100).
	w := r.mergeWindow()
	r.stateTimer.Reset(w - rand.N(w/4+1))
}

// mergeWindow returns how long changes of adjacency that are not losses
// are merged into one new state (see announce). A state is pushed to
// every peer and costs each work in proportion to the size of the mesh,
// while an addition only delays what third nodes know of this node's
// links: the window grows with the number of owners known
// (coalescePerOwner each, at least coalesceMin; while a mesh forms, a
// node knows of the others long before it has linked with them) up to
// the heartbeat. r.mu is held.
func (r *Registry) mergeWindow() time.Duration {
	return max(coalesceMin, min(time.Duration(len(r.owners))*coalescePerOwner, r.cfg.Heartbeat))
}

// dropLink forgets an ended link; the last one of a peer makes it no
// longer adjacent. r.mu is held.
func (r *Registry) dropLink(l *link) {
	r.links[l.peer] = slices.DeleteFunc(r.links[l.peer], func(x *link) bool { return x == l })
	if len(r.links[l.peer]) == 0 {
		delete(r.links, l.peer)
	}
	r.updateAdjacency(l.peer)
	if r.dirty && !r.closed {
		// A link of this node's own: walked at once (see walkGap).
		r.recompute()
	}
}

// onWant answers a peer that missed changes of an owner with a snapshot of
// it (empty at version 0 when this node does not know the owner).
func (r *Registry) onWant(l *link, id string) {
	o := r.owners[id]
	if o == nil || o.inc == 0 || id == l.peer {
		f, _ := encodeSnap(id, 0, 0, nil, r.cfg.MaxMessageBytes)
		l.enqueue(f...)
		return
	}
	var frames [][]byte
	if c, _ := o.credOf(o.inc); c != nil && r.signing() {
		// Always: a peer that forgot the owner (expired) lacks it
		// though it was sent, and asks for the owner for want of it.
		frames = append(frames, c.frame)
		l.noteCred(o.id, o.inc)
	}
	if r.provable(o) {
		fs, err := r.snapFrames(o)
		if err != nil {
			r.log.Warn("registry: cannot encode snapshot", "owner", id, "err", err)
			return
		}
		frames = append(frames, fs...)
		l.noteRecords(o, o.inc, o.seq)
	} else {
		// Nothing this node holds of o's records is signed as it is
		// (see provable): the answer says so, and o's state follows.
		fs, _ := encodeSnap(id, 0, 0, nil, r.cfg.MaxMessageBytes)
		frames = append(frames, fs...)
	}
	if o.beat > 0 {
		if f, err := r.stateFrame(o); err == nil {
			frames = append(frames, f)
			l.noteState(o, o.inc, o.beat)
			if o == r.self {
				l.selfAdj, l.selfIssued = o.adjAt, r.issued
			}
		}
	}
	l.enqueue(frames...)
}

// digest lists what this node knows, for its Hello, and marks its
// neighbours: a neighbour it holds nothing of yet (its sync is on the way)
// is listed at version 0. r.mu is held.
func (r *Registry) digest() []digestEntry {
	// Into a buffer kept for the next Hello: made anew, it was an eighth
	// of what 200 nodes forming a mesh allocated.
	d := r.digestBuf[:0]
	for _, o := range r.owners {
		if o.inc == 0 || (o.expired && o != r.self) {
			continue
		}
		d = append(d, digestEntry{owner: o.id, inc: o.inc, seq: o.seq, beat: o.beat, neighbour: r.neighbour(o)})
	}
	for id, inc := range r.self.peers {
		if o := r.owners[id]; o == nil || o.inc == 0 || o.expired && o.inc == inc {
			d = append(d, digestEntry{owner: id, inc: inc, neighbour: true})
		}
	}
	r.digestBuf = d
	return d
}

// snapFrames encodes o's records. r.mu is held.
func (r *Registry) snapFrames(o *owner) ([][]byte, error) {
	recs := slices.Collect(maps.Values(o.records))
	return encodeSnapSigned(o.id, o.inc, o.seq, recs, o.recSig, r.cfg.MaxMessageBytes)
}

// provable reports whether o's records as this node holds them can go
// in a snapshot: always, unless owners sign (Config.Identity) and the
// owner's signature of them is not held: at seq 0 (none to send), or
// once it left (its records dropped here, its signature is of the set
// it had). r.mu is held.
func (r *Registry) provable(o *owner) bool {
	return !r.signing() || o.recSig != nil && !o.leaving
}

// stateFrame returns o's state as a whole State frame. r.mu is held.
func (r *Registry) stateFrame(o *owner) ([]byte, error) {
	if o == r.self && r.ownFrame != nil {
		return r.ownFrame, nil // as issued: the adjacency may have moved on since
	}
	if o.frame != nil {
		return o.frame, nil
	}
	peers := r.selfSorted
	if o != r.self {
		peers = make([]peerRef, 0, len(o.peers))
		for _, id := range slices.Sorted(maps.Keys(o.peers)) {
			peers = append(peers, peerRef{id: id, inc: o.peers[id]})
		}
	}
	lifetime := o.lifetime
	if o == r.self {
		lifetime = r.cfg.Lifetime
	}
	seq, sig := o.seq, []byte(nil)
	if r.signing() {
		if o == r.self {
			s, err := r.cfg.Identity.Sign(stateSigned(o.id, o.inc, o.seq, o.beat, o.leaving, o.adjAt, peers, lifetime))
			if err != nil {
				return nil, fmt.Errorf("registry: sign a state: %w", err)
			}
			o.stateSig, o.stateSeq = s, o.seq
		}
		// As its owner signed it: its records may have moved on since.
		seq, sig = o.stateSeq, o.stateSig
	}
	f, err := encodeStateOf(&message{typ: msgState, owner: o.id, inc: o.inc, seq: seq, beat: o.beat, leaving: o.leaving, lifetime: lifetime, base: o.adjAt, peers: peers, sig: sig}, r.cfg.MaxMessageBytes)
	if err == nil && o != r.self {
		o.frame = f
	}
	return f, err
}

// ownState encodes this node's state as it is now, for a new version of
// it (the caller raised its beat). An adjacency other than the one last
// issued (r.issued), or any when fresh is set, is issued at this beat: a
// beat names one adjacency, which deltas build on. r.mu is held.
func (r *Registry) ownState(fresh bool) ([]byte, error) {
	if fresh || !slices.Equal(r.selfSorted, r.issued) {
		r.self.adjAt = r.self.beat
		r.issued = append([]peerRef{}, r.selfSorted...) // (never nil)
	}
	r.ownFrame = nil
	f, err := r.stateFrame(r.self)
	r.ownFrame = f
	return f, err
}

// bumpState issues a new version of this node's state, with any merged
// change of adjacency that waits, and pushes it: to a peer that holds
// the adjacency of the last push (link.selfAdj), as a delta from it (in
// a forming mesh of N nodes, each state would otherwise carry N
// neighbours to N peers, and cost each peer work in proportion to N);
// to any other, whole. r.mu is held.
func (r *Registry) bumpState() {
	r.self.beat++
	r.stateDue = false
	// An adjacency issued since the last push (see onHello) went to some
	// peers only: this push issues it again, for all.
	whole, err := r.ownState(r.self.adjAt != r.pushedAt)
	if err != nil {
		r.log.Warn("registry: cannot encode own state", "err", err)
		return
	}
	var delta []byte
	// (A delta's adjacency is issued at its beat: with signatures, the
	// whole state's, which signs both forms.)
	if base := r.pushedAt; r.self.adjAt > base && r.self.adjAt == r.self.beat && !r.self.leaving {
		delta, err = encodeStateOf(&message{typ: msgState, owner: r.self.id, inc: r.self.inc, seq: r.self.seq, beat: r.self.beat,
			lifetime: r.cfg.Lifetime, base: base, delta: true, peers: stateDelta(r.pushed, r.selfSorted), sig: r.self.stateSig}, r.cfg.MaxMessageBytes)
		if err != nil {
			delta = nil // the whole state goes
		}
	}
	// A peer whose last State of this node was made for it alone (its
	// sync's, while this change waited: see onHello) holds another base:
	// it gets a delta from that one. In a join, every peer of the node
	// joining does.
	var own map[uint64][]byte
	for _, ls := range r.links {
		for _, l := range ls {
			if !l.ready {
				continue
			}
			l.noteState(r.self, r.self.inc, r.self.beat)
			switch {
			case delta != nil && l.selfAdj == r.pushedAt:
				l.enqueue(delta)
			case delta != nil && l.selfIssued != nil && l.selfAdj > 0 && l.selfAdj < r.self.adjAt:
				f, ok := own[l.selfAdj]
				if !ok {
					f, err = encodeStateOf(&message{typ: msgState, owner: r.self.id, inc: r.self.inc, seq: r.self.seq, beat: r.self.beat,
						lifetime: r.cfg.Lifetime, base: l.selfAdj, delta: true, peers: stateDelta(l.selfIssued, r.selfSorted), sig: r.self.stateSig}, r.cfg.MaxMessageBytes)
					if err != nil {
						f = whole
					}
					if own == nil {
						own = map[uint64][]byte{}
					}
					own[l.selfAdj] = f
				}
				l.enqueue(f)
			default:
				l.enqueue(whole)
			}
			l.selfAdj, l.selfIssued = r.self.adjAt, r.issued
		}
	}
	r.pushed, r.pushedAt = r.issued, r.self.adjAt
}

// stateDelta lists what changed from the adjacency from to to, both in
// the order of their ids: the neighbours added or at a new incarnation,
// and those removed (at incarnation 0), in that order too. (Adjacencies
// were maps, each issued one cloned: a twentieth of what 200 nodes
// forming a mesh allocated.)
func stateDelta(from, to []peerRef) []peerRef {
	var d []peerRef
	for len(from) > 0 || len(to) > 0 {
		switch {
		case len(to) == 0 || len(from) > 0 && from[0].id < to[0].id:
			d = append(d, peerRef{id: from[0].id})
			from = from[1:]
		case len(from) == 0 || to[0].id < from[0].id:
			d = append(d, to[0])
			to = to[1:]
		default:
			if from[0].inc != to[0].inc {
				d = append(d, to[0])
			}
			from, to = from[1:], to[1:]
		}
	}
	return d
}

// pushRecords sends a change of this node's own records to every peer
// whose sync is queued. It goes after any merged change of adjacency
// that waits, issued first: a peer that has a node's records has its
// links as of then. r.mu is held.
func (r *Registry) pushRecords(frame []byte) {
	if r.stateDue {
		r.bumpState()
	}
	o := r.self
	for _, ls := range r.links {
		for _, l := range ls {
			if l.ready {
				l.noteRecords(o, o.inc, o.seq)
				l.enqueue(frame)
			}
		}
	}
	r.busPush(frame)
}
