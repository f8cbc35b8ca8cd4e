package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/transport"
)

// One id, one live run (docs/protocol.md, "Twins"). A run of a node is
// one process with its id, told apart from other runs by its hello's
// incarnation. The run a node is linked to, or is making a link with, is
// the one that holds the id at this node; another run that claims the id
// is judged in the handshake, before the verdict, by admit:
//
//   - an earlier run than the holder is refused (it cannot be a restart);
//   - a later run is a restart, and replaces the holder, when the holder
//     is shown gone: a later run answers at an address the holder
//     advertised, or the holder's open link does not answer a ping
//     within min(WriteTimeout, HandshakeTimeout/2) (plus the process's
//     lateness); while the holder's link is being made again
//     (recover.go), or has just broken, which shows nothing about the
//     holder, admit waits as long for it to be back or down, and refuses
//     with transport.ErrRefused (no verdict on the id: the run tries
//     again) when neither has happened;
//   - otherwise it is a twin, refused with transport.ErrDuplicateID;
//     the refused run publishes IDConflict (noteRefusal).
//
// Two runs of one id that meet each other refuse the link on both ends
// (transport.TwinError); the later one publishes IDConflict.

// claim is a run of a peer id that admit has let in, whose link is not
// in the mesh yet: its handshake runs, or it is on its way to addLink.
// While one run holds a claim, every other run of the id is refused.
type claim struct {
	inc   int64
	links int // handshakes of the run admitted and not yet ended
	// nonces name the handshakes admitted, in order, by the nonce of the
	// peer's hello (those that failed are not taken out: the claim ends
	// with the last handshake). The first late of them were admitted
	// before the run's peer here said or heard goodbye (see lateLocked).
	nonces [][16]byte
	late   int
}

// admit is the node's check of a peer's hello, called by the handshake
// before this node's verdict. dialed is the address this node dialed,
// invalid when the peer dialed. When admit returns nil, the peer's run
// holds a claim on its id until its link is in the mesh (addLink) or its
// handshake has failed (unclaim).
func (n *Node) admit(h transport.Hello, dialed netip.AddrPort) error {
	var pinged *transport.Link // the holder's link that did not answer
	bound := lag.Stretch(min(n.cfg.WriteTimeout, n.cfg.HandshakeTimeout/2))
	var waitEnd time.Time // the end of the wait for the holder's link to be made again
	relinking := func() error {
		if waitEnd.IsZero() {
			waitEnd = time.Now().Add(bound)
		} else if time.Now().After(waitEnd) {
			return fmt.Errorf("%w: the link to another run of %q is being made again; try again", transport.ErrRefused, h.ID)
		}
		return nil
	}
	for round := 0; ; round++ {
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			return errors.New("node is closing")
		}
		p := n.peers[h.ID]
		if p == nil && len(n.peers) >= n.cfg.MaxPeers {
			n.mu.Unlock()
			n.log.Debug("peer limit reached; refusing link", "peer", h.ID, "max", n.cfg.MaxPeers) // LinkFailed says it, once per caller
			return fmt.Errorf("%w: peer limit of %d reached", ErrTooManyPeers, n.cfg.MaxPeers)
		}
		if c := n.claims[h.ID]; c != nil && c.inc != h.Incarnation {
			n.mu.Unlock()
			// Even a later run: two live runs dialing at once must each
			// get a verdict on the id, whichever claimed first. (A restart
			// within HandshakeTimeout of its earlier run crashing in a
			// handshake with this node is refused too: it is the rare
			// case given up for that.)
			return n.twin(h, "another run of it is linking with this node now")
		}
		switch {
		case p == nil || p.inc == h.Incarnation:
		case h.Incarnation < p.inc:
			n.mu.Unlock()
			return n.twin(h, "a later run of it is linked to this node")
		case dialed.IsValid() && slices.Contains(p.addrs, dialed):
			// A later run answers where the holder listened: the
			// holder's process is gone.
		case round >= 8:
			n.mu.Unlock()
			return fmt.Errorf("%w: the links to another run of %q keep changing; try again", transport.ErrRefused, h.ID)
		case p.active == nil || p.active.tl.IsClosed():
			// The holder's link broke: the node is making it again
			// (recover.go), or is about to. A broken link shows nothing
			// about the holder; wait for it to be back or down.
			if err := relinking(); err != nil {
				n.mu.Unlock()
				return err
			}
			active, relinked := p.active, p.relinked
			n.mu.Unlock()
			n.waitLinkChange(p, active, relinked, waitEnd)
			continue
		case p.active.tl != pinged:
			old := p.active.tl
			n.mu.Unlock()
			ctx, cancel := context.WithTimeout(n.ctx, bound)
			_, err := old.Ping(ctx)
			cancel()
			if err == nil {
				return n.twin(h, "a live run of it is linked to this node")
			}
			if !old.IsClosed() {
				pinged = old // silent: the holder is gone
			}
			continue
		}
		n.claimLocked(h)
		n.mu.Unlock()
		return nil
	}
}

