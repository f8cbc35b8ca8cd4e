package mesh

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/transport"
)

// Stream protocols of the mesh itself; users' protocols get the user
// prefix, so they can never collide.
const (
	protoMessages = "t/msg"
	userPrefix    = "u/"
)

// link is the node's view of one transport link.
type link struct {
	tl   *transport.Link
	peer string
	p    *peer // the peer (run) it links to; guarded by Node.mu

	// Guarded by Node.mu: why the node closed it, when it closed it for
	// a peer's fault (no redial then); and the probes of its silence
	// (probe.go).
	bad       error
	dead      error     // found silent by the peer's watchers, or by a sweep (watch.go)
	tell      bool      // by this node's sweep: the others are told
	vouched   time.Time // when another peer last said it hears the peer
	vouches   int       // vouches in a row, the link silent all along
	suspected time.Time // when the link was last found silent

	// inDone is closed once the peer's message stream on this link has
	// been read to its end, or the link has closed without one.
	inDone     chan struct{}
	inDoneOnce sync.Once
	inStarted  bool // guarded by Node.mu
	regStarted bool // guarded by Node.mu

	// out is this node's message stream on the link, set by the peer's
	// writer under Node.mu; outEnded is closed once the writer has ended
	// it (sent its FIN) or will never open one.
	out          *transport.Stream
	outEnded     chan struct{}
	outEndedOnce sync.Once
	retiring     bool // guarded by Node.mu: a duplicate being wound down
	goodbye      bool // guarded by Node.mu: the peer said it leaves
}

func (l *link) finishIn() { l.inDoneOnce.Do(func() { close(l.inDone) }) }

func (l *link) finishOut() { l.outEndedOnce.Do(func() { close(l.outEnded) }) }

// drain waits, until ctx ends, until this node's message stream on l has
// ended and the peer has read it to its end (the peer then closes it in
// turn) and, when both is set, until the peer's stream has been read to
// its end too. Only then may l close without a TCP reset destroying bytes
// the peer has not read yet. When ctx ends first, messages on l may be
// lost: that is logged.
func (l *link) drain(ctx context.Context, n *Node, both bool) {
	start := time.Now()
	lost := func(what string) {
		n.log.Warn("link closed before its messages were all read; some may be lost", "peer", l.peer, "link", l.tl.ID(),
			"waited", time.Since(start).Round(time.Millisecond), "for", what)
	}
	wait := []chan struct{}{l.outEnded}
	if both {
		wait = append(wait, l.inDone)
	}
	for i, ch := range wait {
		select {
		case <-ch:
		case <-ctx.Done():
			lost([...]string{"this node's stream to end", "the peer's stream to be read"}[i])
			return
		case <-l.tl.Done():
			return
		}
	}
	n.mu.Lock()
	out, p := l.out, l.p
	n.mu.Unlock()
	if out != nil {
		stop := context.AfterFunc(ctx, func() { out.SetReadDeadline(time.Unix(1, 0)) })
		err := readFinalAck(out, p)
		stop()
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() && !l.tl.IsClosed() {
			lost("the peer to read this node's stream")
		}
	}
}

// readFinalAck reads what the peer writes back on this node's message
// stream until it closes it: after this node's goodbye, an Ack of what
// it received (see readMessages), which p (when set) takes. The peer
// acknowledges on its own stream otherwise, a while after the messages
// arrive (ackDelay): a node that said goodbye right after a Send would
// count the message undelivered though it arrived. Anything else the
// peer writes is dropped. The error is the read's, nil at the stream's
// end.
func readFinalAck(out io.Reader, p *peer) error {
	r := wire.NewReaderTypes(out, 64, wire.Ack, wire.Ack)
	for {
		typ, payload, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, wire.ErrBadFrame) || errors.Is(err, wire.ErrTooLarge) {
			_, err = io.Copy(io.Discard, out)
			return err
		}
		if err != nil {
			return err
		}
		if epoch, next, perr := wire.ParseAck(payload); typ == wire.Ack && perr == nil && p != nil {
			p.acknowledge(epoch, next)
		}
	}
}

