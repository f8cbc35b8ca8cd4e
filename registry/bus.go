package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tallship-go/tallship/internal/wire"
)

// Bus carries the registry between sites: a publish/subscribe system (in
// the mesh, NATS: package sites) on which every node of the cluster, in
// every site, publishes what it owns and hears what the others own. Its
// methods may be called concurrently.
type Bus interface {
	// Publish sends msg to every other node on the bus, of every site
	// (those of this node's own site drop it: their links carry it).
	// It must not block for long: the registry calls it from one
	// goroutine, in order.
	Publish(msg []byte) error
	// Send sends msg to the node id alone, as Publish does.
	Send(node string, msg []byte) error
	// Receive returns the next message published or sent to this node,
	// waiting for one. It returns ctx.Err() once ctx ends, and any other
	// error when the bus can carry no more (ServeBus then returns it).
	// Messages from one sender arrive in the order it sent them, or not
	// at all. The registry keeps no reference to msg after the next
	// Receive.
	Receive(ctx context.Context) ([]byte, error)
	// MaxMessage returns the size of the largest message the bus
	// carries.
	MaxMessage() int
}

// ServeBus runs the registry across sites over bus, until ctx ends
// (it returns ctx.Err()), the registry closes (ErrClosed), another
// ServeBus replaces it (nil), or bus.Receive fails (that error). Run it
// again when the bus comes back: each run first publishes everything
// this node owns and asks every node of the other sites for what they
// own, so that the sites converge at once.
//
// Over the bus each node publishes only what it owns itself (its
// records, as they change, and a Beat every Heartbeat), never what it
// relays: a node of another site, heard over the bus, is live while its
// Beats come, and its records expire after its Lifetime without them
// (or go at once when it leaves). What comes from this node's own site
// (Config.Site) is dropped, since its links carry that; so is anything
// about an owner that this node reaches over its links. Records of
// other sites carry their site (Record.Site); Services, Lookup, Watch
// and Dial show them beside the links' own, and Dial prefers this
// node's site. With Config.Identity, every owner signs what it
// publishes, and a node applies only what the owner signed.
//
// A message that does not parse is dropped whole; its frames then apply
// in order, and one that breaks the rules (a node that publishes
// another's records, a bad signature, a clock too far from this node's)
// is dropped with the rest of its message. Either is logged (at Warn,
// at most once a second); the bus stays.
//
// Errors: ErrConfig when Config.Site is empty or bus.MaxMessage leaves
// no room for a record of MaxMetadataBytes; ErrClosed; ErrSlowPeer when
// what waits to be published exceeds its bound (run it again).
func (r *Registry) ServeBus(ctx context.Context, bus Bus) error {
	if r.cfg.Site == "" {
		return fmt.Errorf("%w: ServeBus needs Config.Site", ErrConfig)
	}
	size := bus.MaxMessage()
	limit := min(r.cfg.MaxMessageBytes, size-busHeaderSize(r.cfg.Site, r.cfg.ID)-wire.HeaderMax)
	if limit < r.cfg.MaxMetadataBytes+4096 {
		return fmt.Errorf("%w: bus messages of %d bytes leave no room for a record of MaxMetadataBytes %d", ErrConfig, size, r.cfg.MaxMetadataBytes)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &busLink{
		r:       r,
		bus:     bus,
		max:     size,
		limit:   limit,
		header:  appendBusHeader(nil, r.cfg.Site, r.cfg.ID),
		cancel:  cancel,
		wake:    make(chan struct{}, 1),
		stopc:   make(chan struct{}),
		flushed: make(chan struct{}),
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if old := r.sites.link; old != nil {
		old.abort()
	}
	r.sites.link = s
	if r.sites.remotes == nil {
		r.sites.remotes = map[string]*remote{}
	}
	r.serving.Add(1)
	s.writer.Add(1)
	go s.writeLoop()
	r.busGreet(s)
	r.mu.Unlock()
	defer r.serving.Done()
	r.log.Debug("registry: bus up", "site", r.cfg.Site)

	dec := decoder{maxMeta: r.cfg.MaxMetadataBytes, known: &r.ids}
	var bm busMessage
	var msgs []message
	var err error
	for {
		msg, rerr := bus.Receive(ctx)
		if rerr != nil {
			err = rerr
			break
		}
		r.mu.Lock()
		if r.sites.link == s && !r.closed {
			msgs = r.onBus(s, msg, &dec, &bm, msgs)
		}
		r.mu.Unlock()
	}
	s.abort()
	s.writer.Wait()
	r.mu.Lock()
	replaced := r.sites.link != s
	if !replaced {
		r.sites.link = nil
	}
	closed := r.closed
	r.mu.Unlock()
	r.log.Debug("registry: bus down", "err", err)
	switch {
	case closed:
		return ErrClosed
	case s.failure() != nil:
		r.log.Warn("registry: the bus takes too little; its run ends", "err", s.failure())
		return s.failure()
	case replaced:
		return nil
	}
	return err
}

// siteState is what the registry keeps for ServeBus. Guarded by
// Registry.mu.
type siteState struct {
	link    *busLink           // the running ServeBus's, nil when none
	remotes map[string]*remote // owners heard over the bus, by id
	beat    uint64             // the number of this node's last Beat
	warnAt  time.Time          // when a dropped message was last said at Warn
	// answered is when each asker (Sync, Want) was last answered, and
	// answers how many answers went out since answersAt: both bound what
	// one small message can make this node publish (see busAnswer).
	answered  map[string]time.Time
	answers   int
	answersAt time.Time
	// snapBytes is the size of the snapshots being received, of all
	// owners (bounded by maxSnapBytes).
	snapBytes int
	// asked is when an owner not held yet (owners sign: its credential
	// did not come) was last asked for it, bounded by maxAsked.
	asked map[string]time.Time
	// conflictSaid: a node with this node's id was heard, and said.
	conflictSaid bool
	// untrusted: owners whose credential is not trusted here (said at
	// Warn once, not asked again), by run; bounded by maxAsked.
	untrusted map[string]uint64
	// strangers are the nodes heard over the bus as of this node's site
	// that its links do not reach yet, by when first heard (see
	// sameSite); clashSaid is set once that was logged.
	strangers map[string]*stranger
	clashSaid bool
}

// busOut is what the bus writer sends: frames to one node, or to all
// (to empty).
type busOut struct {
	to     string
	frames [][]byte
}

// busLink is one ServeBus: the queue of what it publishes and the
// goroutine that publishes it, in order, outside the registry's lock.
type busLink struct {
	r      *Registry
	bus    Bus
	max    int    // a message's size on the bus
	limit  int    // a frame payload's, within a message
	header []byte // the envelope of this node's messages
	cancel context.CancelFunc

	mu        sync.Mutex
	queue     []busOut
	queued    int
	finishing bool  // publish what is queued, then flushed
	fail      error // the queue overflowed
	stopped   bool
	wake      chan struct{}
	stopc     chan struct{}
	flushed   chan struct{}
	flushOnce sync.Once
	writer    sync.WaitGroup
}

// enqueue queues frames for node to (empty: every node).
func (s *busLink) enqueue(to string, frames ...[]byte) {
	if len(frames) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finishing || s.stopped || s.fail != nil {
		return
	}
	for _, f := range frames {
		s.queued += len(f)
	}
	s.queue = append(s.queue, busOut{to: to, frames: frames})
	if s.queued > maxQueueBytes {
		s.fail = ErrSlowPeer
		s.queue = nil
		s.cancel() // ServeBus ends; run again, it publishes everything anew
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// finish makes the writer publish what is queued, then close flushed.
func (s *busLink) finish() {
	s.mu.Lock()
	s.finishing = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// abort ends the run: the writer stops, and Receive returns.
func (s *busLink) abort() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stopc)
	}
	s.mu.Unlock()
	s.cancel()
}

// pending returns the bytes queued and not yet taken by the writer.
func (s *busLink) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

func (s *busLink) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail
}

// busGrace is how long Close waits for the leaving Beat to be handed to
// the bus (one Publish, into the bus's buffer) when it waits for
// nothing else.
const busGrace = 100 * time.Millisecond

// waitFlushed waits until what was queued before finish is published, or
// giveUp is closed and busGrace has passed.
func (s *busLink) waitFlushed(giveUp <-chan struct{}) {
	select {
	case <-s.flushed:
		return
	case <-giveUp:
	}
	t := time.NewTimer(busGrace)
	defer t.Stop()
	select {
	case <-s.flushed:
	case <-t.C:
	}
}

func (s *busLink) markFlushed() { s.flushOnce.Do(func() { close(s.flushed) }) }

// writeLoop publishes what is queued until the run ends.
func (s *busLink) writeLoop() {
	defer s.writer.Done()
	defer s.markFlushed()
	for {
		s.mu.Lock()
		q, finishing := s.queue, s.finishing
		s.queue, s.queued = nil, 0
		s.mu.Unlock()
		for _, o := range q {
			select {
			case <-s.stopc:
				return
			default:
			}
			s.write(o)
		}
		if len(q) > 0 {
			continue
		}
		if finishing {
			s.markFlushed()
		}
		select {
		case <-s.wake:
		case <-s.stopc:
			return
		}
	}
}

// write publishes o's frames, as few messages as the bus's size allows.
func (s *busLink) write(o busOut) {
	var msg []byte
	flush := func() {
		if len(msg) <= len(s.header) {
			return
		}
		var err error
		if o.to == "" {
			err = s.bus.Publish(msg)
		} else {
			err = s.bus.Send(o.to, msg)
		}
		if err != nil {
			s.r.log.Debug("registry: bus: cannot publish", "to", o.to, "err", err)
		}
		msg = nil
	}
	for _, f := range o.frames {
		if len(msg)+len(f) > s.max {
			flush()
		}
		if msg == nil {
			msg = make([]byte, 0, min(s.max, len(s.header)+max(len(f), 512)))
			msg = append(msg, s.header...)
		}
		if len(msg)+len(f) > s.max {
			s.r.log.Warn("registry: bus: a frame larger than the bus's messages is not published", "bytes", len(f), "max", s.max)
			continue
		}
		msg = append(msg, f...)
	}
	flush()
}

// busGreet publishes, as a run of ServeBus begins, everything this node
// owns and asks every node of the other sites for what they own. r.mu
// is held.
func (r *Registry) busGreet(s *busLink) {
	frames := r.ownFrames(s)
	frames = append(frames, encodeSync(time.Now()))
	s.enqueue("", frames...)
}

// Bounds on answers to Sync and Want: an asker is answered at most once a
// Heartbeat, and this node sends at most maxAnswers answers a Heartbeat
// in all. An asker not answered learns this node's seq from its next
// Beat, and asks again (Want).
const (
	maxAnswers = 64
	maxAskers  = 1024
	maxAsked   = 256
	// maxAnswerQueue: no answer is queued while this much waits to be
	// published (a quarter of what ends the run).
	maxAnswerQueue = maxQueueBytes / 4
)

// busAnswer sends node what this node owns: it asked (Sync, Want), at its
// clock at. Nothing when at is not within busWindow of this node's clock
// (an old message replayed), or when node, or this node, answered too
// often within the last Heartbeat. r.mu is held.
func (r *Registry) busAnswer(s *busLink, node string, at time.Time) error {
	now := time.Now()
	if !r.busFresh(at, r.cfg.Lifetime, now) {
		return fmt.Errorf("%w: a request of %v ago (clocks apart, or a replay)", ErrProtocol, now.Sub(at).Round(time.Millisecond))
	}
	if now.Sub(r.sites.answersAt) >= r.cfg.Heartbeat {
		r.sites.answers, r.sites.answersAt = 0, now
	}
	if last, ok := r.sites.answered[node]; ok && now.Sub(last) < r.cfg.Heartbeat || r.sites.answers >= maxAnswers {
		return nil
	}
	if s.pending() > maxAnswerQueue {
		return nil // answers wait already: more would overflow the queue, and end the run
	}
	if !room(&r.sites.answered, now, r.cfg.Heartbeat, maxAskers) {
		return nil
	}
	r.sites.answered[node] = now
	r.sites.answers++
	s.enqueue(node, r.ownFrames(s)...)
	return nil
}

// busFresh reports whether a clock at, read in a message of an owner of
// the given lifetime, is within busWindow of now.
func (r *Registry) busFresh(at time.Time, lifetime time.Duration, now time.Time) bool {
	w := r.busWindow(lifetime)
	d := now.Sub(at)
	return d <= w && d >= -w
}

// busWindow is how far a Beat's, Sync's or Want's clock may be from this
// node's: twice the shorter of the owner's lifetime and this node's. An
// owner is forgotten 3 lifetimes after it went silent, so no Beat it sent
// before can be replayed to bring it back then; sites' clocks must agree
// within that window.
func (r *Registry) busWindow(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		lifetime = r.cfg.Lifetime
	}
	return 2 * min(lifetime, r.cfg.Lifetime)
}

