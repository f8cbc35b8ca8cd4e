package mesh

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tallship-go/tallship/internal/wire"
)

// Delivery (docs/protocol.md, "Delivery" and "Across sites"). Each
// peer's stream of frames from this node is numbered: the stream's epoch
// (this node's frames to that peer, for as long as it knows the peer)
// and a sequence number per sequenced frame (wire.Sequenced: messages
// and member lists). The receiver acknowledges, cumulatively: piggybacked
// on what it writes to the sender anyway, or on its own after ackDelay
// or once a quarter of SendQueueBytes has arrived since the last. The
// sender keeps what it wrote until then (SendQueueBytes counts it) and
// writes it again when it may not have arrived (a link lost, over NATS a
// connection lost or no acknowledgement in time); the receiver drops
// what it has already: each frame is delivered once, in order.
//
// The two ends of that, window and inbound, serve a linked peer's
// message streams (peer.go, link.go) and a member of another site's
// envelopes over NATS (remote*.go) alike.

// ackDelay is how long a receiver waits for something to piggyback an
// acknowledgement on before it writes one on its own.
const ackDelay = 10 * time.Millisecond

// window is what a node holds of its frames to one peer: numbered from
// acked, each kept until the peer acknowledges it, in room bounded by
// Config.SendQueueBytes. Its owner's lock guards it (peer.qmu,
// remoteSet.mu).
type window struct {
	epoch    uint64        // names this node's frames to the peer, for the peer's life
	acked    uint64        // sequence number of unacked[0]
	unacked  [][]byte      // frames numbered and not acknowledged, oldest first
	queued   int           // bytes held: unacked, and a linked peer's queue
	room     chan struct{} // closed and replaced when room is freed and roomWait
	roomWait bool          // a Send waits on room
	stopped  bool          // no more frames accepted
}

func newWindow() window { return window{epoch: rand.Uint64() | 1, room: make(chan struct{})} }

// admits reports whether size more bytes fit within limit (an empty
// window takes any frame). When they do not, it returns the channel
// closed once room is freed or the window stops.
func (w *window) admits(size, limit int) (bool, <-chan struct{}) {
	if w.queued == 0 || w.queued+size <= limit {
		return true, nil
	}
	w.roomWait = true
	return false, w.room
}

// acknowledge takes the peer's acknowledgement of the frames of epoch
// before next, of the first most of unacked (those it can have had): they
// are dropped, and their room freed. It returns how many were.
func (w *window) acknowledge(epoch, next uint64, most int) int {
	if epoch != w.epoch || next <= w.acked {
		return 0
	}
	k := next - w.acked
	if k > uint64(most) {
		// More than was sent: a broken peer. Take what there is.
		k = uint64(most)
	}
	freed := 0
	for _, f := range w.unacked[:k] {
		freed += len(f)
	}
	// Shift what is left to the front: the array is reused, with no
	// allocation per message exchanged.
	left := copy(w.unacked, w.unacked[k:])
	clear(w.unacked[left:])
	w.unacked = w.unacked[:left]
	w.acked += k
	w.queued -= freed
	if freed > 0 && w.roomWait && !w.stopped {
		close(w.room)
		w.room = make(chan struct{})
		w.roomWait = false
	}
	return int(k)
}

// stop takes no more frames, and lets those waiting for room go.
func (w *window) stop() {
	if !w.stopped {
		w.stopped = true
		close(w.room)
	}
}

// countMessages counts the messages among frames.
func countMessages(frames ...[][]byte) int {
	n := 0
	for _, fs := range frames {
		for _, f := range fs {
			if f[0] == wire.Message {
				n++
			}
		}
	}
	return n
}

// inbound is what arrived from one peer: of its epoch, every sequenced
// frame before next, acknowledged up to acked; bytes arrived since the
// last acknowledgement. wake tells the writer that an acknowledgement is
// due.
type inbound struct {
	mu    sync.Mutex
	epoch uint64
	next  uint64
	acked uint64
	bytes int
	reack bool // a frame delivered before came again: its acknowledgement was lost
	// Over NATS, where anyone may publish under the peer's name: the
	// epoch and next that a later epoch replaced, and the earlier epoch
	// of which frames were dropped since the last acknowledgement (0:
	// none). See stale.
	prev      recvPoint
	staleSeen uint64
	armed     bool
	timer     *time.Timer
	soon      int // bytes that make an acknowledgement due at once
	wake      func()
	closed    bool
}