// acceptLoop accepts TCP connections and runs their handshakes.
func (n *Node) acceptLoop(ln net.Listener) {
	defer n.wg.Done()
	var pause time.Duration // after an accept that failed: see acceptFailed
	var warned time.Time    // when a failed accept was last said at Warn
	failed := 0
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-n.closing:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				n.log.Warn("listener closed; this node accepts no more links", "err", err)
				return
			}
			failed++
			n.stats.acceptsFailed.Add(1)
			pause = n.acceptFailed(err, failed, pause, &warned)
			timer := time.NewTimer(pause)
			select {
			case <-timer.C:
			case <-n.closing:
				timer.Stop()
				return
			}
			continue
		}
		if failed > 0 {
			n.log.Debug("accepting links again", "failed", failed)
			failed, pause = 0, 0
		}
		select {
		case n.handshakes <- struct{}{}:
		default:
			n.log.Warn("too many handshakes in progress; dropping connection", "addr", conn.RemoteAddr().String(), "max", cap(n.handshakes))
			conn.Close()
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer func() { <-n.handshakes }()
			n.serveConn(conn)
		}()
	}
}

// acceptFailed says why an accept failed, at Warn for the first failure
// of a run of them (at most once a minute: warned is when it last did)
// and at Debug after, and returns how long to wait before the next: 5 ms
// after the first, twice the last after each other, at most a second (as
// net/http does). Such a failure is the process's and passes: mostly too
// many open files (EMFILE, ENFILE: links, streams and the application's
// own share the limit), or a connection that the peer reset before it
// was taken. The node accepts again once it passes; until then dials to
// it wait in the kernel's queue, or time out.
func (n *Node) acceptFailed(err error, failed int, last time.Duration, warned *time.Time) time.Duration {
	if failed == 1 && time.Since(*warned) >= time.Minute {
		*warned = time.Now()
		args := []any{"err", err}
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			args = append(args, "hint", "the process has too many open files: raise its limit (ulimit -n); each link takes one")
		}
		n.log.Warn("accept failed; trying again", args...)
	} else {
		n.log.Debug("accept failed again", "err", err, "failed", failed)
	}
	if last == 0 {
		return 5 * time.Millisecond
	}
	return min(2*last, time.Second)
}

// serveConn runs the acceptor's handshake on conn.
func (n *Node) serveConn(conn net.Conn) {
	ctx := n.ctx
	var pendingID uint64
	var from string
	var admitted *transport.Hello
	claimed := "" // the peer's id, once its hello has passed the checks before admit
	verify := func(h transport.Hello) error {
		claimed = h.ID
		if err := n.admit(h, netip.AddrPort{}); err != nil {
			return err
		}
		admitted = &h
		// The dialer may use the link as soon as it reads our verdict;
		// mark it pending so its message streams can be ordered. And a
		// dial of ours to it waits (see dialLoop).
		pendingID = binary.BigEndian.Uint64(h.Nonce[:8])
		n.mu.Lock()
		n.pending[pendingID] = make(chan struct{})
		n.inbound[h.ID]++
		from = h.ID
		n.yieldLocked(h.ID)
		n.mu.Unlock()
		return nil
	}
	tl, err := transport.Server(ctx, conn, n.hello(0), n.tcfg, verify)
	if err != nil {
		if admitted != nil {
			n.unclaim(admitted.ID, admitted.Incarnation)
		}
		n.noteRefusal(err)
		n.handshakeFailed(err)
		conn.Close()
		n.log.Debug("link refused", "addr", conn.RemoteAddr().String(), "err", err)
		if remote, perr := netip.ParseAddrPort(conn.RemoteAddr().String()); perr == nil && n.ctx.Err() == nil {
			remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
			n.linkFailed(remote, false, true, claimed, fmt.Errorf("mesh: link from %s: %w", remote, err))
		}
	} else {
		n.addLink(tl)
	}
	if pendingID != 0 {
		n.mu.Lock()
		if ch, ok := n.pending[pendingID]; ok {
			close(ch)
			delete(n.pending, pendingID)
		}
		if n.inbound[from]--; n.inbound[from] <= 0 {
			delete(n.inbound, from)
		}
		n.mu.Unlock()
	}
}

