package mesh

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/sites"
)

// Members of other sites (docs/sites.md, "Messages between sites";
// docs/protocol.md, "Across sites"): the nodes this one hears over NATS
// and not over links, as the registry says (its RemoteUp and
// RemoteDown). Send, SendMany and Broadcast reach them over NATS with
// the guarantees of a link (delivery.go): this node numbers its frames
// to each (window), publishes them in envelopes (wire.Envelope;
// remote_write.go), keeps them until acknowledged, and publishes them
// again when no acknowledgement comes in time or the connection to NATS
// is made again; the receiver delivers each once, in order (inbound;
// remote_read.go). A frame queued for several members of one site goes
// out once, on the site's subject, numbered for each.

// remote is one run of a member of another site.
type remote struct {
	set      *remoteSet
	id, site string
	inc      uint64
	observer bool
	key      uint64 // wire.NodeKey(id, inc)

	// Guarded by set.mu. The window's unacked holds every frame
	// numbered for the member: those before pub were published, at
	// least once; the others wait for the writer.
	window
	pub        uint64 // number of the next frame to publish
	pubBytes   int    // bytes of the frames from acked to pub
	recovering bool   // published again from acked: at most resendBytes ahead of acked until caught up
	rto        time.Duration
	since      time.Time // when what is published and unacknowledged last moved
	// The round trip to the member, from a publish to the
	// acknowledgement that covers it: srtt, smoothed, from one frame
	// timed at a time (timed, published at timedAt), never one
	// published again (its acknowledgement may be the first one's).
	srtt     time.Duration
	timing   bool
	timed    uint64
	timedAt  time.Time
	ack      bool        // an acknowledgement of its frames is due
	linger   *time.Timer // it left with frames unacknowledged: until its RemoteDown (down)
	renewed  time.Time   // when followed last started a later epoch
	dirty    bool        // listed in set.dirty
	partHeld int         // bytes of part, counted in set.partBytes

	in   inbound // what arrived from it
	part partial // a frame arriving in parts (the reader's alone)
}

// remoteSet is a node's messaging with the members of other sites over
// its connection to NATS (Config.NATS); nil without it.
type remoteSet struct {
	n      *Node
	bus    *sites.Bus
	key    uint64 // this node's wire.NodeKey (set by start)
	run    uint64 // this node's run, its registry's incarnation (set by start)
	siteB  []byte // this node's site, and id, for envelopes
	idB    []byte
	wake   chan struct{} // the writer has work (capacity 1)
	epochs atomic.Uint64 // the last epoch given a member

	mu        sync.Mutex
	byID      map[string]*remote
	leaving   map[string]*remote   // members that left with frames unacknowledged, for a last acknowledgement (down)
	dirty     []*remote            // with frames to publish or an acknowledgement due
	flight    map[*remote]struct{} // with frames published and not acknowledged
	marks     map[string]recvMark  // of members that went (delivery.go)
	acked     chan struct{}        // closed and replaced when frames are acknowledged or dropped while draining
	draining  bool                 // drain waits on acked
	flushed   chan struct{}        // closed by the writer once it published what was due when it took it (flushAcks)
	partBytes int                  // of frames arriving in parts, of all members
	closed    bool

	// The reader's (remote_read.go).
	env     wire.Envelope
	msgs    [][]byte
	warnAt  time.Time
	dropped atomic.Uint64 // envelopes dropped: not this cluster's, malformed, from no member

	resent atomic.Uint64 // times frames were published again (the writer's go-backs)
	forged atomic.Uint64 // times a member followed an epoch this node never used (followed)
}

// Bounds of the messaging across sites.
const (
	// resendAfter is how long frames published to a member may go
	// unacknowledged before they are published again; it doubles, up to
	// resendAfterMax, while none is.
	resendAfter    = 250 * time.Millisecond
	resendAfterMax = 2 * time.Second
	// resendBytes bounds what is published again ahead of the member's
	// acknowledgements: a member that is gone costs that much NATS
	// traffic a resendAfterMax, not its whole window.
	resendBytes = 256 << 10
	// maxPartBytes bounds the frames arriving in parts, of all members.
	maxPartBytes = 64 << 20
	// maxRemoteMarks bounds the recvMarks of members that went.
	maxRemoteMarks = 4096
)

