package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tallship-go/tallship/internal/wire"
)

// The reader of the envelopes members of other sites publish to this
// node and to its site: one goroutine, which takes their
// acknowledgements and delivers their messages to Receive, each once and
// in order, until the connection to NATS is closed for good. An
// envelope that does not parse, or that breaks the rules, is dropped
// (said at Warn at most once a second, else at Debug); one from a node
// that is no member (yet: the registry has not heard it, or no more) is
// dropped at Debug, and its sender publishes it again if it is one. The
// reader never answers but with an acknowledgement, to a member, at most
// one an ackDelay: nothing it reads makes it publish more than it read.

// partial is a frame arriving in parts from one member.
type partial struct {
	epoch, seq  uint64
	parts, next int
	buf         []byte
}

// Errors of envelopes dropped.
var (
	errNoMember   = errors.New("from no member of another site")
	errStaleEpoch = errors.New("of an earlier epoch")
)

// readLoop reads envelopes until the node closes its connection to NATS.
func (s *remoteSet) readLoop() {
	defer s.n.wg.Done()
	for {
		msg, err := s.bus.ReceiveMessage(context.Background()) // until the node closes the bus
		if err != nil {
			return
		}
		if err := s.take(msg); err != nil {
			s.drop(err)
		}
	}
}

// take applies one envelope.
func (s *remoteSet) take(msg []byte) error {
	e := &s.env
	if err := wire.ParseEnvelope(msg, e); err != nil {
		return err
	}
	s.mu.Lock()
	r, left := s.byID[string(e.Node)], s.leaving[string(e.Node)]
	s.mu.Unlock()
	if r == nil {
		r = left // its acknowledgements alone
	}
	if r == nil || r.site != string(e.Site) || r.inc != e.Run {
		return fmt.Errorf("%w: %q of site %q, run %d", errNoMember, e.Node, e.Site, e.Run)
	}
	if r == left {
		if e.Ack {
			s.acknowledged(r, e.AckEpoch, e.AckNext)
		}
		return nil
	}
	if e.Ack {
		s.acknowledged(r, e.AckEpoch, e.AckNext)
		if e.AckFollows != 0 {
			s.followed(r, e.AckFollows)
		}
	}
	var a *wire.Addressee
	for i := range e.To {
		if e.To[i].Key == s.key {
			a = &e.To[i]
			break
		}
	}
	if a == nil {
		return nil // none, or for other members of this site
	}
	if epoch := r.in.current(); earlier(a.Epoch, epoch) {
		r.in.stale(a.Epoch)
		return fmt.Errorf("%w: from %s: %d (now %d)", errStaleEpoch, r.id, a.Epoch, epoch)
	}
	if skipped, expected := r.in.start(a.Epoch, a.Base); skipped {
		s.n.log.Warn("a member of another site no longer holds messages that never arrived; some were lost", "peer", r.id, "expected", expected, "got", a.Base)
	}
	if e.Parts > 1 {
		return s.takePart(r, a, e)
	}
	var err error
	if s.msgs, err = wire.ParseMessages(s.msgs[:0], e.Frames, s.n.cfg.MaxMessageSize); err != nil {
		return fmt.Errorf("from %s: %w", r.id, err)
	}
	s.deliver(r, a.Epoch, a.Seq, s.msgs)
	clear(s.msgs)
	return nil
}

// deliver delivers the messages numbered seq, seq+1, … of r's epoch that
// this node does not have yet, in order, up to the first one missing
// before them (a gap: the rest waits for r to publish it again).
func (s *remoteSet) deliver(r *remote, epoch, seq uint64, msgs [][]byte) {
	next, ok := r.in.expected(epoch)
	if !ok {
		return
	}
	again := false
	for i, m := range msgs {
		q := seq + uint64(i)
		if q < next {
			again = true // delivered before: r lost the acknowledgement
			continue
		}
		if q > next {
			break
		}
		select {
		case s.n.recv <- Message{From: r.id, Data: bytes.Clone(m)}:
			s.n.stats.received(len(m))
		case <-s.n.closing:
			return
		}
		r.in.delivered(epoch, q, len(m))
		next++
	}
	if again {
		r.in.again()
	}
	if p := &r.part; p.buf != nil && (p.epoch != epoch || p.seq < next) {
		// Parts of a frame delivery has passed, or of an earlier epoch,
		// never come whole: they would hold their share of maxPartBytes
		// until r goes.
		s.dropPart(r)
	}
}

