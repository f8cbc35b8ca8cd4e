package mesh

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/sites"
)

// The writer of the messages to members of other sites: one goroutine
// for all of them, which publishes, over each connection to NATS in
// turn, what Send queued and the acknowledgements due, in envelopes of
// up to batchBytes of frames. It numbers each member's frames as it
// publishes them; frames at the head of several members' queues of one
// site go in one envelope on that site's subject (framed once, published
// once, numbered for each); the rest in envelopes to each member.

// envelopeOut is an envelope the writer publishes: to one member (to),
// or to several members of site, with the addressees abuf[a0:a1] and the
// frames fbuf[f0:f1] (copies of the frames' references: the members'
// windows move as acknowledgements come).
type envelopeOut struct {
	to     *remote
	site   string
	a0, a1 int
	f0, f1 int
	ack    ackOut
	hasAck bool
}

// Bounds of one pass of the writer.
const (
	// passBytes bounds the frames one pass takes (the writer publishes
	// them with s.mu released, then takes more).
	passBytes = 1 << 20
	// maxSiteAddressees bounds the members one envelope is for.
	maxSiteAddressees = 256
)

// writer is the writer's own state, reused from pass to pass.
type writer struct {
	s *remoteSet
	// limit bounds the frames of one envelope (a frame larger goes
	// alone, in parts): batchBytes, or less when the connection's NATS
	// messages are smaller; shared bounds the addressees of one.
	limit   int
	shared  int
	outs    []envelopeOut
	abuf    []wire.Addressee
	fbuf    [][]byte
	buf     []byte
	spare   []*remote // the dirty list of the last pass, for the next
	rs      []*remote
	members []*remote
	heads   []*byte
	used    []bool
	count   map[*byte]int
	flushed chan struct{} // taken from set.flushed with this pass's frames: closed once they are published
}

// writeLoop publishes until the connection to NATS is closed for good
// (the node closed it).
func (s *remoteSet) writeLoop() {
	defer s.n.wg.Done()
	w := &writer{s: s, count: map[*byte]int{}}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var sess *sites.Session
	for {
		if sess == nil || isClosed(sess.Done()) {
			next, err := s.bus.Next(context.Background()) // until the node closes the bus
			if err != nil {
				return
			}
			if sess != nil {
				s.again() // what the last connection may have lost
			}
			sess = next
		}
		w.size(sess.MaxMessage())
		wait := w.collect(time.Now())
		if len(w.outs) > 0 {
			w.publish(sess)
		}
		if w.flushed != nil {
			close(w.flushed)
			w.flushed = nil
		}
		if len(w.outs) > 0 {
			continue
		}
		if wait <= 0 {
			wait = time.Hour
		}
		timer.Reset(wait) // go 1.23 timers: no stale tick to drain
		select {
		case <-s.wake:
		case <-timer.C:
		case <-sess.Done():
		}
	}
}

// again makes every member's unacknowledged frames go again, from the
// oldest, on a new connection to NATS: those published on the last one
// after it broke are lost.
func (s *remoteSet) again() {
	s.mu.Lock()
	now := time.Now()
	for _, r := range s.byID {
		s.goBackLocked(r, now)
	}
	s.mu.Unlock()
}

// goBackLocked makes r's frames from the oldest unacknowledged one go
// again, at most resendBytes ahead of its acknowledgements until all
// have. s.mu is held.
func (s *remoteSet) goBackLocked(r *remote, now time.Time) {
	if r.pub == r.acked {
		return
	}
	s.resent.Add(1)
	s.n.log.Debug("publishing again what a member of another site has not acknowledged", "peer", r.id, "frames", r.pub-r.acked)
	r.pub, r.pubBytes, r.recovering, r.since = r.acked, 0, true, now
	r.timing = false // its acknowledgement could be the first publish's
	delete(s.flight, r)
	s.markLocked(r)
}

// size sets the bounds of an envelope for NATS messages of most bytes:
// up to maxSiteAddressees addressees, fewer when their header would take
// over half of one (an envelope whose header does not fit could never
// go), and the frames that fit beside them.
func (w *writer) size(most int) {
	site, id := w.s.n.cfg.Site, w.s.n.id
	base := wire.EnvelopeHeaderMax(site, id, 0)
	each := wire.EnvelopeHeaderMax(site, id, 1) - base
	w.shared = max(1, min(maxSiteAddressees, (most/2-base)/each))
	w.limit = max(1, min(batchBytes, most-wire.EnvelopeHeaderMax(site, id, w.shared)))
}

