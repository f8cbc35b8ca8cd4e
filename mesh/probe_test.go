package mesh

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/transport"
)

// noPeerChange fails t if ev holds a PeerDown or PeerUp.
func noPeerChange(t *testing.T, n *Node, ev <-chan Event) {
	t.Helper()
	for {
		select {
		case e := <-ev:
			if e.Kind == PeerDown || e.Kind == PeerUp {
				t.Fatalf("%s: %v of %s (%v)", n.ID(), e.Kind, e.Peer, e.Err)
			}
		default:
			return
		}
	}
}

// A link that carries nothing for longer than the silent-peer bound,
// while a third node hears both ends, drops no one: the third vouches,
// and what was sent meanwhile arrives once the link carries again.
func TestSilentLinkVouchedByAnother(t *testing.T) {
	leakcheck.Goroutines(t)
	a, b, px := stallableMesh(t)
	ctx := context.Background()
	evA, evB := a.Events(ctx), b.Events(ctx)
	link := activeLink(a, "b")

	px.stall()
	if err := a.Send(ctx, "b", []byte("sent while the link stalls")); err != nil {
		t.Fatal(err)
	}
	// Past twice the bound on a silent peer, with a vouch needed each
	// time the link is found silent again.
	bound := a.silentBound()
	waitFor(t, "vouches", 10*bound, func() bool { return vouches(a, "b") >= 2 && vouches(b, "a") >= 2 })
	px.resume()
	if m := receive(t, b); string(m.Data) != "sent while the link stalls" {
		t.Fatalf("b got %q", m.Data)
	}
	noPeerChange(t, a, evA)
	noPeerChange(t, b, evB)
	if l := activeLink(a, "b"); l != link {
		t.Fatalf("the stalled link was replaced (%d, then %d)", link, l)
	}
}

// stallableMesh starts a full mesh of a, b and c in which a's link to b
// runs through a proxy that can stall it, while c hears both.
func stallableMesh(t *testing.T) (a, b *Node, px *proxy) {
	t.Helper()
	a = start(t, "c", testConfig("a"))
	b = start(t, "c", testConfig("b"))
	c := start(t, "c", testConfig("c"))
	ctx := context.Background()
	px = newProxy(t, addr(t, b))
	if _, err := a.Connect(ctx, px.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{a, b} {
		if _, err := c.Connect(ctx, addr(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "full mesh", 5*time.Second, func() bool { return settled(a, b, c) })
	return a, b, px
}

// TestVouchesCountOneSilence: the vouches after which a silent link is
// let go (maxVouches) count one silence, all along: a link heard from
// between two stalls starts again from none.
func TestVouchesCountOneSilence(t *testing.T) {
	leakcheck.Goroutines(t)
	a, _, px := stallableMesh(t)
	bound := a.silentBound()
	px.stall()
	waitFor(t, "vouches", 10*bound, func() bool { return vouches(a, "b") >= 2 })
	px.resume()
	resumed := time.Now()
	waitFor(t, "b heard again", 10*bound, func() bool { return heardSince(a, "b", resumed) })
	px.stall()
	stalled := time.Now()
	waitFor(t, "a vouch in the second stall", 10*bound, func() bool { return vouchedSince(a, "b", stalled) })
	if v := vouches(a, "b"); v != 1 {
		t.Fatalf("%d vouches in a row counted at the first of a new silence, want 1", v)
	}
	px.resume()
}

// heardSince reports whether n's link to id has heard from the peer
// since t.
func heardSince(n *Node, id string, t time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[id]
	return p != nil && p.active != nil && time.Now().Add(-p.active.tl.Silence()).After(t)
}

// vouchedSince reports whether another node vouched for n's link to id
// since t.
func vouchedSince(n *Node, id string, t time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[id]
	return p != nil && p.active != nil && p.active.vouched.After(t)
}

// relaxed reports whether n's link to id is relaxed (watch.go).
func relaxed(n *Node, id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[id]
	return p != nil && p.relaxed
}

// vouches is how many times in a row others vouched for n's link to id.
func vouches(n *Node, id string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.peers[id]; p != nil && p.active != nil {
		return p.active.vouches
	}
	return 0
}

// A peer nobody hears (a frozen process, a cut cable) is down everywhere
// at the silent-peer bound: asked, the others find it silent too. With
// two nodes, nobody to ask, the link's silence alone decides. In a mesh of
// seven, only b's neighbours on the ring of ids (a, c, d and g) watch it
// closely; e and f, whose links to b are relaxed (silent only after 60 ×
// KeepAliveInterval), learn it from them within the bound.
func TestSilentPeerDownEverywhere(t *testing.T) {
	for _, size := range []int{2, 3, 7} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			leakcheck.Goroutines(t)
			ctx := context.Background()
			b := start(t, "c", testConfig("b"))
			var others []*Node
			var proxies []*proxy
			for _, id := range []string{"a", "c", "d", "e", "f", "g"}[:size-1] {
				n := start(t, "c", testConfig(id))
				px := newProxy(t, addr(t, b))
				if _, err := n.Connect(ctx, px.ln.Addr().String()); err != nil {
					t.Fatal(err)
				}
				for _, o := range others {
					if _, err := n.Connect(ctx, addr(t, o)); err != nil {
						t.Fatal(err)
					}
				}
				others, proxies = append(others, n), append(proxies, px)
			}
			waitFor(t, "full mesh", 5*time.Second, func() bool { return settled(append(others, b)...) })
			if size == 7 {
				for _, n := range others {
					if want := n.ID() == "e" || n.ID() == "f"; relaxed(n, "b") != want {
						t.Fatalf("%s's link to b relaxed: %v, want %v", n.ID(), !want, want)
					}
				}
			}
			var evs []<-chan Event
			for _, n := range others {
				evs = append(evs, n.Events(ctx))
			}
			for _, px := range proxies {
				px.stall()
			}
			for i, n := range others {
				e := nextEvent(t, evs[i], PeerDown)
				if e.Peer != "b" || !errors.Is(e.Err, transport.ErrSilent) {
					t.Fatalf("%s: PeerDown of %s (%v), want b's, silent", n.ID(), e.Peer, e.Err)
				}
			}
		})
	}
}

// Asked again about a silent link (the check's second round), a node asks
// peers it has not asked yet, and nobody twice: on a lossy network the
// first ones' answers may be lost or late.
func TestSecondRoundAsksOthers(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx := context.Background()
	var nodes []*Node
	for _, id := range []string{"a", "b", "c", "d", "e", "f"} {
		n := start(t, "c", testConfig(id))
		for _, o := range nodes {
			if _, err := n.Connect(ctx, addr(t, o)); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, n)
	}
	waitFor(t, "full mesh", 5*time.Second, func() bool { return settled(nodes...) })
	a := nodes[0]
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.peers["b"].active
	asked := func() (rounds []map[string]bool) {
		for _, q := range a.probes {
			if q.l == l {
				rounds = append(rounds, q.asked)
			}
		}
		return rounds
	}
	a.askLocked(l, false)
	a.askLocked(l, false)
	a.askLocked(l, false) // everyone healthy has been asked: no third probe
	rounds := asked()
	if len(rounds) != 2 {
		t.Fatalf("%d probes about b, want 2", len(rounds))
	}
	seen := map[string]bool{}
	for _, r := range rounds {
		for id := range r {
			if seen[id] || id == "b" {
				t.Fatalf("probes asked %v: %s twice, or b itself", rounds, id)
			}
			seen[id] = true
		}
	}
	if len(seen) != 4 {
		t.Fatalf("probes asked %v, want c, d, e and f between them", rounds)
	}
}