// waitLinkChange waits until end, or the node closes, for p's link to
// change from active: with relinked (p's link being made again), until
// it closes; else (active has just broken, and the node has not yet
// started making it again) polling, as nothing signals that step.
func (n *Node) waitLinkChange(p *peer, active *link, relinked chan struct{}, end time.Time) {
	t := time.NewTimer(time.Until(end))
	defer t.Stop()
	if relinked != nil {
		select {
		case <-relinked:
		case <-t.C:
		case <-n.closing:
		}
		return
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			n.mu.Lock()
			changed := n.peers[p.id] != p || p.active != active
			n.mu.Unlock()
			if changed {
				return
			}
		case <-t.C:
			return
		case <-n.closing:
			return
		}
	}
}

// twin logs and returns the refusal of a run of h.ID that is not the one
// holding it here.
func (n *Node) twin(h transport.Hello, why string) error {
	n.log.Warn("refusing a second live node with a linked peer's id", "peer", h.ID, "why", why)
	return fmt.Errorf("%w: node %q refuses this run of %q: %s", transport.ErrDuplicateID, n.id, h.ID, why)
}

// claimLocked adds the handshake of run h.Incarnation of h.ID, whose
// hello h is, to the run's claim; n.mu is held.
func (n *Node) claimLocked(h transport.Hello) {
	if n.claims == nil {
		n.claims = make(map[string]*claim)
	}
	c := n.claims[h.ID]
	if c == nil {
		c = &claim{inc: h.Incarnation}
		n.claims[h.ID] = c
	}
	c.links++
	c.nonces = append(c.nonces, h.Nonce)
}

// A run's peer that goes down with a goodbye (this node left it, or it
// said it leaves) has left this node, but links with it may still be on
// their way: handshakes admitted before the goodbye, such as those of a
// dial made while its link was being made again (recover.go), which both
// nodes start and either may finish late. Such a link is not the run
// meeting this node again: taken in, it would bring the peer back up
// after its goodbye (and at the other end, which has let the peer go, it
// is closed, or late too), a peer nobody dials nor keeps any more, that
// only another goodbye ends. So it is closed when it arrives (addLink),
// and so is a link that arrives while the run's peer is leaving.

// leftLocked marks the handshakes of p's run admitted so far as late: p
// goes down with a goodbye. n.mu is held.
func (n *Node) leftLocked(p *peer) {
	if c := n.claims[p.id]; c != nil && c.inc == p.inc {
		c.late = len(c.nonces)
	}
}

// lateLocked reports whether tl, a link whose handshake has just ended,
// comes late: its handshake was admitted before its run's peer here left
// with a goodbye, or that peer is leaving now. addLink closes it instead
// of taking it in. n.mu is held, and tl's claim not yet ended.
func (n *Node) lateLocked(tl *transport.Link) bool {
	h := tl.Remote()
	if p := n.peers[h.ID]; p != nil && p.inc == h.Incarnation && (p.goodbye || p.left()) {
		return true
	}
	c := n.claims[h.ID]
	return c != nil && c.inc == h.Incarnation && slices.Contains(c.nonces[:c.late], h.Nonce)
}

// unclaimLocked ends a handshake of run inc of id; n.mu is held.
func (n *Node) unclaimLocked(id string, inc int64) {
	if c := n.claims[id]; c != nil && c.inc == inc {
		if c.links--; c.links <= 0 {
			delete(n.claims, id)
		}
	}
}

func (n *Node) unclaim(id string, inc int64) {
	n.mu.Lock()
	n.unclaimLocked(id, inc)
	n.mu.Unlock()
}

// lastIncarnation makes incarnations unique within the process: two nodes
// started in the same clock tick are two runs, not one.
var lastIncarnation atomic.Int64

// newIncarnation returns the incarnation of a new run: its start time in
// Unix nanoseconds, later than any other run's of this process.
func newIncarnation() int64 {
	for {
		last := lastIncarnation.Load()
		inc := max(time.Now().UnixNano(), last+1)
		if lastIncarnation.CompareAndSwap(last, inc) {
			return inc
		}
	}
}