// hello is what this node says in a handshake.
func (n *Node) hello(dialSeq uint64) transport.Hello {
	n.mu.Lock()
	addrs := n.addrs
	n.mu.Unlock()
	return transport.Hello{
		Version:     transport.Version,
		Cluster:     n.cluster,
		ID:          n.id,
		Addrs:       addrs,
		Incarnation: n.incarnation,
		DialSeq:     dialSeq,
	}
}

// addLink takes a link whose handshake succeeded into the mesh, applying
// the duplicate rule when the peer already has one.
func (n *Node) addLink(tl *transport.Link) *link {
	l := &link{tl: tl, peer: tl.Peer(), inDone: make(chan struct{}), outEnded: make(chan struct{})}
	n.mu.Lock()
	// The run's claim (admit) ends here: from now on it is the peer, or
	// its link is closed below.
	late := n.lateLocked(tl)
	n.unclaimLocked(l.peer, tl.Remote().Incarnation)
	if n.closed {
		n.mu.Unlock()
		tl.Close()
		return nil
	}
	if late {
		// Its run has left this node with a goodbye since the link's
		// handshake was admitted (twin.go): the link is not taken in.
		n.mu.Unlock()
		n.log.Debug("late link of a peer that left closed", "peer", l.peer, "link", tl.ID())
		tl.Close()
		return l
	}
	n.links[tl.ID()] = l
	n.stats.linksMade.Add(1)
	for _, a := range tl.Remote().Addrs {
		n.addrOwner[a] = l.peer
	}
	if ap, err := netip.ParseAddrPort(tl.RemoteAddr().String()); err == nil {
		n.addrOwner[ap] = l.peer
	}
	p := n.peers[l.peer]
	switch inc := tl.Remote().Incarnation; {
	case p == nil:
		n.peerUpLocked(l, false)
	case inc > p.inc:
		// The peer restarted with the same id (admit found its old
		// run gone): the new run is a new peer, given the mesh's members
		// like any other.
		n.peerDownLocked(p, errors.New("peer restarted"), true)
		n.peerUpLocked(l, true)
	case inc < p.inc:
		tl.Close() // a late link to an earlier run (admit refuses those)
	case p.active == nil:
		// The link is back (recover.go): what the peer has not
		// acknowledged goes again on it.
		l.p = p
		n.relinkLocked(p, l)
	case transport.Prefer(p.active.tl, tl) == tl:
		l.p = p
		old := p.active
		p.active = l
		n.applyWatchLocked(p)
		n.retireLocked(p, old)
	default:
		l.p = p
		n.retireLocked(p, l)
	}
	n.wg.Add(1)
	if tl.Outbound() {
		n.wg.Add(1)
		go n.openRegistry(l)
	}
	n.mu.Unlock()
	// The link's streams are served, and its end noticed, without a
	// goroutine of its own while it idles (the wg count taken above ends
	// with linkClosed).
	tl.Serve(func(s *transport.Stream, err error) { n.serveStream(l, s, err) }, func() {
		defer n.wg.Done()
		n.linkClosed(l)
	})
	n.log.Debug("link up", "peer", l.peer, "addr", tl.RemoteAddr().String(), "link", tl.ID(), "outbound", tl.Outbound())
	return l
}