func newRemoteSet(n *Node, bus *sites.Bus) *remoteSet {
	s := &remoteSet{
		n:       n,
		bus:     bus,
		siteB:   []byte(n.cfg.Site),
		idB:     []byte(n.id),
		wake:    make(chan struct{}, 1),
		byID:    make(map[string]*remote),
		leaving: make(map[string]*remote),
		flight:  make(map[*remote]struct{}),
		marks:   make(map[string]recvMark),
		acked:   make(chan struct{}),
	}
	// Epochs rise within a run from a random start: an acknowledgement
	// names no run of the node it acknowledges, so one meant for an
	// earlier run of this node (late, or replayed by a NATS user) must
	// not name an epoch of this one.
	s.epochs.Store(rand.Uint64() >> 1)
	return s
}

// start starts the writer and the reader, once the node's registry has
// its run.
func (s *remoteSet) start(run uint64) {
	s.run, s.key = run, wire.NodeKey(s.n.id, run)
	s.n.wg.Add(2)
	go s.writeLoop()
	go s.readLoop()
}

// registryEvent takes the registry's word that a member of another site
// came (RemoteUp) or went (RemoteDown).
func (s *remoteSet) registryEvent(e registry.Event) {
	if e.Kind == registry.RemoteUp {
		s.up(e.Peer, e.Site, e.Inc, e.Observer)
	} else {
		s.down(e.Peer, e.Inc, e.Err)
	}
}

// up makes id, of site, its run inc, a member.
func (s *remoteSet) up(id, site string, inc uint64, observer bool) {
	r := &remote{set: s, id: id, site: site, inc: inc, observer: observer, key: wire.NodeKey(id, inc), window: newWindow(), rto: resendAfter}
	r.epoch = s.epochs.Add(1) // rising: a receiver tells an old epoch's late envelope from a new one
	r.in.soon, r.in.wake = s.n.cfg.SendQueueBytes/4, func() { s.ackDue(r) }
	s.mu.Lock()
	last := s.leaving[id]
	s.mu.Unlock()
	s.finish(last) // its last run's RemoteDown first
	s.mu.Lock()
	if s.closed || s.byID[id] != nil {
		// Closing; or the registry's events of one id come in order
		// (a run's RemoteDown before the next run's RemoteUp).
		s.mu.Unlock()
		return
	}
	if m, ok := s.marks[id]; ok {
		delete(s.marks, id)
		r.in.resume(m, inc)
	}
	s.byID[id] = r
	s.mu.Unlock()
	s.n.events.publish(Event{Kind: RemoteUp, Peer: id, Site: site, Observer: observer})
	s.n.log.Debug("member of another site up", "peer", id, "site", site)
}

// down ends id's run inc as a member: the frames it did not acknowledge
// are dropped, and counted in its RemoteDown event. A member that left
// (err nil) with frames published and not acknowledged lingers, unlisted,
// until it acknowledges them or leaveLinger: it published its
// acknowledgements before it left (drain), but they come on another
// subject than its leaving Beat, and may be read after it.
func (s *remoteSet) down(id string, inc uint64, err error) {
	s.mu.Lock()
	r := s.byID[id]
	if r == nil || r.inc != inc {
		s.mu.Unlock()
		return
	}
	delete(s.byID, id)
	if err == nil && (r.pub > r.acked || r.recovering) && !s.closed {
		r.window.stop() // Send to it fails; acknowledgements still count
		delete(s.flight, r)
		s.leaving[id] = r
		r.linger = time.AfterFunc(leaveLinger, func() { s.finish(r) })
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.gone(r, err)
}

// leaveLinger bounds how long a member that left is waited for to
// acknowledge what it had (down).
const leaveLinger = 250 * time.Millisecond

// finish ends r, which left and lingers (nil: none), at once.
func (s *remoteSet) finish(r *remote) {
	if r == nil {
		return
	}
	s.mu.Lock()
	if s.leaving[r.id] != r {
		s.mu.Unlock()
		return // ended already
	}
	delete(s.leaving, r.id)
	r.linger.Stop()
	s.mu.Unlock()
	s.gone(r, nil)
}

// gone drops r's frames, keeps what arrived from it (a recvMark), and
// says it went.
func (s *remoteSet) gone(r *remote, err error) {
	s.mu.Lock()
	undelivered := s.stopLocked(r)
	keepMark(s.marks, r.id, r.in.mark(r.inc, time.Now()), maxRemoteMarks)
	s.mu.Unlock()
	id := r.id
	s.n.events.publish(Event{Kind: RemoteDown, Peer: id, Site: r.site, Err: err, Undelivered: undelivered, Observer: r.observer})
	if undelivered > 0 {
		s.n.log.Warn("member of another site down with messages undelivered", "peer", id, "site", r.site, "undelivered", undelivered, "err", err)
	} else {
		s.n.log.Debug("member of another site down", "peer", id, "site", r.site, "err", err)
	}
}

// stopLocked stops r: its frames are dropped, those waiting for room
// fail. It returns how many of the frames were messages. s.mu is held.
func (s *remoteSet) stopLocked(r *remote) int {
	r.window.stop()
	undelivered := countMessages(r.unacked)
	r.unacked, r.queued, r.pubBytes = nil, 0, 0
	r.pub = r.acked
	delete(s.flight, r)
	s.partBytes -= r.partHeld
	r.partHeld = 0
	r.in.stop()
	s.freedLocked()
	return undelivered
}

// freedLocked tells drain, if it waits, that frames were acknowledged or
// dropped. s.mu is held.
func (s *remoteSet) freedLocked() {
	if s.draining {
		close(s.acked)
		s.acked = make(chan struct{})
	}
}

// close stops every member's timers: the node is closing, its
// connection to NATS closed.
func (s *remoteSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, r := range s.byID {
		s.stopLocked(r)
	}
	for id, r := range s.leaving {
		r.linger.Stop()
		s.stopLocked(r)
		delete(s.leaving, id)
	}
}

// lookup splits ids into the members among them and the others.
func (s *remoteSet) lookup(ids []string) (members []*remote, others []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if r := s.byID[id]; r != nil {
			members = append(members, r)
		} else {
			others = append(others, id)
		}
	}
	return members, others
}