// collect takes what to publish next into w.outs, and returns how long
// until the earliest resend is due (0: none is).
func (w *writer) collect(now time.Time) time.Duration {
	s := w.s
	w.outs, w.abuf, w.fbuf = w.outs[:0], w.abuf[:0], w.fbuf[:0]
	s.mu.Lock()
	defer s.mu.Unlock()
	w.flushed, s.flushed = s.flushed, nil
	var wait time.Duration
	for r := range s.flight {
		due := r.since.Add(r.rto)
		if !now.Before(due) {
			s.goBackLocked(r, now)
			r.rto = min(2*r.rto, resendAfterMax)
			continue
		}
		if d := due.Sub(now); wait == 0 || d < wait {
			wait = d
		}
	}
	dirty := s.dirty
	s.dirty = w.spare[:0]
	slices.SortStableFunc(dirty, func(a, b *remote) int { return strings.Compare(a.site, b.site) })
	budget := passBytes
	for i := 0; i < len(dirty); {
		j := i + 1
		for j < len(dirty) && dirty[j].site == dirty[i].site {
			j++
		}
		budget = w.collectSite(dirty[i:j], budget, now)
		i = j
	}
	for _, r := range dirty {
		r.dirty = false
		if r.stopped {
			continue
		}
		if r.ack {
			w.ackAlone(r)
		}
		if r.publishable(0) {
			s.markLocked(r) // the pass's budget ran out
		}
	}
	clear(dirty)
	w.spare = dirty[:0]
	return wait
}

// publishable reports whether r has a frame to publish now, taken bytes
// being taken already in this pass: one past pub, within resendBytes of
// its acknowledgements while it recovers.
func (r *remote) publishable(taken int) bool {
	i := r.pub - r.acked
	if i >= uint64(len(r.unacked)) {
		return false
	}
	return r.allows(taken, len(r.unacked[i]))
}

// allows reports whether r may publish size more bytes, taken bytes
// being taken already: always unless it recovers, then while within
// resendBytes of its acknowledgements (one frame at least).
func (r *remote) allows(taken, size int) bool {
	ahead := r.pubBytes + taken
	return !r.recovering || ahead == 0 || ahead+size <= resendBytes
}

// collectSite takes what the members rs, of one site, publish next,
// within budget bytes of frames, and returns what is left of the budget.
// Frames at the head of several of them go in one envelope for them all;
// each member's other frames, up to the next that is another's head, in
// one to it. s.mu is held.
func (w *writer) collectSite(rs []*remote, budget int, now time.Time) int {
	for budget > 0 {
		w.rs, w.heads, w.used = w.rs[:0], w.heads[:0], w.used[:0]
		for _, r := range rs {
			if !r.stopped && r.publishable(0) {
				w.rs = append(w.rs, r)
				w.heads = append(w.heads, &r.unacked[r.pub-r.acked][0])
				w.used = append(w.used, false)
			}
		}
		if len(w.rs) == 0 {
			break
		}
		clear(w.count)
		for _, h := range w.heads {
			w.count[h]++
		}
		for i := range w.rs {
			if !w.used[i] && w.count[w.heads[i]] > 1 {
				budget -= w.takeShared(i, now)
			}
		}
		for i, r := range w.rs {
			if !w.used[i] {
				budget -= w.takeOwn(r, now)
			}
		}
	}
	return budget
}

// takeShared takes the frames that w.rs[i] and the other members whose
// head is the same frame have in common, from it on, into one envelope
// for them all, and returns their bytes. Members whose keys clash with
// one taken are left for an envelope of their own.
func (w *writer) takeShared(i int, now time.Time) int {
	a0 := len(w.abuf)
	members := w.members[:0]
	for j := i; j < len(w.rs) && len(members) < w.shared; j++ {
		if w.used[j] || w.heads[j] != w.heads[i] || slices.ContainsFunc(members, func(m *remote) bool { return m.key == w.rs[j].key }) {
			continue
		}
		w.used[j] = true
		members = append(members, w.rs[j])
	}
	w.members = members
	if len(members) == 1 {
		w.used[i] = false
		return 0
	}
	first := members[0]
	f0 := len(w.fbuf)
	size := 0
	for t := 0; ; t++ {
		k := first.pub - first.acked + uint64(t)
		if k >= uint64(len(first.unacked)) {
			break
		}
		f := first.unacked[k]
		if t > 0 && size+len(f) > w.limit {
			break
		}
		same := true
		for _, m := range members {
			mk := m.pub - m.acked + uint64(t)
			if mk >= uint64(len(m.unacked)) || &m.unacked[mk][0] != &f[0] || !m.allows(size, len(f)) {
				same = false
				break
			}
		}
		if !same {
			break
		}
		w.fbuf = append(w.fbuf, f)
		size += len(f)
	}
	for _, m := range members {
		w.abuf = append(w.abuf, wire.Addressee{Key: m.key, Epoch: m.epoch, Base: m.acked, Seq: m.pub})
		w.s.advanceLocked(m, len(w.fbuf)-f0, size, now)
	}
	w.outs = append(w.outs, envelopeOut{site: first.site, a0: a0, a1: len(w.abuf), f0: f0, f1: len(w.fbuf)})
	return size
}