// start takes the start of a stream of the peer's frames: epoch, and the
// number of the oldest frame the peer holds (start). A new epoch starts
// the count again, and one of the current epoch resumes it (its first
// frames may be ones this node has). skipped reports frames the peer no
// longer holds that never arrived (from expected on).
func (in *inbound) start(epoch, start uint64) (skipped bool, expected uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case epoch != in.epoch:
		in.prev = recvPoint{in.epoch, in.next}
		in.epoch, in.next, in.acked = epoch, start, start
	case start > in.next:
		expected = in.next
		in.next, in.acked = start, start
		return true, expected
	}
	return false, 0
}

// recvPoint is how far frames of one epoch arrived: every one before
// next.
type recvPoint struct{ epoch, next uint64 }

// current returns the epoch of the frames arriving now.
func (in *inbound) current() uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.epoch
}

// earlier reports whether epoch a comes before b, in serial number
// arithmetic (RFC 1982): every epoch has later ones, so a peer can
// always start one later than any that was seen.
func earlier(a, b uint64) bool { return int64(a-b) < 0 }

// stale notes frames of epoch, one earlier than the current one, that
// were dropped. Late frames of an epoch the peer left do that, and so do
// the peer's frames after an envelope forged in its name named a later
// epoch than the peer's: the peer would then be unheard until one of the
// two restarts. The next acknowledgement tells the peer which epoch this
// node follows (wire.Envelope.AckFollows), and, when epoch is the one it
// replaced, how far that one arrived: the peer starts a later one from
// there, and nothing is delivered twice.
func (in *inbound) stale(epoch uint64) {
	in.mu.Lock()
	in.staleSeen = epoch
	in.armLocked()
	in.mu.Unlock()
}

// expected returns the number of the next frame to deliver of epoch:
// false when frames of another epoch arrive now.
func (in *inbound) expected(epoch uint64) (uint64, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.next, epoch == in.epoch
}

// fresh reports whether the sequenced frame seq of a stream of epoch is
// one this node does not have yet. Frames are taken one at a time, in
// order, so that it stays so until delivered.
func (in *inbound) fresh(epoch, seq uint64) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return epoch == in.epoch && seq >= in.next
}

// delivered notes the sequenced frame seq of a stream of epoch, of size
// bytes, delivered, and arranges for its acknowledgement.
func (in *inbound) delivered(epoch, seq uint64, size int) {
	in.mu.Lock()
	if epoch != in.epoch {
		in.mu.Unlock()
		return
	}
	in.next = seq + 1
	in.bytes += size
	now := in.bytes >= max(in.soon, 1)
	if !now {
		in.armLocked()
	}
	in.mu.Unlock()
	if now {
		in.wake()
	}
}

// again notes a frame of the current epoch that was delivered before:
// the peer did not have its acknowledgement, and gets one again (after
// ackDelay, at most one per ackDelay however many come).
func (in *inbound) again() {
	in.mu.Lock()
	in.reack = true
	in.armLocked()
	in.mu.Unlock()
}

// armLocked starts the timer of an acknowledgement on its own; in.mu is
// held.
func (in *inbound) armLocked() {
	if in.armed || in.closed {
		return
	}
	in.armed = true
	if in.timer == nil {
		in.timer = time.AfterFunc(ackDelay, in.ackLater)
	} else {
		in.timer.Reset(ackDelay)
	}
}

// ackLater runs ackDelay after a frame arrived with no acknowledgement
// due.
func (in *inbound) ackLater() {
	in.mu.Lock()
	in.armed = false
	closed := in.closed
	in.mu.Unlock()
	if !closed && in.due() {
		in.wake()
	}
}

// due reports whether frames arrived that the peer has not been told of.
func (in *inbound) due() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.next > in.acked || in.reack || in.staleSeen != 0
}

// appendAck appends to b the acknowledgement to write now, if one is due.
func (in *inbound) appendAck(b []byte) []byte {
	if a, ok := in.takeAck(); ok {
		return wire.AppendAck(b, a.epoch, a.next)
	}
	return b
}

// ackOut is an acknowledgement to send: of epoch, every frame before
// next; with follows, the epoch this node follows (see stale).
type ackOut struct{ epoch, next, follows uint64 }