// ownFrames returns this node's credential (when owners sign), its
// records and a Beat, for a node that may know nothing of it. r.mu is
// held.
func (r *Registry) ownFrames(s *busLink) [][]byte {
	o := r.self
	var frames [][]byte
	if c, _ := o.credOf(o.inc); c != nil && r.signing() {
		frames = append(frames, c.frame)
	}
	if o.seq > 0 {
		recs := make([]*entry, 0, len(o.records))
		for _, e := range o.records {
			recs = append(recs, e)
		}
		fs, err := encodeBusSnap(o.id, o.inc, o.seq, recs, o.recSig, s.limit)
		if err != nil {
			r.log.Warn("registry: bus: cannot encode own records", "err", err)
		} else {
			frames = append(frames, fs...)
		}
	}
	r.sites.beat++ // a new Beat: only a new one renews the owner
	if f := r.beatFrame(false, s.limit); f != nil {
		frames = append(frames, f)
	}
	return frames
}

// beatFrame encodes this node's Beat at r.sites.beat. r.mu is held.
func (r *Registry) beatFrame(leaving bool, limit int) []byte {
	o := r.self
	now := time.Now()
	var sig []byte
	if r.signing() {
		var err error
		sig, err = r.cfg.Identity.Sign(beatSigned(o.id, o.inc, o.seq, r.sites.beat, leaving, r.cfg.Observer, r.cfg.Lifetime, now))
		if err != nil {
			r.log.Warn("registry: bus: cannot sign a beat", "err", err)
			return nil
		}
	}
	f, err := encodeBeat(o.id, o.inc, o.seq, r.sites.beat, leaving, r.cfg.Observer, r.cfg.Lifetime, now, sig, limit)
	if err != nil {
		r.log.Warn("registry: bus: cannot encode a beat", "err", err)
		return nil
	}
	return f
}

