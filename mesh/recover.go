package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/transport"
)

// A peer whose link is lost without a goodbye is not down yet: the link
// may have broken while both nodes live on (a connection reset, a peer
// that closed a link it found silent, a write that blocked on a lossy
// network). The node dials it again at once, and the peer may dial this
// node too; the first link back carries on, starting with what the peer
// had not acknowledged (delivery.go). The peer is down when it is shown
// gone (an address it advertised refuses the connection: no process
// listens there any more, as after kill -9; or a later run of it links),
// or when no link is back within the silent-peer bound, KeepAliveInterval
// + WriteTimeout, plus the process's lateness.

// silentBound is the time a peer may stay unheard of before it is down.
func (n *Node) silentBound() time.Duration {
	return n.cfg.KeepAliveInterval + n.cfg.WriteTimeout
}

// recoverLocked starts making p's link again after l, its active link,
// was lost; n.mu is held.
func (n *Node) recoverLocked(p *peer, l *link) {
	p.active = nil
	p.relinked = make(chan struct{})
	ctx, cancel := context.WithCancel(n.ctx)
	n.redials[p] = cancel
	addrs := slices.Clone(p.addrs)
	if l.tl.Outbound() {
		if ap, err := netip.ParseAddrPort(l.tl.RemoteAddr().String()); err == nil && !slices.Contains(addrs, ap) {
			addrs = append([]netip.AddrPort{ap}, addrs...)
		}
	}
	n.log.Debug("link lost; linking the peer again", "peer", p.id, "link", l.tl.ID(), "err", l.tl.Err())
	p.signal() // the writer lets go of the lost link's stream
	n.wg.Add(1)
	go n.recoverPeer(ctx, p, addrs, p.relinked)
}

// endRecoveryLocked ends p's recovery: its link is back, or it is down.
// The dials still running for it are cancelled now, under n.mu, and not
// once the recovery's goroutine sees relinked closed: meanwhile such a
// dial could finish its handshake, after a goodbye even, and link the
// two nodes again, each taking the other for a new peer. n.mu is held.
func (n *Node) endRecoveryLocked(p *peer) {
	close(p.relinked)
	p.relinked = nil
	n.redials[p]()
	delete(n.redials, p)
}

// relinkLocked makes l the active link of p, which was recovering; n.mu
// is held.
func (n *Node) relinkLocked(p *peer, l *link) {
	p.active = l
	n.stats.linksRedone.Add(1)
	n.endRecoveryLocked(p)
	n.applyWatchLocked(p)
	n.log.Debug("link to the peer is back", "peer", p.id, "link", l.tl.ID())
	p.signal()
}

// recoverPeer dials p until a link is back (relinked closes, and ctx
// with it), p is shown gone, or the silent-peer bound passes; then p is
// down unless relinked.
func (n *Node) recoverPeer(ctx context.Context, p *peer, addrs []netip.AddrPort, relinked chan struct{}) {
	defer n.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, lag.Stretch(n.silentBound()))
	defer cancel()
	var err error
	var gone bool
	backoff := n.cfg.DialBackoff
	for {
		if gone, err = n.redialPeer(ctx, p.id, addrs); gone || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
		backoff = min(2*backoff, n.cfg.DialBackoffMax)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.peers[p.id] != p || p.active != nil || p.relinked != relinked || n.closed {
		return // back (maybe lost again since: another recovery runs), or gone another way
	}
	if err == nil {
		err = errors.New("not reached again in time")
	}
	if gone {
		// Its run is over: its records go here now, not when the last
		// of its other neighbours says so (see registry.PeerGone).
		n.reg.PeerGone(p.id)
	}
	n.peerDownLocked(p, fmt.Errorf("link lost: %w", err), false)
	var lost []netip.AddrPort
	if !gone && !p.observer {
		lost = addrs
	}
	n.redialLocked(p.id, lost)
}

// redialPeer dials the peer id at each of addrs at once, until one links
// or ctx ends. gone reports that an address refused the connection: no
// process listens there, the peer's run is over.
func (n *Node) redialPeer(ctx context.Context, id string, addrs []netip.AddrPort) (gone bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		tl  *transport.Link
		err error
	}
	results := make(chan result, len(addrs))
	for _, ap := range addrs {
		go func() {
			tl, err := n.handshake(ctx, ap, nil)
			results <- result{tl, err}
		}()
	}
	var errs []error
	for range addrs {
		switch r := <-results; {
		case r.tl != nil && r.tl.Peer() != id:
			n.log.Info("address now belongs to another node", "peer", r.tl.Peer(), "want", id)
			n.unclaim(r.tl.Peer(), r.tl.Remote().Incarnation) // see admit
			r.tl.Close()
			errs = append(errs, fmt.Errorf("address now belongs to %q", r.tl.Peer()))
		case r.tl != nil:
			n.addLink(r.tl)
			cancel()
		case errors.Is(r.err, syscall.ECONNREFUSED):
			gone = true
			errs = append(errs, r.err)
			cancel()
		default:
			errs = append(errs, r.err)
		}
	}
	return gone, errors.Join(errs...)
}

// peerDownLocked ends p: its PeerDown (with err, nil for a goodbye) says
// how many messages Send accepted for it that it did not acknowledge, and
// its links close. With restart, a later run of the peer replaces it
// (see peerUpLocked). n.mu is held.
func (n *Node) peerDownLocked(p *peer, err error, restart bool) {
	n.peerEndLocked(p, err, restart)
	if p.active != nil {
		p.active.tl.Close()
	}
	for _, r := range p.retiring {
		r.tl.Close()
	}
}

// peerEndLocked is peerDownLocked but for closing p's links: for a peer
// that said goodbye, which closes them itself once it has said it to
// every peer, after what it sent on them before (its registry's leaving
// state) has been read. n.mu is held.
func (n *Node) peerEndLocked(p *peer, err error, restart bool) {
	delete(n.peers, p.id)
	if err == nil {
		n.leftLocked(p) // its links still on their way come late (twin.go)
	}
	if !restart {
		n.reg.PeerDown(p.id)
	}
	undelivered := p.stop()
	n.saveMarkLocked(p)
	if p.relinked != nil {
		n.endRecoveryLocked(p)
	}
	n.events.publish(Event{Kind: PeerDown, Peer: p.id, Err: err, Undelivered: undelivered, Observer: p.observer})
	if undelivered > 0 {
		n.log.Warn("peer down with messages undelivered", "peer", p.id, "undelivered", undelivered, "err", err)
	} else {
		n.log.Debug("peer down", "peer", p.id, "err", err)
	}
	n.rewatchLocked()
}
