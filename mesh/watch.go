package mesh

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tallship-go/tallship/internal/lag"

	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/transport"
)

// Who watches whom. A link beats every KeepAliveInterval when quiet, so
// that its peer is found silent within KeepAliveInterval + WriteTimeout;
// at a hundred nodes that is ten thousand link sides beating twice a
// second, most of an idle mesh's CPU. So in a mesh of more than
// 1 + 2×watchSpan nodes, each node is watched closely only by its
// neighbours on the ring of ids (the watchSpan members before it in id
// order and the watchSpan after it, wrapping around): those links stay
// strict, the others are relaxed (transport.Link.SetRelaxed: a beat every
// relaxedBeats × KeepAliveInterval). Both ends of a link compute the same ring from
// the same members. A watcher that finds its neighbour silent, and the
// peers it asks too (probe.go), declares it down at the silent-peer bound
// and tells every peer (a Dead frame); a peer that has the word of two
// watchers closes its own link to that run, unless it has heard from it
// within KeepAliveInterval: a frozen node or a cut cable is down
// everywhere within the bound, as when every link watched it.

// watchSpan is how many neighbours on each side of a node watch it.
const watchSpan = 2

// relaxedBeats is a relaxed link's beat interval, in KeepAliveIntervals
// (10 s by default; silent after three of them). A relaxed link only has
// to find a connection that broke while both ends live on: deaths are
// its watchers' to find. At 100 nodes in one process, idle: 5 s
// intervals took 11% of a core, 10 s 8% (a throwaway program's figures).
const relaxedBeats = 20

// rewatchLocked puts each peer's link in the mode the ring gives it;
// n.mu is held. It runs when a peer comes or goes.
func (n *Node) rewatchLocked() {
	var near map[string]bool // nil: every link strict
	ids := make([]string, 0, len(n.peers)+1)
	ids = append(ids, n.id)
	for id, p := range n.peers {
		if !p.observer { // the ring is the members'; an observer's link stays strict
			ids = append(ids, id)
		}
	}
	if len(ids)-1 > 2*watchSpan && !n.cfg.Observer { // an observer's links all stay strict: its peers watch it closely
		slices.Sort(ids)
		i, _ := slices.BinarySearch(ids, n.id)
		near = make(map[string]bool, 2*watchSpan)
		for k := 1; k <= watchSpan; k++ {
			near[ids[(i+k)%len(ids)]] = true
			near[ids[(i-k+len(ids))%len(ids)]] = true
		}
	}
	for id, p := range n.peers {
		if relaxed := near != nil && !near[id] && !p.observer; relaxed != p.relaxed {
			p.relaxed = relaxed
			n.applyWatchLocked(p)
		}
	}
}

// applyWatchLocked puts p's active link in p's mode; n.mu is held. A new
// link starts strict.
func (n *Node) applyWatchLocked(p *peer) {
	if p.active != nil {
		p.active.tl.SetRelaxed(p.relaxed)
	}
}

// tellDeadLocked tells every other peer that p, found silent by this node
// and by those it asked, is dead; n.mu is held.
func (n *Node) tellDeadLocked(p *peer) {
	if n.late() {
		return
	}
	frame := wire.DeadFrame(p.inc, p.id)
	for _, o := range n.peers {
		if o != p && o.active != nil {
			o.pushCtl(frame)
		}
	}
}

// deadReported takes from's word that the run inc of id is dead. A
// watcher of that run too takes one word when its own link to it is quiet
// enough to ask others about it (and then adds its own word); any other
// node takes the word of two peers within the silent-peer bound, once it
// has not heard from that run for KeepAliveInterval. A node running late
// takes no word (see late).
func (n *Node) deadReported(from *peer, inc int64, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.peers[id]
	if q == nil || q == from || q.inc != inc || n.closed {
		return
	}
	if q.active != nil && q.active.tl.Silence() < n.cfg.KeepAliveInterval {
		n.log.Debug("a peer reports a node dead that this node hears", "peer", id, "by", from.id)
		return
	}
	if n.late() {
		n.log.Debug("a peer reports a node dead; this node runs late and trusts its own links only", "peer", id, "by", from.id)
		return
	}
	now := time.Now()
	q.deadBy = slices.DeleteFunc(q.deadBy, func(r deadReport) bool { return r.by == from.id || now.Sub(r.at) > n.silentBound() })
	q.deadBy = append(q.deadBy, deadReport{by: from.id, at: now})
	own := !q.relaxed && (q.active == nil || q.active.tl.Suspect())
	if len(q.deadBy) < 2 && !own {
		return
	}
	err := fmt.Errorf("%w: %s found it silent, and the peers it asked too", transport.ErrSilent, from.id)
	if q.active == nil {
		// Its link is being made again: no need to wait for the bound.
		n.peerDownLocked(q, err, false)
		n.redialLocked(id, q.lostAddrs())
		return
	}
	q.active.dead = err
	q.active.tell = own
	q.active.tl.Close()
	n.sweepLocked()
}

// late reports whether this process runs late by more than half of
// KeepAliveInterval (internal/lag): then its peers' silence, and its own
// pings' timeouts, may be its own lateness, and it neither tells others
// of deaths it found nor takes their word, nor sweeps: each link goes by
// its own bound only, so that a machine buried in work does not spread
// the false deaths its lateness makes.
func (n *Node) late() bool { return lag.Current() > n.cfg.KeepAliveInterval/2 }

// sweepLocked checks, once a node was found dead, every relaxed link that
// has been quiet for KeepAliveInterval: each such peer is pinged, and one
// that does not answer within WriteTimeout is asked about (probe.go); if
// nobody hears it, or there is nobody to ask, it is dead too. A cut cable,
// or a partition, takes many nodes at once, and a node's relaxed links
// would otherwise find them only after 3 × RelaxedInterval: so the
// cut-off node finds everyone gone, and each side of a partition the
// other, within about the silent-peer bound plus WriteTimeout and the
// probe. Deaths a sweep finds are not told (each node sweeps its own). One
// sweep runs at a time; a death found meanwhile makes it run once more.
// A node running late does not sweep. n.mu is held.
func (n *Node) sweepLocked() {
	if n.late() {
		return
	}
	if n.sweeping {
		n.sweepAgain = true
		return
	}
	n.sweeping = true
	n.wg.Add(1)
	go n.sweep()
}

func (n *Node) sweep() {
	defer n.wg.Done()
	for {
		n.mu.Lock()
		var quiet []*link
		for _, p := range n.peers {
			if p.relaxed && p.active != nil && p.active.tl.Silence() >= n.cfg.KeepAliveInterval {
				quiet = append(quiet, p.active)
			}
		}
		n.sweepAgain = false
		n.mu.Unlock()
		var wg sync.WaitGroup
		for _, l := range quiet {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(n.ctx, lag.Stretch(n.cfg.WriteTimeout))
				_, err := l.tl.Ping(ctx)
				cancel()
				if err == nil || n.ctx.Err() != nil {
					return
				}
				n.mu.Lock()
				if l.p != nil && l.p.active == l && l.dead == nil && !n.late() {
					n.askLocked(l, true)
				}
				n.mu.Unlock()
			})
		}
		wg.Wait()
		n.mu.Lock()
		if !n.sweepAgain || n.closed {
			n.sweeping = false
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
	}
}

// deadReport is a peer's word that a node is dead.
type deadReport struct {
	by string
	at time.Time
}