// busBeat publishes this node's next Beat, when a bus runs. r.mu is
// held.
func (r *Registry) busBeat() {
	s := r.sites.link
	if s == nil {
		return
	}
	r.sites.beat++
	if f := r.beatFrame(false, s.limit); f != nil {
		s.enqueue("", f)
	}
}

// busPush publishes a change of this node's records, when a bus runs.
// r.mu is held.
func (r *Registry) busPush(frame []byte) {
	if s := r.sites.link; s != nil {
		s.enqueue("", frame)
	}
}

// busLeave queues this node's leaving Beat, which frees its records in
// every other site at once, and returns the bus's run to wait for (nil
// when none). r.mu is held; the registry is closing.
func (r *Registry) busLeave() *busLink {
	s := r.sites.link
	if s == nil {
		return nil
	}
	r.sites.beat++
	if f := r.beatFrame(true, s.limit); f != nil {
		s.enqueue("", f)
	}
	s.finish()
	return s
}

// busWant asks owner rm for what it owns, unless asked within the last
// Heartbeat (the next Beat that shows a gap asks again). r.mu is held.
func (r *Registry) busWant(rm *remote) {
	now := time.Now()
	if now.Sub(rm.wantAt) < r.cfg.Heartbeat {
		return
	}
	if r.busAsk(rm.id, now) {
		rm.wantAt = now
	}
}