// serveStream takes a stream the peer opened on l; the link's Serve calls
// it for each, in order.
func (n *Node) serveStream(l *link, s *transport.Stream, err error) {
	if err != nil {
		if !l.tl.IsClosed() {
			n.log.Info("bad stream from peer", "peer", l.peer, "err", err)
		}
		return
	}
	if k := l.tl.NumStreams(); k > n.cfg.MaxStreams {
		if k > 2*n.cfg.MaxStreams {
			// A stream refused stays until the peer closes its side
			// (yamux resets it after a minute): a peer that goes on
			// opening streams it does not close floods the link.
			n.log.Warn("peer keeps opening streams past the limit; closing the link", "peer", l.peer, "streams", k, "max", n.cfg.MaxStreams)
			l.tl.Close()
			s.Close()
			return
		}
		n.log.Warn("stream limit reached; refusing stream", "peer", l.peer, "max", n.cfg.MaxStreams)
		s.Close()
		return
	}
	switch proto := s.Protocol(); {
	case proto == protoMessages:
		n.mu.Lock()
		dup := l.inStarted
		l.inStarted = true
		n.mu.Unlock()
		if dup {
			n.log.Warn("second message stream on a link; closing it", "peer", l.peer)
			l.tl.Close()
			s.Close()
			return
		}
		n.wg.Add(1)
		go n.readMessages(l, s)
	case proto == protoRegistry:
		// One registry stream per link, opened by its dialer.
		n.mu.Lock()
		dup := l.regStarted || l.tl.Outbound()
		l.regStarted = true
		n.mu.Unlock()
		if dup {
			n.log.Warn("unexpected registry stream; closing the link", "peer", l.peer)
			l.tl.Close()
			s.Close()
			return
		}
		n.wg.Add(1)
		go n.serveRegistry(l, s)
	case strings.HasPrefix(proto, userPrefix):
		n.deliverStream(strings.TrimPrefix(proto, userPrefix), s)
	default:
		n.log.Info("stream of unknown protocol", "peer", l.peer, "protocol", proto)
		s.Close()
	}
}

// linkClosed forgets l once its session has ended.
func (n *Node) linkClosed(l *link) {
	l.tl.Close()
	// Let the reader take what arrived before the end (a goodbye, the
	// last messages) unless it is stuck on a full receive buffer.
	n.mu.Lock()
	reading := l.inStarted
	n.mu.Unlock()
	if reading {
		t := time.NewTimer(n.cfg.WriteTimeout)
		select {
		case <-l.inDone:
		case <-t.C:
		case <-n.closing:
		}
		t.Stop()
	}
	l.finishIn()
	l.finishOut()
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.links, l.tl.ID())
	p := l.p
	if p == nil || n.peers[l.peer] != p {
		return
	}
	if p.active != l {
		p.dropRetiringLocked(l)
		return
	}
	var lost []netip.AddrPort // the peer may live on: see redialLocked
	switch silent := errors.Is(l.tl.Err(), transport.ErrSilent); {
	case l.goodbye || p.goodbye || p.left():
		n.peerDownLocked(p, nil, false)
	case n.closed:
		n.peerDownLocked(p, errors.New("link lost"), false)
	case l.bad != nil:
		n.peerDownLocked(p, l.bad, false)
	case l.dead != nil:
		lost = p.lostAddrs()
		n.peerDownLocked(p, l.dead, false)
		if l.tell {
			n.tellDeadLocked(p)
		}
	case silent && time.Since(l.vouched) > n.silentBound():
		// Silent, and nobody said they hear it (probe.go).
		lost = p.lostAddrs()
		n.peerDownLocked(p, fmt.Errorf("link lost: %w", l.tl.Err()), false)
		n.tellDeadLocked(p)
		n.sweepLocked()
	default:
		// The link broke, or the peer closed it: the peer may live on.
		// Its link is made again, and nothing is lost (recover.go).
		n.recoverLocked(p, l)
		return
	}
	n.redialLocked(l.peer, lost)
}

