package mesh

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/transport"
)

// peer is a node this one has a link up with, or had until a moment ago
// and is linking with again (see recover.go). Its writer goroutine owns
// the outbound message stream: it writes the queued frames, in order, to
// the peer's current link.
//
// Delivery outlives links (docs/protocol.md, "Delivery"): the frames
// written are kept until the peer acknowledges them, and a new link's
// stream starts with those it has not; the peer drops what it has
// already. A peer is one run of a node (its hello's incarnation) seen by
// one peer struct: a restart, or a peer declared down and met again, is a
// new one, with a new epoch.
type peer struct {
	n   *Node
	id  string
	inc int64 // the peer's run

	// Guarded by Node.mu.
	active   *link   // nil while the peer's link is being made again
	retiring []*link // duplicates being wound down
	toRetire []*link // duplicates whose outbound stream the writer must end
	addrs    []netip.AddrPort
	since    time.Time
	relinked chan struct{} // while active is nil: closed when a link is back
	synced   bool          // PeerSynced was published
	goodbye  bool          // the peer said goodbye, on one of its links
	relaxed  bool          // its links are relaxed: others watch it (watch.go)
	observer bool          // it only observes (Config.Observer): not a member
	deadBy   []deadReport  // peers that said it is dead (watch.go)

	qmu   sync.Mutex
	queue [][]byte // frames; each may be shared with other peers' queues
	// window holds the frames written and not acknowledged (unacked);
	// its queued counts the queue's bytes too.
	window
	ctl     [][]byte      // control frames (probes, answers) for the next write
	leaving bool          // send a goodbye, then end
	writing bool          // a writer goroutine runs
	pending bool          // work arrived since the writer last looked
	wake    chan struct{} // tells a lingering writer that work arrived
	ended   bool          // the writer is done for good: writerDone is closed
	turn    bool          // a writer (the goroutine, or a Send's caller) writes
	waiting bool          // the writer goroutine waits for the turn
	ready   bool          // out is open on the active link, its header written
	written time.Time     // when the last turn ended

	done       chan struct{} // closed by stop
	stopOnce   sync.Once
	writerDone chan struct{}

	// The writer's state, touched only by whoever holds the turn (the
	// writer goroutine or a Send writing at once; qmu orders them).
	out     *outStream
	prev    uint64 // link of the last stream written to this peer
	broken  *link  // a link a write failed on: never written again
	scratch []byte // writeNow's acknowledgement and frame

	// What arrived from the peer.
	dmu sync.Mutex // held while a frame is delivered (Node.deliver)
	in  inbound
}

// peerUpLocked makes l the first link of a new peer; n.mu is held. With
// restart, the peer replaces an earlier run of the same node, whose
// PeerDown has been published: the registry, which holds the peer by id,
// is not told (it follows the runs on its own links), so that the
// records of the new run never flap.
func (n *Node) peerUpLocked(l *link, restart bool) {
	p := &peer{
		n:          n,
		id:         l.peer,
		inc:        l.tl.Remote().Incarnation,
		observer:   l.tl.Remote().Observer(),
		window:     newWindow(),
		active:     l,
		addrs:      l.tl.Remote().Addrs,
		since:      time.Now(),
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	p.in.soon, p.in.wake = n.cfg.SendQueueBytes/4, p.signal
	n.peers[p.id] = p
	l.p = p
	n.restoreMarkLocked(p)
	// The registry keeps the peer linked while the mesh does, whichever of
	// its links carries the registry stream (duplicates come and go).
	if !restart {
		n.reg.PeerUp(p.id)
	}
	if t := n.targets[p.id]; t != nil {
		t.addrs = mergeAddrs(t.addrs, p.addrs)
	}
	n.events.publish(Event{Kind: PeerUp, Peer: p.id, Addrs: slices.Clone(p.addrs), Observer: p.observer})
	n.log.Debug("peer up", "peer", p.id)
	n.exchangeLaterLocked(p, restart)
	n.rewatchLocked()
}

// retireLocked winds down l, a duplicate link to p: the writer ends its
// outbound stream on l; once the peer has ended its own, l closes. No
// message in flight on l is lost. n.mu is held.
func (n *Node) retireLocked(p *peer, l *link) {
	l.retiring = true
	p.retiring = append(p.retiring, l)
	p.toRetire = append(p.toRetire, l)
	p.signal()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*n.cfg.HandshakeTimeout)
		l.drain(ctx, n, true)
		cancel()
		l.tl.Close()
	}()
	n.log.Debug("duplicate link retired", "peer", p.id, "link", l.tl.ID(), "kept", p.active.tl.ID())
}