// busAsk sends owner id a Want; false when no bus runs. r.mu is held.
func (r *Registry) busAsk(id string, now time.Time) bool {
	s := r.sites.link
	if s == nil {
		return false
	}
	f, err := encodeBusWant(id, now, s.limit)
	if err != nil {
		return false
	}
	s.enqueue(id, f)
	return true
}

// busAskUnknown asks owner id, not held here, for what it owns (its
// credential first), at most once a Heartbeat and for at most maxAsked
// owners at a time. r.mu is held.
func (r *Registry) busAskUnknown(id string) {
	if _, ok := r.sites.untrusted[id]; ok {
		return
	}
	now := time.Now()
	if t, ok := r.sites.asked[id]; ok && now.Sub(t) < r.cfg.Heartbeat {
		return
	}
	if !room(&r.sites.asked, now, r.cfg.Heartbeat, maxAsked) {
		return
	}
	if r.busAsk(id, now) {
		r.sites.asked[id] = now
	}
}

// onBus applies one message from the bus: whole, or nothing of it when
// it does not parse. msgs is scratch space, returned for the next call.
// r.mu is held.
func (r *Registry) onBus(s *busLink, msg []byte, dec *decoder, bm *busMessage, msgs []message) []message {
	if err := decodeBusMessage(msg, r.cfg.MaxMessageBytes, bm); err != nil {
		if errors.Is(err, errBusVersion) {
			r.log.Debug("registry: bus message of another version dropped", "err", err)
		} else {
			r.busDropped("", err)
		}
		return msgs
	}
	own := bm.node == r.cfg.ID
	if !own && bm.site == r.cfg.Site {
		r.sameSite(bm.node)
		return msgs
	}
	if len(bm.frames) > cap(msgs) {
		msgs = make([]message, len(bm.frames))
	}
	msgs = msgs[:len(bm.frames)]
	for i := range bm.frames {
		m := &msgs[i]
		if err := dec.decodeBus(&bm.frames[i], m); err != nil {
			r.busDropped(bm.node, err)
			return msgs
		}
		switch m.typ {
		case msgPut, msgDel, msgSnap, msgBeat, msgCred:
			if m.owner != bm.node {
				r.busDropped(bm.node, fmt.Errorf("%w: %s message of owner %q", ErrProtocol, m.typ, m.owner))
				return msgs
			}
		}
	}
	if own {
		// NoEcho: NATS does not bring this node's messages back, so this
		// is another node of its id, or a message of this node's that a
		// NATS user recorded and published again: only another run tells
		// the first (and the first a node of its id says is a Beat).
		if r.otherRun(bm, msgs) {
			r.idConflict(bm.site)
		} else {
			r.log.Debug("registry: a message of this node's came back over the bus (published again); dropped")
		}
		for i := range msgs {
			msgs[i].trim()
		}
		return msgs
	}
	for i := range msgs {
		if err := r.onBusFrame(s, bm, &bm.frames[i], &msgs[i]); err != nil {
			r.busDropped(bm.node, err)
			break
		}
	}
	if rm := r.sites.remotes[bm.node]; rm != nil {
		r.noteMember(rm, false)
	}
	for i := range msgs {
		msgs[i].trim()
	}
	return msgs
}