// takeOwn takes r's frames from pub, up to the next that is another
// member's head, into one envelope to r, with the acknowledgement due
// it, and returns their bytes.
func (w *writer) takeOwn(r *remote, now time.Time) int {
	f0 := len(w.fbuf)
	size := 0
	for k := r.pub - r.acked; k < uint64(len(r.unacked)); k++ {
		f := r.unacked[k]
		if k > r.pub-r.acked && (size+len(f) > w.limit || w.count[&f[0]] > 0 || !r.allows(size, len(f))) {
			break
		}
		w.fbuf = append(w.fbuf, f)
		size += len(f)
	}
	a0 := len(w.abuf)
	w.abuf = append(w.abuf, wire.Addressee{Key: r.key, Epoch: r.epoch, Base: r.acked, Seq: r.pub})
	w.s.advanceLocked(r, len(w.fbuf)-f0, size, now)
	o := envelopeOut{to: r, a0: a0, a1: len(w.abuf), f0: f0, f1: len(w.fbuf)}
	if r.ack {
		r.ack = false
		o.ack, o.hasAck = r.in.takeAck()
	}
	w.outs = append(w.outs, o)
	return size
}

// ackAlone takes the acknowledgement due r into an envelope of its own.
func (w *writer) ackAlone(r *remote) {
	r.ack = false
	if a, ok := r.in.takeAck(); ok {
		w.outs = append(w.outs, envelopeOut{to: r, a0: len(w.abuf), a1: len(w.abuf), ack: a, hasAck: true})
	}
}

// advanceLocked notes k frames of r, of size bytes, published. s.mu is
// held.
func (s *remoteSet) advanceLocked(r *remote, k, size int, now time.Time) {
	if r.pub == r.acked {
		s.flight[r] = struct{}{}
		r.since = now
	}
	if !r.timing && !r.recovering {
		r.timing, r.timed, r.timedAt = true, r.pub, now
	}
	r.pub += uint64(k)
	r.pubBytes += size
	if r.recovering && r.pub == r.acked+uint64(len(r.unacked)) {
		r.recovering = false
	}
}

// publish publishes w.outs on sess, each envelope in one NATS message,
// or a frame larger than one in parts. It stops at the first that fails
// (the connection is gone): what was not published goes again on the
// next connection.
func (w *writer) publish(sess *sites.Session) {
	s := w.s
	max := sess.MaxMessage()
	for i := range w.outs {
		o := &w.outs[i]
		e := wire.Envelope{Site: s.siteB, Node: s.idB, Run: s.run, Ack: o.hasAck, AckEpoch: o.ack.epoch, AckNext: o.ack.next, AckFollows: o.ack.follows, To: w.abuf[o.a0:o.a1], Parts: 1}
		frames := w.fbuf[o.f0:o.f1]
		room := max - wire.EnvelopeHeaderMax(s.n.cfg.Site, s.n.id, len(e.To))
		size := 0
		for _, f := range frames {
			size += len(f)
		}
		if room <= 0 {
			s.n.log.Warn("NATS's messages are too small for the envelope of a message to other sites; not published", "max", max, "addressees", len(e.To))
			continue
		}
		parts := 1
		if size > room { // one frame (w.limit bounds several), larger than a NATS message
			parts = (size + room - 1) / room
		}
		for p := range parts {
			e.Part, e.Parts = p, parts
			w.buf = wire.AppendEnvelopeHeader(w.buf[:0], &e)
			if parts == 1 {
				for _, f := range frames {
					w.buf = append(w.buf, f...)
				}
			} else {
				w.buf = append(w.buf, frames[0][p*room:min((p+1)*room, size)]...)
			}
			var err error
			if o.to != nil {
				err = sess.SendMessage(o.to.id, w.buf)
			} else {
				err = sess.PublishMessage(o.site, w.buf)
			}
			if err != nil {
				s.n.log.Debug("cannot publish to other sites", "err", err)
				clear(w.fbuf) // hold no frame until the next pass
				return
			}
		}
	}
	clear(w.fbuf)
}