// members returns the members that do not only observe, but those
// linked reports (while the registry hands a member of another site
// linked by hand over to its links, it is both for up to a Heartbeat).
func (s *remoteSet) members(linked func(id string) bool) []*remote {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*remote, 0, len(s.byID))
	for _, r := range s.byID {
		if !r.observer && (linked == nil || !linked(r.id)) {
			out = append(out, r)
		}
	}
	return out
}

// list describes the members that do not only observe, sorted by site
// and id.
func (s *remoteSet) list() []Peer {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil // the node closed: it reaches nobody
	}
	var out []Peer
	for _, r := range s.members(nil) {
		out = append(out, Peer{ID: r.id, Site: r.site, Remote: true})
	}
	slices.SortFunc(out, func(a, b Peer) int {
		if c := strings.Compare(a.Site, b.Site); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// siteOf returns the site of member id.
func (s *remoteSet) siteOf(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.byID[id]; r != nil {
		return r.site, true
	}
	return "", false
}

// enqueue queues frame for each of rs, waiting for room as a linked
// peer's enqueue does (Config.SendQueueBytes, with what the member has
// not acknowledged). Members that fit are queued together, before the
// writer looks: a frame for several members of one site goes out once.
// A member that went meanwhile is skipped and reported in gone.
func (s *remoteSet) enqueue(ctx context.Context, rs []*remote, frame []byte) (gone []error, err error) {
	limit := s.n.cfg.SendQueueBytes
	var wait []*remote
	s.mu.Lock()
	for _, r := range rs {
		if room := s.addLocked(r, frame, limit, &gone); room != nil {
			wait = append(wait, r)
		}
	}
	s.mu.Unlock()
	s.signal()
	for _, r := range wait {
		for {
			s.mu.Lock()
			room := s.addLocked(r, frame, limit, &gone)
			s.mu.Unlock()
			if room == nil {
				break
			}
			select {
			case <-room:
			case <-ctx.Done():
				return gone, ctx.Err()
			}
		}
		s.signal()
	}
	return gone, nil
}

// addLocked queues frame for r when it has room within limit, or notes r
// in gone when it went; else it returns the channel closed once r has
// room. s.mu is held.
func (s *remoteSet) addLocked(r *remote, frame []byte, limit int, gone *[]error) <-chan struct{} {
	if r.stopped {
		*gone = append(*gone, unknownPeer(r.id))
		return nil
	}
	if ok, room := r.admits(len(frame), limit); !ok {
		return room
	}
	r.unacked = append(r.unacked, frame)
	r.queued += len(frame)
	s.markLocked(r)
	s.n.stats.sent(frame)
	return nil
}

// markLocked lists r for the writer. s.mu is held.
func (s *remoteSet) markLocked(r *remote) {
	if !r.dirty {
		r.dirty = true
		s.dirty = append(s.dirty, r)
	}
}

// signal tells the writer there is work.
func (s *remoteSet) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// resendAfter is how long r's frames may go unacknowledged before they
// are published again: twice the round trip, plus the receiver's wait
// before it acknowledges, within resendAfter and resendAfterMax. A fixed
// 250 ms published every burst twice on a path slower than that (sites
// across a WAN). s.mu is held.
func (r *remote) resendAfter() time.Duration {
	return min(max(2*r.srtt+ackDelay, resendAfter), resendAfterMax)
}

// ackDue notes that r is due an acknowledgement of its frames.
func (s *remoteSet) ackDue(r *remote) {
	s.mu.Lock()
	if r.stopped {
		s.mu.Unlock()
		return
	}
	r.ack = true
	s.markLocked(r)
	s.mu.Unlock()
	s.signal()
}

// acknowledged takes r's acknowledgement of this node's frames of epoch
// before next: they are dropped, their room freed, and r's resend clock
// starts again.
func (s *remoteSet) acknowledged(r *remote, epoch, next uint64) {
	s.mu.Lock()
	before := r.queued
	k := r.window.acknowledge(epoch, next, int(r.pub-r.acked))
	if k == 0 {
		s.mu.Unlock()
		return
	}
	r.pubBytes -= before - r.queued
	now := time.Now()
	if r.timing && r.acked > r.timed {
		r.timing = false
		if sample := now.Sub(r.timedAt); r.srtt == 0 {
			r.srtt = sample
		} else {
			r.srtt += (sample - r.srtt) / 8
		}
		r.rto = r.resendAfter()
	}
	// Without a new sample (what is acknowledged went again), a wait
	// doubled since stays, until a frame published once is (Karn's): a
	// path slower than the estimate would otherwise never be measured.
	r.since, r.rto = now, max(r.rto, r.resendAfter())
	if r.linger != nil {
		done := len(r.unacked) == 0
		s.mu.Unlock()
		if done {
			s.finish(r)
		}
		return
	}
	if r.pub == r.acked {
		delete(s.flight, r)
		r.recovering = r.recovering && len(r.unacked) > 0
	}
	more := r.recovering
	if more {
		s.markLocked(r) // publish again what waits behind
	}
	s.freedLocked()
	s.mu.Unlock()
	if more {
		s.signal()
	}
}

// flushAcks publishes now the acknowledgements this node owes, instead
// of ackDelay later: a sender that heard this node leave before it heard
// them would count what it delivered undelivered. It waits for the
// writer's pass that takes them, or ctx; with NATS unreachable, not at
// all.
func (s *remoteSet) flushAcks(ctx context.Context) {
	if ctx.Err() != nil || !s.bus.Connected() {
		return
	}
	s.mu.Lock()
	owed := false
	for _, r := range s.byID {
		if !r.stopped && r.in.due() {
			r.ack, owed = true, true
			s.markLocked(r)
		}
	}
	if !owed {
		s.mu.Unlock()
		return
	}
	flushed := make(chan struct{})
	s.flushed = flushed
	s.mu.Unlock()
	s.signal()
	select {
	case <-flushed:
	case <-ctx.Done():
	}
}

// followed takes r's word (an acknowledgement's AckFollows) that it
// follows epoch follows of this node's frames to it, later than r.epoch:
// this node never used it, so an envelope forged in its name did, and r
// drops what this node publishes (inbound.stale). Its frames start an
// epoch later than that one, from the oldest unacknowledged: the
// acknowledgement that came with the word said how far the replaced
// epoch arrived, so nothing arrives twice. At most once per resend
// timeout: forged words make this node publish again no more often than
// lost acknowledgements do.
func (s *remoteSet) followed(r *remote, follows uint64) {
	s.mu.Lock()
	now := time.Now()
	if r.stopped || !earlier(r.epoch, follows) || now.Sub(r.renewed) < r.rto {
		s.mu.Unlock()
		return
	}
	r.renewed = now
	r.epoch = max(follows+1, 1)
	s.goBackLocked(r, now)
	s.mu.Unlock()
	s.forged.Add(1)
	s.n.log.Warn("a member of another site follows an epoch of this node's messages that it never used (an envelope forged in its name); starting a later one",
		"peer", r.id, "site", r.site, "epoch", follows)
	s.signal()
}

// drain waits until every member has acknowledged what was queued for
// it, and this node's acknowledgements of what arrived are published, or
// ctx ends (Shutdown): the node's leaving Beat, which makes the other
// sites drop it, goes after. When ctx ends first, what is left is
// dropped, and said at Warn; with ctx ended already (Close), drain
// returns at once.
func (s *remoteSet) drain(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	defer s.flushAcks(ctx)
	for {
		s.mu.Lock()
		held := 0
		for _, r := range s.byID {
			held += len(r.unacked) // messages alone cross sites
		}
		s.draining = true
		acked := s.acked
		s.mu.Unlock()
		if held == 0 {
			return
		}
		select {
		case <-acked:
		case <-ctx.Done():
			s.n.log.Warn("leaving with messages to other sites not acknowledged; they are dropped", "messages", held)
			return
		}
	}
}