// otherRun reports whether msgs, bm's, are of another node of this
// node's id: a Beat of another run than this node's, of now (within the
// window a Beat's clock may be off, busFresh). Anything else of another
// run is a message of this node's earlier run that a NATS user recorded
// and published again (it cannot be its later run: the run is the time
// it started), or part of the other node's first message, whose Beat
// says so (it is the first thing a node says on the bus).
func (r *Registry) otherRun(bm *busMessage, msgs []message) bool {
	now := time.Now()
	for i := range msgs {
		m := &msgs[i]
		if m.typ == msgBeat && m.inc != r.self.inc && r.busFresh(bm.frames[i].at, m.lifetime, now) {
			return true
		}
	}
	return false
}

// onBusFrame applies one frame of a message from bm.node, of another
// site. r.mu is held.
func (r *Registry) onBusFrame(s *busLink, bm *busMessage, f *busFrame, m *message) error {
	switch m.typ {
	case msgSync:
		return r.busAnswer(s, bm.node, f.at)
	case msgWant:
		if m.owner == r.cfg.ID {
			return r.busAnswer(s, bm.node, f.at)
		}
		return nil
	case msgCred:
		return r.onRemoteCred(bm.node, bm.site, m)
	}
	rm, err := r.remoteOf(bm.node, bm.site, m.typ == msgBeat)
	if rm == nil {
		return err
	}
	switch m.typ {
	case msgBeat:
		return r.onRemoteBeat(rm, bm.site, f.at, m)
	case msgPut, msgDel:
		return r.onRemoteChange(rm, bm.site, m)
	case msgSnap:
		return r.onRemoteSnap(rm, bm.site, f, m)
	}
	return nil
}

// idConflict says, once, that a node with this node's id publishes on
// the bus (of site): the two hide each other's records, and fight over
// that id in every other site. r.mu is held.
func (r *Registry) idConflict(site string) {
	if r.sites.conflictSaid {
		return
	}
	r.sites.conflictSaid = true
	r.log.Error("registry: another node on the bus has this node's id; neither sees the other's records, and other sites see one of them: give each node an id of its own", "id", r.cfg.ID, "site", site)
	r.queueEvent(Event{Kind: IDConflict, Peer: r.cfg.ID, Site: site, Time: time.Now()})
}

// busDropped logs a message dropped: at Warn at most once a second, else
// at Debug (a flood of garbage is not a flood of logs). r.mu is held.
func (r *Registry) busDropped(node string, err error) {
	now := time.Now()
	if now.Sub(r.sites.warnAt) >= time.Second {
		r.sites.warnAt = now
		r.log.Warn("registry: bus message dropped", "from", node, "err", err)
		return
	}
	r.log.Debug("registry: bus message dropped", "from", node, "err", err)
}

// room makes *m if need be and reports whether it has room for one more
// entry, at most limit: when full, the entries older than gap go first.
// answered and asked keep, by node or owner, when each was last answered
// or asked, bounded against a flood of made-up ids.
func room(m *map[string]time.Time, now time.Time, gap time.Duration, limit int) bool {
	if *m == nil {
		*m = map[string]time.Time{}
	}
	if len(*m) < limit {
		return true
	}
	for k, t := range *m {
		if now.Sub(t) >= gap {
			delete(*m, k)
		}
	}
	return len(*m) < limit
}
