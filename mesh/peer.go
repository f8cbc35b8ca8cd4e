package mesh

import (
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/transport"
)

// peer is a node this one has a link up with. Its writer goroutine owns
// the outbound message stream: it writes the queued frames, in order, to
// the peer's current link.
type peer struct {
	n  *Node
	id string

	// Guarded by Node.mu.
	active   *link
	retiring []*link // duplicates being wound down
	toRetire []*link // duplicates whose outbound stream the writer must end
	addrs    []netip.AddrPort
	since    time.Time

	qmu     sync.Mutex
	queue   [][]byte      // frames; each may be shared with other peers' queues
	queued  int           // bytes in queue
	room    chan struct{} // closed and replaced when the writer takes frames
	stopped bool          // no more frames accepted
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
	out    *outStream
	prev   uint64 // link of the last stream written to this peer
	broken *link  // a link a write failed on: never written again
}

// peerUpLocked makes l the first link of a new peer; n.mu is held.
func (n *Node) peerUpLocked(l *link) {
	p := &peer{
		n:          n,
		id:         l.peer,
		active:     l,
		addrs:      l.tl.Remote().Addrs,
		since:      time.Now(),
		room:       make(chan struct{}),
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	n.peers[p.id] = p
	// The registry keeps the peer linked while the mesh does, whichever of
	// its links carries the registry stream (duplicates come and go).
	n.reg.PeerUp(p.id)
	if t := n.targets[p.id]; t != nil {
		t.addrs = mergeAddrs(t.addrs, p.addrs)
	}
	n.events.publish(Event{Kind: PeerUp, Peer: p.id, Addrs: slices.Clone(p.addrs)})
	n.log.Debug("peer up", "peer", p.id)
	n.exchangeLocked(p)
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

// stop ends the writer; frames still queued are dropped.
func (p *peer) stop() {
	p.stopOnce.Do(func() {
		p.qmu.Lock()
		if !p.stopped {
			p.stopped = true
			close(p.room)
		}
		finish := !p.writing && !p.ended
		if finish {
			p.ended = true
		}
		p.qmu.Unlock()
		close(p.done)
		if finish {
			close(p.writerDone)
		}
	})
}

// leave asks the writer to send a goodbye after the queued frames and end.
func (p *peer) leave() {
	p.qmu.Lock()
	if !p.stopped {
		p.stopped = true
		p.leaving = true
		close(p.room)
	}
	p.qmu.Unlock()
	p.signal()
}

// enqueue adds frame to p's queue, waiting for room while the queue holds
// more than limit bytes. The frame's bytes must not change afterwards.
// With now, a frame that finds the peer idle is written at once from the
// caller's goroutine (see writeNow).
func (p *peer) enqueue(ctx context.Context, frame []byte, limit int, now bool) error {
	for {
		p.qmu.Lock()
		if p.stopped {
			p.qmu.Unlock()
			return unknownPeer(p.id)
		}
		if now && p.queued == 0 && p.ready && !p.turn && !p.pending &&
			time.Since(p.written) >= writeNowGap {
			p.turn = true
			p.qmu.Unlock()
			p.writeNow(frame)
			return nil
		}
		if p.queued == 0 || p.queued+len(frame) <= limit {
			p.queue = append(p.queue, frame)
			p.queued += len(frame)
			p.qmu.Unlock()
			p.signal()
			return nil
		}
		room := p.room
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
	n, err := p.out.s.WriteNoWait(frame)
	rest := false
	if err != nil {
		p.n.log.Debug("write to peer failed", "peer", p.id, "err", err)
		p.broken, p.prev, p.out = p.out.link, p.out.link.tl.ID(), nil
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

// take removes the queued frames, at most max bytes of them (at least one).
func (p *peer) take(max int) (frames [][]byte, leaving bool) {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	size, i := 0, 0
	for i < len(p.queue) && (i == 0 || size+len(p.queue[i]) <= max) {
		size += len(p.queue[i])
		i++
	}
	frames = slices.Clone(p.queue[:i])
	clear(p.queue[:i])
	p.queue = p.queue[i:]
	if len(p.queue) == 0 {
		p.queue = nil
	}
	p.queued -= size
	if i > 0 && !p.stopped {
		close(p.room)
		p.room = make(chan struct{})
	}
	return frames, p.leaving && len(p.queue) == 0
}

// outStream is the writer's current outbound message stream.
type outStream struct {
	link *link
	s    *transport.Stream
	head []byte // written before the next batch: the stream's header, or the rest of a frame writeNow began
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

func isClosed(ch chan struct{}) bool {
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
	p.out.s.Close()
	p.out.link.finishOut()
	p.prev = p.out.link.tl.ID()
	p.out = nil
}

// pass ends the streams of retired links and writes what is queued until
// the queue is empty. It returns true once it has sent the goodbye.
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
				s.s.Close()
				p.prev = l.tl.ID()
			}
			l.finishOut()
		}
		if p.out != nil && p.out.link != active {
			p.end()
		}
		frames, leaving := p.take(batchBytes)
		if leaving {
			frames = append(frames, wire.Frame(wire.Goodbye, nil))
		}
		if len(frames) == 0 && (p.out == nil || p.out.head == nil) {
			return false
		}
		if p.out == nil && active != p.broken {
			p.out = p.open(active, p.prev)
			if p.out == nil {
				p.broken = active
			}
		}
		if p.out != nil {
			if err := p.write(p.out, frames); err != nil {
				n.log.Debug("write to peer failed", "peer", p.id, "err", err)
				p.broken, p.prev, p.out = p.out.link, p.out.link.tl.ID(), nil
			}
		} // else the link is going down, and the frames with it
		if leaving {
			return true
		}
	}
}

// open opens a message stream on l, telling the peer which link carried
// the previous one.
func (p *peer) open(l *link, prev uint64) *outStream {
	ctx, cancel := context.WithTimeout(context.Background(), lag.Stretch(p.n.cfg.WriteTimeout))
	defer cancel()
	s, err := l.tl.OpenStream(ctx, protoMessages)
	if err != nil {
		p.n.log.Debug("cannot open message stream", "peer", p.id, "err", err)
		return nil
	}
	p.n.mu.Lock()
	l.out = s
	p.n.mu.Unlock()
	return &outStream{link: l, s: s, head: binary.BigEndian.AppendUint64(nil, prev)}
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

// push adds a small control frame to p's queue without waiting for room.
func (p *peer) push(frame []byte) {
	p.qmu.Lock()
	if p.stopped {
		p.qmu.Unlock()
		return
	}
	p.queue = append(p.queue, frame)
	p.queued += len(frame)
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
