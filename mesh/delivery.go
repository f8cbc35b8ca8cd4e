package mesh

import (
	"time"

	"github.com/tallship-go/tallship/internal/wire"
)

// Delivery across links (docs/protocol.md, "Delivery"). Each peer's
// stream of frames from this node is numbered: a message stream's header
// says its epoch (this node's stream to that peer, for as long as it knows
// the peer) and the sequence number of its first sequenced frame
// (wire.Sequenced: messages and member lists), and each such frame after
// it takes the next number. The receiver acknowledges, cumulatively, on
// its own message stream to the sender: piggybacked on what it writes
// anyway, or on its own after ackDelay or once a quarter of
// SendQueueBytes has arrived since the last. The sender keeps what it
// wrote until then (SendQueueBytes counts it), writes it again at the
// start of the next stream when a link is lost, and the receiver drops
// what it has already: each frame is delivered once, in order.

// ackDelay is how long a receiver waits for something to piggyback an
// acknowledgement on before it writes one on its own.
const ackDelay = 10 * time.Millisecond

// pushCtl queues a control frame for the next write, ahead of what is
// queued, without waiting for room: it is not sequenced and not kept.
func (p *peer) pushCtl(frame []byte) { p.add(frame, true) }

// acknowledge takes the peer's acknowledgement of this node's frames of
// epoch before next: they are dropped, and their room freed.
func (p *peer) acknowledge(epoch, next uint64) {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	if epoch != p.epoch || next <= p.acked {
		return
	}
	k := next - p.acked
	if k > uint64(len(p.unacked)) {
		// More than was written: a broken peer. Take what there is.
		k = uint64(len(p.unacked))
	}
	freed := 0
	for _, f := range p.unacked[:k] {
		freed += len(f)
	}
	// Shift what is left to the front: the array is reused, with no
	// allocation per message exchanged.
	left := copy(p.unacked, p.unacked[k:])
	clear(p.unacked[left:])
	p.unacked = p.unacked[:left]
	p.acked += k
	p.queued -= freed
	if freed > 0 && p.roomWait && !p.stopped {
		close(p.room)
		p.room = make(chan struct{})
		p.roomWait = false
	}
}

// startStream takes the header of a message stream from the peer: a new
// epoch starts the count again, and a stream of the current one resumes
// it (its first frames may be ones this node has).
func (p *peer) startStream(h wire.StreamHeader) {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	switch {
	case h.Epoch != p.rEpoch:
		p.rEpoch, p.rNext, p.rAcked = h.Epoch, h.Start, h.Start
	case h.Start > p.rNext:
		// Frames the peer no longer holds never arrived: it took them
		// for acknowledged. Not this protocol; say so and go on.
		p.n.log.Warn("peer's message stream skips frames; some of its messages were lost", "peer", p.id, "expected", p.rNext, "got", h.Start)
		p.rNext, p.rAcked = h.Start, h.Start
	}
}

// fresh reports whether the sequenced frame seq of a stream of epoch is
// one this node does not have yet. Frames are taken one at a time, in
// order (see waitFinished), so that it stays so until delivered.
func (p *peer) fresh(epoch, seq uint64) bool {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	return epoch == p.rEpoch && seq >= p.rNext
}

// delivered notes the sequenced frame seq of a stream of epoch, of size
// bytes, delivered, and arranges for its acknowledgement.
func (p *peer) delivered(epoch, seq uint64, size int) {
	p.rmu.Lock()
	if epoch != p.rEpoch {
		p.rmu.Unlock()
		return
	}
	p.rNext = seq + 1
	p.rBytes += size
	now := p.rBytes >= max(p.n.cfg.SendQueueBytes/4, 1)
	if !now && !p.ackArmed {
		p.ackArmed = true
		if p.ackTimer == nil {
			p.ackTimer = time.AfterFunc(ackDelay, p.ackLater)
		} else {
			p.ackTimer.Reset(ackDelay)
		}
	}
	p.rmu.Unlock()
	if now {
		p.signal()
	}
}

// ackLater runs ackDelay after a frame arrived with no acknowledgement
// due.
func (p *peer) ackLater() {
	p.rmu.Lock()
	p.ackArmed = false
	p.rmu.Unlock()
	if p.ackDue() {
		p.signal()
	}
}

// ackDue reports whether frames arrived that the peer has not been told
// of.
func (p *peer) ackDue() bool {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	return p.rNext > p.rAcked
}

// appendAck appends to b the acknowledgement to write now, if one is due.
func (p *peer) appendAck(b []byte) []byte {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	if p.rNext <= p.rAcked {
		return b
	}
	p.rAcked, p.rBytes = p.rNext, 0
	return wire.AppendAck(b, p.rEpoch, p.rNext)
}

// recvMark is what a node had received from a peer it declared down: a
// link from the same run later (the peer did not find this node down)
// resumes the peer's stream, and what arrived is not delivered twice.
type recvMark struct {
	inc   int64
	epoch uint64
	next  uint64
	at    time.Time
}

// markTTL is how long a recvMark is kept.
const markTTL = time.Minute

// saveMarkLocked keeps p's recvMark; n.mu is held.
func (n *Node) saveMarkLocked(p *peer) {
	now := time.Now()
	for id, m := range n.marks {
		if now.Sub(m.at) > markTTL {
			delete(n.marks, id)
		}
	}
	p.rmu.Lock()
	m := recvMark{inc: p.inc, epoch: p.rEpoch, next: p.rNext, at: now}
	p.rmu.Unlock()
	if m.epoch != 0 && len(n.marks) < n.cfg.MaxPeers {
		n.marks[p.id] = m
	}
}

// restoreMarkLocked gives a new peer what this node had received from its
// run before; n.mu is held.
func (n *Node) restoreMarkLocked(p *peer) {
	m, ok := n.marks[p.id]
	if !ok {
		return
	}
	delete(n.marks, p.id)
	if m.inc == p.inc && time.Since(m.at) <= markTTL {
		p.rEpoch, p.rNext, p.rAcked = m.epoch, m.next, m.next
	}
}