// redialLocked redials a peer that went down: one kept, one a discoverer
// still reports present, and, when lost holds its addresses (its link was
// lost, not closed with a goodbye or for a fault of the peer's, nor
// refused), any other: while the registry reaches it through other nodes'
// links (see dialLoop), it lives and only this link failed. Peers known
// from member lists alone, or from discoverers that report each peer
// once, would otherwise never be dialed again: no new member list comes
// while the other links stay up. n.mu is held.
func (n *Node) redialLocked(id string, lost []netip.AddrPort) {
	if n.closed {
		return
	}
	t := n.targets[id]
	if t == nil && len(lost) > 0 {
		t = n.targetLocked(id)
		t.addrs = slices.Clone(lost)
	}
	if t == nil || !(t.kept || t.announced || len(lost) > 0) {
		return
	}
	delay := n.cfg.DialBackoff
	if !t.kept && n.id > t.id {
		delay = lag.Stretch(n.cfg.FallbackDelay) // the lower id dials first
	}
	n.startDialLocked(t, delay)
}

// lostAddrs returns where to dial p again after its link was lost (see
// redialLocked): its addresses; none for an observer, which nobody dials
// (it dials the members it finds).
func (p *peer) lostAddrs() []netip.AddrPort {
	if p.observer {
		return nil
	}
	return p.addrs
}

// reachableLocked reports whether the registry reaches the peer id
// through other nodes' links (registry.Registry.Reachable). n.mu is held.
func (n *Node) reachableLocked(id string) bool {
	return id != "" && n.reg != nil && n.reg.Reachable(id)
}

// readMessages reads the peer's message stream on l.
func (n *Node) readMessages(l *link, s *transport.Stream) {
	defer n.wg.Done()
	defer l.finishIn()
	defer s.Close()
	var hb [wire.StreamHeaderLen]byte
	s.SetReadDeadline(time.Now().Add(lag.Stretch(n.cfg.HandshakeTimeout)))
	if _, err := io.ReadFull(s, hb[:]); err != nil {
		n.log.Info("message stream without header", "peer", l.peer, "err", err)
		return
	}
	s.SetReadDeadline(time.Time{})
	h := wire.ParseStreamHeader(hb[:])
	if !n.waitFinished(h.Prev) {
		return
	}
	n.mu.Lock()
	p := l.p
	n.mu.Unlock()
	if p == nil {
		return // a link to a run that is gone
	}
	p.startStream(h)
	seq := h.Start
	r := wire.NewReader(s, n.cfg.MaxMessageSize)
	for {
		typ, payload, err := r.Next()
		if err != nil {
			if err != io.EOF && !errors.Is(err, net.ErrClosed) && !isClosedStream(err) && !l.tl.IsClosed() {
				n.dropLink(l, "bad frame from peer", err)
			}
			return
		}
		if wire.Sequenced(typ) {
			seq++
			if err := n.deliver(p, l, h.Epoch, seq-1, typ, payload); err != nil {
				if err != errClosed {
					n.dropLink(l, "bad member list from peer", err)
				}
				return
			}
			continue
		}
		switch typ {
		case wire.Goodbye:
			n.mu.Lock()
			l.goodbye, p.goodbye = true, true
			if p.active == nil && n.peers[p.id] == p {
				// Its goodbye came on a link other than the one lost:
				// it left, there is nothing to make again.
				n.peerDownLocked(p, nil, false)
			}
			n.mu.Unlock()
			// Tell the peer, back on its own stream, what arrived: it
			// reads that before the stream's end (see readFinalAck), and
			// counts the rest undelivered.
			if ack := p.appendAck(nil); len(ack) > 0 {
				s.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
				s.Write(ack)
				s.SetWriteDeadline(time.Time{})
			}
			// Nothing follows a goodbye: the peer is down now, not when
			// it has said goodbye to every other peer and closed its
			// links. Those it closes itself: what it sent before on
			// their other streams (its registry's leaving state) is
			// read still.
			n.mu.Lock()
			if n.peers[p.id] == p && !n.closed {
				n.peerEndLocked(p, nil, false)
			}
			n.mu.Unlock()
			return
		case wire.Ack:
			epoch, next, err := wire.ParseAck(payload)
			if err != nil {
				n.dropLink(l, "bad acknowledgement from peer", err)
				return
			}
			p.acknowledge(epoch, next)
		case wire.Probe:
			nonce, inc, id, err := wire.ParseProbe(payload)
			if err != nil {
				n.dropLink(l, "bad probe from peer", err)
				return
			}
			n.answerProbe(p, nonce, inc, id)
		case wire.ProbeReply:
			nonce, answer, err := wire.ParseProbeReply(payload)
			if err != nil {
				n.dropLink(l, "bad probe answer from peer", err)
				return
			}
			n.probeAnswered(p, nonce, answer)
		case wire.Dead:
			inc, id, err := wire.ParseDead(payload)
			if err != nil {
				n.dropLink(l, "bad report of a dead node from peer", err)
				return
			}
			n.deadReported(p, inc, id)
		}
	}
}

