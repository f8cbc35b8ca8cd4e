package mesh

import (
	"context"
	"fmt"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/transport"
)

// Probes of a silent peer, after SWIM's indirect probes (Lifeguard's
// refinement: ask before declaring). When nothing has arrived on a
// peer's link for KeepAliveInterval + WriteTimeout/2, the link's check
// tells the node (transport.Config.OnSilent), and it asks up to
// probeFanout other peers whether they hear that one; if none has
// vouched halfway from there to the bound, it is told again and asks up
// to probeFanout others (on a lossy network a question or an answer is
// lost now and then, and TCP resends it too late). A peer that has heard
// it within KeepAliveInterval (it beats that often) says so at once; else
// it pings it (a round trip on its own link) and answers. One "alive"
// vouches for the link (transport.Link.Vouch): a lossy link whose TCP
// backs off its retransmissions, or a peer slow on this link alone, is not
// a dead peer.
// Nobody vouching, the link closes at the silent-peer bound, and the peer
// is down: a frozen host or a cut cable is found by everyone within
// KeepAliveInterval + WriteTimeout as before.
//
// A mesh of two has no one to ask: there the link's silence alone
// decides, at the same bound.
//
// A link vouched for maxVouches times in a row while silent all along is
// let go (closed at the bound): the peer lives, but this link carries
// nothing; it is made again (recover.go).

const (
	probeFanout = 3
	maxVouches  = 8
	// maxAnswering bounds the probes this node answers at once (each may
	// ping a peer): a peer that floods probes gets "unknown" beyond it.
	maxAnswering = 64
)

// probe is a question this node asked about a silent link.
type probe struct {
	l      *link
	asked  map[string]bool // who, and whether they answered
	silent int             // answers that found it silent
	swept  bool            // asked by a sweep: the answers decide (askLocked)
	at     time.Time
}

// onSilent is the links' transport.Config.OnSilent. It must not block.
func (n *Node) onSilent(tl *transport.Link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.links[tl.ID()]
	if l == nil || l.p == nil || l.p.active != l || n.closed {
		return
	}
	now := time.Now()
	if now.Sub(l.suspected) > 2*n.silentBound() || now.Add(-tl.Silence()).After(l.vouched) {
		// Heard from in between: on its own link since the last vouch,
		// or the last suspicion is long past. (Counting only the second,
		// a link silent for a second every other second, heard each time
		// in between, as one carrying a bulk stream through 10% loss may
		// be, was let go after eight as if silent all along.)
		l.vouches = 0
	}
	l.suspected = now
	if l.vouches >= maxVouches {
		n.log.Info("link to the peer silent for long although others hear it; making it again", "peer", l.peer, "link", tl.ID())
		return
	}
	n.askLocked(l, false)
}

// askLocked asks up to probeFanout other peers whether they hear l's
// peer. With swept (a sweep's ping of l's peer went unanswered), the
// answers decide: if none hears it and one found it silent too, or there
// is nobody to ask, l's peer is dead. n.mu is held.
func (n *Node) askLocked(l *link, swept bool) {
	now := time.Now()
	var before map[string]bool // asked about l already, no vouch yet
	for nonce, q := range n.probes {
		switch {
		case now.Sub(q.at) > n.silentBound():
			delete(n.probes, nonce)
		case q.l == l:
			if before == nil {
				before = make(map[string]bool, probeFanout)
			}
			for id := range q.asked {
				before[id] = true
			}
		}
	}
	q := &probe{l: l, asked: make(map[string]bool, probeFanout), at: now, swept: swept}
	for _, o := range n.peers {
		if len(q.asked) == probeFanout {
			break
		}
		if o == l.p || o.active == nil || o.active.tl.Suspect() || before[o.id] {
			continue
		}
		q.asked[o.id] = false
	}
	if len(q.asked) == 0 && len(before) > 0 {
		return // everyone healthy was asked; their answers may come yet
	}
	if len(q.asked) == 0 {
		n.log.Debug("peer silent; no other peer to ask", "peer", l.peer)
		if swept {
			n.sweptDeadLocked(l, "nobody left to ask")
		}
		return
	}
	n.probeSeq++
	nonce := n.probeSeq
	n.probes[nonce] = q
	frame := wire.ProbeFrame(nonce, l.p.inc, l.peer)
	for id := range q.asked {
		n.peers[id].pushCtl(frame)
	}
	n.log.Debug("peer silent; asking others whether they hear it", "peer", l.peer, "asked", len(q.asked))
}

// sweptDeadLocked ends l, whose peer a sweep found dead; n.mu is held.
func (n *Node) sweptDeadLocked(l *link, why string) {
	if l.p == nil || l.p.active != l || l.dead != nil {
		return
	}
	l.dead = fmt.Errorf("%w: no answer to a ping once another node was found dead, and %s", transport.ErrSilent, why)
	l.tl.Close()
}

// answerProbe answers from's question whether this node hears the run
// inc of id. Another run it may link to is no answer: a restarted node's
// new run says nothing of the old one.
func (n *Node) answerProbe(from *peer, nonce uint64, inc int64, id string) {
	n.mu.Lock()
	var tl *transport.Link
	if q := n.peers[id]; q != nil && q.active != nil && q.inc == inc {
		tl = q.active.tl
	}
	busy := n.answering >= maxAnswering
	if tl != nil && !busy && tl.Silence() >= n.cfg.KeepAliveInterval {
		n.answering++
		n.wg.Add(1)
		n.mu.Unlock()
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, lag.Stretch(n.cfg.WriteTimeout*2/5))
			_, err := tl.Ping(ctx)
			cancel()
			answer := wire.ProbeAlive
			if err != nil {
				answer = wire.ProbeSilent
			}
			from.pushCtl(wire.ProbeReplyFrame(nonce, answer))
			n.mu.Lock()
			n.answering--
			n.mu.Unlock()
		}()
		return
	}
	n.mu.Unlock()
	answer := wire.ProbeUnknown
	if tl != nil && !busy {
		answer = wire.ProbeAlive
	}
	from.pushCtl(wire.ProbeReplyFrame(nonce, answer))
}

// probeAnswered takes from's answer to this node's probe.
func (n *Node) probeAnswered(from *peer, nonce uint64, answer byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.probes[nonce]
	if q == nil {
		return
	}
	if answered, ok := q.asked[from.id]; !ok || answered {
		return
	}
	q.asked[from.id] = true
	if answer == wire.ProbeAlive {
		delete(n.probes, nonce)
		if q.l.p != nil && q.l.p.active == q.l {
			q.l.vouched = time.Now()
			q.l.vouches++
			q.l.tl.Vouch()
			n.log.Debug("peer silent on its link, but another hears it", "peer", q.l.peer, "by", from.id)
		}
		return
	}
	if answer == wire.ProbeSilent {
		q.silent++
	}
	for _, answered := range q.asked {
		if !answered {
			return
		}
	}
	delete(n.probes, nonce)
	switch {
	case q.silent == 0 || q.l.p == nil || q.l.p.active != q.l || q.l.dead != nil:
	case q.swept:
		n.sweptDeadLocked(q.l, "the peers asked found it silent too")
	case !n.late():
		// Everyone asked answered, none hears it, some found it silent
		// too: it is dead now rather than at the bound, and the others
		// are told. (A node running late waits for the bound, and tells
		// nobody: see late.)
		q.l.dead = fmt.Errorf("%w: and %d of the %d peers asked found it silent too", transport.ErrSilent, q.silent, len(q.asked))
		q.l.tell = true
		q.l.tl.Close()
	}
}