func (p *peer) dropRetiringLocked(l *link) {
	p.retiring = slices.DeleteFunc(p.retiring, func(r *link) bool { return r == l })
}

// signal tells the writer there is work, starting it if none runs: an
// idle peer has no writer goroutine.
func (p *peer) signal() {
	p.qmu.Lock()
	p.pending = true
	start := !p.writing && !p.ended
	if start {
		p.writing = true
		p.n.wg.Add(1)
	}
	p.qmu.Unlock()
	if start {
		go p.writeLoop()
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// stop ends the writer; frames still queued or unacknowledged are
// dropped. It returns how many of them were messages (0 after the first
// call).
func (p *peer) stop() (undelivered int) {
	p.stopOnce.Do(func() {
		p.qmu.Lock()
		p.window.stop()
		undelivered = countMessages(p.unacked, p.queue)
		p.queue, p.unacked, p.ctl = nil, nil, nil
		finish := !p.writing && !p.ended
		if finish {
			p.ended = true
		}
		p.qmu.Unlock()
		p.in.stop()
		close(p.done)
		if finish {
			close(p.writerDone)
		}
	})
	return undelivered
}

// leave asks the writer to send a goodbye after the queued frames and end.
func (p *peer) leave() {
	p.qmu.Lock()
	if !p.stopped {
		p.leaving = true
		p.window.stop()
	}
	p.qmu.Unlock()
	p.signal()
}

// left reports whether this node said goodbye to p (leave).
func (p *peer) left() bool {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	return p.leaving
}

// enqueue adds frame to p's queue, waiting for room while the queue and
// the frames the peer has not acknowledged hold more than limit bytes. The
// frame's bytes must not change afterwards. With now, a frame that finds
// the peer idle is written at once from the caller's goroutine (see
// writeNow).
func (p *peer) enqueue(ctx context.Context, frame []byte, limit int, now bool) error {
	for {
		p.qmu.Lock()
		if p.stopped {
			p.qmu.Unlock()
			return unknownPeer(p.id)
		}
		fits, room := p.admits(len(frame), limit)
		if now && fits && len(p.queue) == 0 && len(p.ctl) == 0 && p.ready && !p.turn && !p.pending &&
			time.Since(p.written) >= writeNowGap {
			p.turn = true
			p.unacked = append(p.unacked, frame)
			p.queued += len(frame)
			p.qmu.Unlock()
			p.writeNow(frame)
			return nil
		}
		if fits {
			p.queue = append(p.queue, frame)
			p.queued += len(frame)
			p.qmu.Unlock()
			p.signal()
			return nil
		}
		p.qmu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// writeNowGap is how long a peer must have been idle for a Send to write
// its frame at once. A message now and then (a request, the answer to one)
// then costs no hand-off to the writer goroutine and back (40% of a round
// trip's time on loopback); a stream of messages, each within the gap
// of the last, goes through the writer, which writes what queued meanwhile
// in one system call. (A variable for tests, which set it to 0 so that
// every Send finding the peer idle writes at once.)
var writeNowGap = 10 * time.Microsecond

// writeNow writes frame from the caller's goroutine, which took the turn.
// The write does not wait for the peer to read: what the stream's send
// window does not take now stays as the stream's head, which the writer
// goroutine writes before anything else. When the write fails, the link
// is marked broken and the frame goes with it, as when the writer's write
// fails (see pass).
func (p *peer) writeNow(frame []byte) {
	if ack := p.appendAck(p.scratch[:0]); len(ack) > 0 {
		// One write for both; the scratch is the turn holder's, and
		// free again once out.head (which may point into it) is written.
		p.scratch = append(ack, frame...)
		frame = p.scratch
	}
	n, err := p.out.s.WriteNoWait(frame)
	rest := false
	if err != nil {
		p.breakOff(err)
		p.scratch = nil // the failed write may still hold it
	} else if n < len(frame) {
		p.out.head = frame[n:]
		rest = true
	}
	p.qmu.Lock()
	if rest {
		p.pending = true
	}
	wake := p.release()
	p.qmu.Unlock()
	if wake {
		p.signal()
	}
}

// release ends a turn; qmu is held. It reports whether the writer
// goroutine has work, or waits for the turn.
func (p *peer) release() bool {
	p.turn = false
	p.ready = p.out != nil && p.out.head == nil
	p.written = time.Now()
	return len(p.queue) > 0 || p.pending || p.waiting
}

// take returns what the writer writes next: the control frames, then
// the queued frames, at most max bytes of them (at least one), which move
// to the unacknowledged ones. leaving reports that the queue is empty and
// the peer should get a goodbye.
func (p *peer) take(max int) (frames [][]byte, leaving bool) {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	size, i := 0, 0
	for i < len(p.queue) && (i == 0 || size+len(p.queue[i]) <= max) {
		size += len(p.queue[i])
		i++
	}
	frames = append(p.ctl, p.queue[:i]...)
	p.ctl = nil
	p.unacked = append(p.unacked, p.queue[:i]...)
	clear(p.queue[:i])
	p.queue = p.queue[i:]
	if len(p.queue) == 0 {
		p.queue = nil
	}
	return frames, p.leaving && len(p.queue) == 0
}

// work reports whether the writer has something to write: queued or
// control frames, a goodbye, the rest of a frame, an acknowledgement, or
// unacknowledged frames a new stream must write again.
func (p *peer) work() bool {
	p.qmu.Lock()
	w := len(p.queue) > 0 || len(p.ctl) > 0 || p.leaving ||
		(p.out == nil && len(p.unacked) > 0) || (p.out != nil && p.out.head != nil)
	p.qmu.Unlock()
	return w || p.ackDue()
}

// outStream is the writer's current outbound message stream.
type outStream struct {
	link   *link
	s      *transport.Stream
	head   []byte   // written before the next batch: the stream's header, or the rest of a frame writeNow began
	resend [][]byte // written first: the frames the peer had not acknowledged when the stream opened
}

// batchBytes bounds the frames the writer takes from the queue at once;
// they go out in one write. Small frames are copied into a pooled buffer,
// so an idle peer holds no buffer.
const (
	batchBytes  = 64 << 10
	directBytes = 16 << 10 // frames from this size on are written as they are
)

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchBytes); return &b }}

// writerLinger is how long the writer waits for more work before it
// ends: an idle peer holds no goroutine, and one exchanging messages back
// and forth does not start one per message.
const writerLinger = 2 * time.Millisecond

// writeLoop is the peer's writer: it runs while there is work (and
// writerLinger after), and ends for good (closing writerDone) once it has
// said goodbye or the peer stopped.
func (p *peer) writeLoop() {
	defer p.n.wg.Done()
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	lingered := false
	for {
		p.qmu.Lock()
		p.waiting = p.turn
		if p.waiting {
			// A Send writes; it signals when its turn ends.
			p.qmu.Unlock()
			<-p.wake
			continue
		}
		stopping := isClosed(p.done)
		if !stopping && !p.pending {
			if lingered {
				p.writing = false
				p.qmu.Unlock()
				return
			}
			p.qmu.Unlock()
			if linger == nil {
				linger = time.NewTimer(writerLinger)
			} else {
				linger.Reset(writerLinger)
			}
			select {
			case <-p.wake:
			case <-p.done:
			case <-linger.C:
				lingered = true
			}
			continue
		}
		lingered = false
		p.pending = false
		p.turn, p.ready = true, false
		p.qmu.Unlock()
		if stopping || p.pass() {
			p.end()
			p.qmu.Lock()
			p.writing, p.ended, p.turn = false, true, false
			p.qmu.Unlock()
			close(p.writerDone)
			return
		}
		p.qmu.Lock()
		p.release()
		p.qmu.Unlock()
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// end ends the current outbound stream, if any.
func (p *peer) end() {
	if p.out == nil {
		return
	}
	if p.out.head != nil {
		p.out.s.Write(p.out.head)
	}
	p.out.s.CloseWrite() // drain reads the peer's final Ack from it
	p.out.link.finishOut()
	p.prev = p.out.link.tl.ID()
	p.out = nil
}

// pass ends the streams of retired links and writes what is queued until
// the queue is empty. It returns true once it has sent the goodbye, or
// has none to send it on. Without a link to write on (the peer's is being
// made again), what is queued waits for the next.
func (p *peer) pass() bool {
	n := p.n
	for {
		n.mu.Lock()
		active := p.active
		retire := p.toRetire
		p.toRetire = nil
		n.mu.Unlock()
		for _, l := range retire {
			if p.out != nil && p.out.link == l {
				p.end()
				continue
			}
			// Open and end a stream on l, so that the peer knows that
			// nothing more comes on it.
			if s := p.open(l, p.prev); s != nil {
				s.s.Write(s.head)
				s.s.CloseWrite()
				p.prev = l.tl.ID()
			}
			l.finishOut()
		}
		if p.out != nil && p.out.link != active {
			p.end()
		}
		if !p.work() {
			return false
		}
		if active == nil || active == p.broken {
			p.qmu.Lock()
			leaving := p.leaving
			p.qmu.Unlock()
			return leaving
		}
		if p.out == nil {
			if p.out = p.open(active, p.prev); p.out == nil {
				p.broken = active
				active.tl.Close() // see breakOff
				continue
			}
		}
		frames, leaving := p.take(batchBytes)
		frames = append(p.out.resend, frames...)
		p.out.resend = nil
		if ack := p.appendAck(nil); ack != nil {
			frames = append([][]byte{ack}, frames...)
		}
		if leaving {
			frames = append(frames, wire.Frame(wire.Goodbye, nil))
		}
		if err := p.write(p.out, frames); err != nil {
			p.breakOff(err)
		}
		if leaving {
			return true
		}
	}
}

// breakOff gives up on the message stream a write failed on: its link is
// never written again, and is closed. Mostly its session has failed and
// it closes anyway; but a stream can fail alone (reset, closed), and so
// can opening one (open, within a stretched WriteTimeout, on a machine
// running late), and a link left up that way would show the peer linked
// while nothing reaches it, with no new link coming to carry on. The mesh
// makes it again, and the new stream starts with what the peer has not
// acknowledged. The caller holds the turn.
func (p *peer) breakOff(err error) {
	l := p.out.link
	p.n.log.Debug("write to peer failed; closing the link", "peer", p.id, "link", l.tl.ID(), "err", err)
	p.broken, p.prev, p.out = l, l.tl.ID(), nil
	l.tl.Close()
}

// open opens a message stream on l, telling the peer which link carried
// the previous one and where the stream starts: with the frames the peer
// has not acknowledged, which it writes first (resend).
func (p *peer) open(l *link, prev uint64) *outStream {
	ctx, cancel := context.WithTimeout(context.Background(), lag.Stretch(p.n.cfg.WriteTimeout))
	defer cancel()
	s, err := l.tl.OpenStream(ctx, protoMessages)
	if err != nil {
		p.n.log.Debug("cannot open message stream; closing the link", "peer", p.id, "err", err)
		return nil
	}
	p.n.mu.Lock()
	l.out = s
	p.n.mu.Unlock()
	p.qmu.Lock()
	h := wire.StreamHeader{Prev: prev, Epoch: p.epoch, Start: p.acked}
	resend := slices.Clone(p.unacked)
	p.qmu.Unlock()
	if len(resend) > 0 {
		p.n.log.Debug("writing again what the peer has not acknowledged", "peer", p.id, "frames", len(resend), "link", l.tl.ID())
	}
	return &outStream{link: l, s: s, head: h.Append(nil), resend: resend}
}

// write sends frames on o, small ones gathered into one write. There is
// no write deadline: a peer that reads slowly holds the writer back through
// yamux's flow control, and a dead one is found by the link's keepalive,
// which ends the write.
func (p *peer) write(o *outStream, frames [][]byte) error {
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	buf := append((*bp)[:0], o.head...)
	o.head = nil
	for _, f := range frames {
		if len(f) < directBytes && len(buf)+len(f) <= batchBytes {
			buf = append(buf, f...)
			continue
		}
		if len(buf) > 0 {
			if _, err := o.s.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		if len(f) >= directBytes {
			if _, err := o.s.Write(f); err != nil {
				return err
			}
		} else {
			buf = append(buf, f...)
		}
	}
	if len(buf) > 0 {
		if _, err := o.s.Write(buf); err != nil {
			return err
		}
	}
	*bp = buf[:0]
	return nil
}

// push adds a small frame (a member list) to p's queue without waiting
// for room.
func (p *peer) push(frame []byte) { p.add(frame, false) }

// add queues frame, to the control frames with ctl, without waiting for
// room, unless p has stopped.
func (p *peer) add(frame []byte, ctl bool) {
	p.qmu.Lock()
	if p.stopped {
		p.qmu.Unlock()
		return
	}
	if ctl {
		p.ctl = append(p.ctl, frame)
	} else {
		p.queue = append(p.queue, frame)
		p.queued += len(frame)
	}
	p.qmu.Unlock()
	p.signal()
}

func mergeAddrs(a, b []netip.AddrPort) []netip.AddrPort {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}