// takeAck returns the acknowledgement to send now, if one is due, and
// counts it sent.
func (in *inbound) takeAck() (ackOut, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.next <= in.acked && !in.reack && in.staleSeen == 0 {
		return ackOut{}, false
	}
	a := ackOut{epoch: in.epoch, next: in.next}
	if in.staleSeen != 0 {
		a.follows = in.epoch
		replaced := in.staleSeen == in.prev.epoch
		in.staleSeen = 0
		if replaced {
			// How far the replaced epoch arrived; the current one's
			// acknowledgement, if due, goes after ackDelay.
			a.epoch, a.next = in.prev.epoch, in.prev.next
			if in.next > in.acked || in.reack {
				in.armLocked()
			}
			return a, true
		}
	}
	in.acked, in.bytes, in.reack = in.next, 0, false
	return a, true
}

// stop stops the timer of an acknowledgement: nothing is acknowledged
// any more.
func (in *inbound) stop() {
	in.mu.Lock()
	in.closed = true
	if in.timer != nil {
		in.timer.Stop()
	}
	in.mu.Unlock()
}

// mark returns what arrived, to keep once the peer (its run) is down.
func (in *inbound) mark(run uint64, now time.Time) recvMark {
	in.mu.Lock()
	defer in.mu.Unlock()
	return recvMark{run: run, epoch: in.epoch, next: in.next, at: now}
}

// resume makes what arrived m's, when m is of run and recent.
func (in *inbound) resume(m recvMark, run uint64) {
	if m.run != run || time.Since(m.at) > markTTL {
		return
	}
	in.mu.Lock()
	in.epoch, in.next, in.acked = m.epoch, m.next, m.next
	in.mu.Unlock()
}

// pushCtl queues a control frame for the next write, ahead of what is
// queued, without waiting for room: it is not sequenced and not kept.
func (p *peer) pushCtl(frame []byte) { p.add(frame, true) }

// acknowledge takes the peer's acknowledgement of this node's frames of
// epoch before next.
func (p *peer) acknowledge(epoch, next uint64) {
	p.qmu.Lock()
	p.window.acknowledge(epoch, next, len(p.unacked))
	p.qmu.Unlock()
}

// startStream takes the header of a message stream from the peer.
func (p *peer) startStream(h wire.StreamHeader) {
	if skipped, expected := p.in.start(h.Epoch, h.Start); skipped {
		// Frames the peer no longer holds never arrived: it took them
		// for acknowledged. Not this protocol; say so and go on.
		p.n.log.Warn("peer's message stream skips frames; some of its messages were lost", "peer", p.id, "expected", expected, "got", h.Start)
	}
}

func (p *peer) fresh(epoch, seq uint64) bool          { return p.in.fresh(epoch, seq) }
func (p *peer) delivered(epoch, seq uint64, size int) { p.in.delivered(epoch, seq, size) }
func (p *peer) ackDue() bool                          { return p.in.due() }
func (p *peer) appendAck(b []byte) []byte             { return p.in.appendAck(b) }

// recvMark is what a node had received from a peer it declared down (a
// linked peer, or a member of another site): a later link from the same
// run, or the same run heard again over NATS (it did not find this node
// down), resumes the peer's stream, and what arrived is not delivered
// twice.
type recvMark struct {
	run   uint64
	epoch uint64
	next  uint64
	at    time.Time
}

// markTTL is how long a recvMark is kept.
const markTTL = time.Minute

// keepMark keeps m for id in marks, at most limit of them, dropping those
// past markTTL.
func keepMark(marks map[string]recvMark, id string, m recvMark, limit int) {
	for k, old := range marks {
		if m.at.Sub(old.at) > markTTL {
			delete(marks, k)
		}
	}
	if m.epoch != 0 && len(marks) < limit {
		marks[id] = m
	}
}

// saveMarkLocked keeps p's recvMark; n.mu is held.
func (n *Node) saveMarkLocked(p *peer) {
	keepMark(n.marks, p.id, p.in.mark(uint64(p.inc), time.Now()), n.cfg.MaxPeers)
}

// restoreMarkLocked gives a new peer what this node had received from its
// run before; n.mu is held.
func (n *Node) restoreMarkLocked(p *peer) {
	if m, ok := n.marks[p.id]; ok {
		delete(n.marks, p.id)
		p.in.resume(m, uint64(p.inc))
	}
}