// deliver delivers the sequenced frame seq of p's stream of epoch on l,
// unless this node has it already. The frames of one peer are delivered
// one at a time: the reader of a lost link may still be handing its last
// message to Receive when the next link's stream begins with it again.
// It returns errClosed when the node closes first, and a member list's
// error.
func (n *Node) deliver(p *peer, l *link, epoch, seq uint64, typ byte, payload []byte) error {
	p.dmu.Lock()
	defer p.dmu.Unlock()
	if !p.fresh(epoch, seq) {
		return nil // had it, from an earlier link
	}
	switch typ {
	case wire.Message:
		select {
		case n.recv <- Message{From: l.peer, Data: payload}:
			n.stats.received(len(payload))
		case <-n.closing:
			return errClosed
		}
	case wire.Members:
		ms, err := wire.ParseMembers(payload)
		if err != nil {
			return err
		}
		n.learnMembers(ms)
	}
	p.delivered(epoch, seq, len(payload))
	return nil
}

// dropLink closes l for its peer's fault (a frame that breaks the
// protocol): its peer goes down at once, and is not redialed.
func (n *Node) dropLink(l *link, what string, err error) {
	n.log.Warn(what+"; closing its link", "peer", l.peer, "err", err)
	n.mu.Lock()
	if l.bad == nil {
		l.bad = fmt.Errorf("%s: %w", what, err)
	}
	n.mu.Unlock()
	l.tl.Close()
}

func isClosedStream(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "stream closed") || strings.Contains(err.Error(), "session shutdown") || strings.Contains(err.Error(), "connection reset"))
}

// waitFinished waits until the link with id prev, whose message stream
// the peer wrote before the one now starting, has been read to its end:
// this keeps each peer's messages in order across a change of link. It
// returns false when the node closes first.
func (n *Node) waitFinished(prev uint64) bool {
	if prev == 0 {
		return true
	}
	for {
		n.mu.Lock()
		l := n.links[prev]
		ch := n.pending[prev]
		n.mu.Unlock()
		switch {
		case l != nil:
			ch = l.inDone
		case ch == nil:
			return true // gone, or never reached this node
		}
		select {
		case <-ch:
			if l != nil {
				return true
			}
		case <-n.closing:
			return false
		}
	}
}

// noteRefusal publishes IDConflict when a handshake's error says that
// this node is the run to give its id up: a peer refused it because the
// peer holds another live run of its id, or the peer is an earlier run of
// its id (transport.TwinError). An earlier run that refuses a twin only
// logs it.
func (n *Node) noteRefusal(err error) {
	var twin *transport.TwinError
	var refusal *transport.RefusalError
	switch {
	case errors.As(err, &twin) && !twin.Yield:
		n.log.Warn("refused a later run with this node's id", "err", err)
	case errors.As(err, &twin) || (errors.As(err, &refusal) && errors.Is(err, transport.ErrDuplicateID)):
		n.log.Error("another node of the cluster has this node's id", "err", err)
		n.events.publish(Event{Kind: IDConflict, Err: idConflict(err)})
	}
}