// takePart gathers the parts of a frame, in order, and delivers it when
// whole. A part out of order drops what was gathered (r publishes it all
// again); the frames of all members arriving in parts are bounded by
// maxPartBytes.
func (s *remoteSet) takePart(r *remote, a *wire.Addressee, e *wire.Envelope) error {
	p := &r.part
	next, ok := r.in.expected(a.Epoch)
	switch {
	case !ok:
		return nil
	case a.Seq < next:
		r.in.again()
		return nil
	case a.Seq > next:
		s.dropPart(r)
		return nil
	}
	if e.Part == 0 {
		s.dropPart(r)
		p.epoch, p.seq, p.parts = a.Epoch, a.Seq, e.Parts
	} else if p.buf == nil || p.epoch != a.Epoch || p.seq != a.Seq || p.parts != e.Parts || p.next != e.Part {
		s.dropPart(r)
		return nil
	}
	if len(p.buf)+len(e.Frames) > wire.HeaderMax+s.n.cfg.MaxMessageSize {
		s.dropPart(r)
		return fmt.Errorf("from %s: a frame in parts over %d bytes", r.id, s.n.cfg.MaxMessageSize)
	}
	if need := len(p.buf) + len(e.Frames); need > cap(p.buf) {
		// The budget counts the memory held: the first part makes room
		// for the whole frame (parts are cut alike, but the last), a
		// later one that does not fit grows it to what it needs.
		c := need
		if e.Part == 0 {
			c = min(e.Parts*len(e.Frames), wire.HeaderMax+s.n.cfg.MaxMessageSize)
		}
		if !s.holdPart(r, c-cap(p.buf)) {
			s.dropPart(r)
			return fmt.Errorf("from %s: frames arriving in parts exceed %d bytes", r.id, maxPartBytes)
		}
		p.buf = append(make([]byte, 0, c), p.buf...)
	}
	p.buf = append(p.buf, e.Frames...)
	p.next++
	if p.next < p.parts {
		return nil
	}
	var err error
	s.msgs, err = wire.ParseMessages(s.msgs[:0], p.buf, s.n.cfg.MaxMessageSize)
	if err == nil && len(s.msgs) != 1 {
		err = fmt.Errorf("%w: %d frames in parts", wire.ErrBadFrame, len(s.msgs))
	}
	if err == nil {
		s.deliver(r, a.Epoch, a.Seq, s.msgs)
	}
	clear(s.msgs)
	s.dropPart(r)
	if err != nil {
		return fmt.Errorf("from %s: %w", r.id, err)
	}
	return nil
}

// holdPart counts n more bytes held for a frame arriving from r in parts, or
// reports false when that would exceed maxPartBytes, or r went.
func (s *remoteSet) holdPart(r *remote, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.stopped || s.partBytes+n > maxPartBytes {
		return false
	}
	s.partBytes += n
	r.partHeld += n
	return true
}

// dropPart drops the frame arriving from r in parts, if any.
func (s *remoteSet) dropPart(r *remote) {
	s.mu.Lock()
	s.partBytes -= r.partHeld
	r.partHeld = 0
	s.mu.Unlock()
	r.part = partial{}
}

// drop counts an envelope dropped and says why: at Warn at most once a
// second, else at Debug; at Debug alone for what is no fault (another
// version, a node the registry has not made a member yet, a late
// envelope of an earlier epoch).
func (s *remoteSet) drop(err error) {
	s.dropped.Add(1)
	level := slog.LevelDebug
	if !errors.Is(err, wire.ErrEnvelopeVersion) && !errors.Is(err, errNoMember) && !errors.Is(err, errStaleEpoch) {
		if now := time.Now(); now.Sub(s.warnAt) >= time.Second {
			s.warnAt, level = now, slog.LevelWarn
		}
	}
	s.n.log.Log(context.Background(), level, "message from another site dropped", "err", err)
}
