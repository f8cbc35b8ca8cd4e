package registry

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestGrowMatchesWholeWalk drives one registry through random adjacency
// changes — states that add or drop links, leave, restart, arrive out of
// date — and links of its own coming and going, and checks after every
// step that which owners are live (their records visible) is what a whole
// walk from scratch finds: extending reachability over added links only
// must never show or hide an owner the whole walk would not.
func TestGrowMatchesWholeWalk(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { growAgainstWalk(t, seed) })
	}
}

func growAgainstWalk(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	r, err := New(Config{ID: "n0", Heartbeat: time.Hour, Lifetime: 3 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	const n = 7
	ids := []string{"n0"}
	inc := map[string]uint64{"n0": r.self.inc}
	beat := map[string]uint64{}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		ids = append(ids, id)
		inc[id] = 1
	}
	src := newLink("n1", nil)
	var steps []string

	r.mu.Lock()
	defer func() {
		clear(r.links) // no Serve runs them: Close must not wait on them
		r.mu.Unlock()
		r.Close()
	}()
	for step := range 300 {
		switch op := rng.IntN(10); {
		case op < 6: // an owner announces a state
			id := ids[1+rng.IntN(n)]
			beat[id]++
			m := &message{typ: msgState, owner: id, inc: inc[id], beat: beat[id], leaving: rng.IntN(12) == 0}
			for _, p := range ids {
				if p != id && rng.IntN(3) > 0 {
					pinc := inc[p]
					if rng.IntN(15) == 0 {
						pinc-- // names a run of p that is over
					}
					m.peers = append(m.peers, peerRef{id: p, inc: pinc})
				}
			}
			if rng.IntN(10) == 0 && beat[id] > 1 {
				m.beat = beat[id] - 1 // out of date: ignored
			}
			var ps []string
			for _, p := range m.peers {
				ps = append(ps, p.id)
			}
			steps = append(steps, fmt.Sprintf("%s@%d beat %d leaving=%v peers %s", id, m.inc, m.beat, m.leaving, strings.Join(ps, ",")))
			r.onState(src, m, nil)
		case op < 9: // a link of this node comes up or goes down
			id := ids[1+rng.IntN(n)]
			if len(r.links[id]) > 0 {
				delete(r.links, id)
				steps = append(steps, "n0 drops "+id)
			} else {
				l := newLink(id, nil)
				l.hello, l.peerInc = true, inc[id]
				r.links[id] = []*link{l}
				steps = append(steps, "n0 links "+id)
			}
			r.updateAdjacency(id)
		default: // an owner restarts
			id := ids[1+rng.IntN(n)]
			inc[id]++
			beat[id] = 0
			steps = append(steps, fmt.Sprintf("%s restarts as %d", id, inc[id]))
		}
		if r.dirty {
			r.recompute()
		}
		got := liveOwners(r)
		r.recompute()
		if want := liveOwners(r); !slices.Equal(got, want) {
			t.Fatalf("step %d: live %v, a whole walk finds %v; steps:\n%s", step, got, want, strings.Join(steps, "\n"))
		}
	}
}

func liveOwners(r *Registry) []string {
	var live []string
	for id, o := range r.owners {
		if o != r.self && o.live {
			live = append(live, id)
		}
	}
	slices.Sort(live)
	return live
}

// Reachable says whether a node is reached over links, this node's or
// others': in a chain a–b–c, a reaches c through b; once b's link to c is
// cut, not; and a node never reaches itself.
func TestReachable(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	connectSynced(t, a, b)
	bc := connectSynced(t, b, c)
	waitFor(t, "a reaching c through b", func() bool { return a.Reachable("c") })
	if !a.Reachable("b") || a.Reachable("a") || a.Reachable("nobody") {
		t.Fatalf("a reaches b %v, itself %v, an unknown node %v; want true, false, false",
			a.Reachable("b"), a.Reachable("a"), a.Reachable("nobody"))
	}
	bc.cut()
	waitFor(t, "a no longer reaching c", func() bool { return !a.Reachable("c") })
	if !a.Reachable("b") {
		t.Fatal("a no longer reaches b, its neighbour")
	}
}

// TestUnlinked: what the mesh's peer exchange leaves out of a new peer's
// member list is what the States held here say that peer is linked to,
// either end's word; a member the peer is not linked to stays in, and so
// does every member while no State of the peer's run is held.
func TestUnlinked(t *testing.T) {
	a, b, c, d, e := newNode(t, "a"), newNode(t, "b"), newNode(t, "c"), newNode(t, "d"), newNode(t, "e")
	if got := a.Unlinked("b", []string{"c", "d"}); !slices.Equal(got, []string{"c", "d"}) {
		t.Errorf("before a links b: Unlinked(b) = %v, want every id", got)
	}
	connectSynced(t, a, b)
	connectSynced(t, b, c)
	connectSynced(t, a, d)
	connectSynced(t, d, e)
	settled(t, a, b, c, d, e)
	// b names c; e names d, not b; nobody names "x".
	if got := a.Unlinked("b", []string{"c", "d", "e", "x"}); !slices.Equal(got, []string{"d", "e", "x"}) {
		t.Errorf("Unlinked(b, [c d e x]) = %v, want [d e x]", got)
	}
	if got := a.Unlinked("d", []string{"b", "e"}); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Unlinked(d, [b e]) = %v, want [b]", got)
	}
	// c is not a peer of a: nothing is known of a link of a's own to it.
	if got := a.Unlinked("c", []string{"b"}); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Unlinked(c, [b]) = %v, want [b] (c is not a's peer)", got)
	}
}
