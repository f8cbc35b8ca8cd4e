package registry

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// received returns what p has been sent so far; it runs in a synctest
// bubble, where synctest.Wait lets every frame in flight arrive.
func (p *tapPeer) received() []message {
	var out []message
	for {
		synctest.Wait()
		n := len(out)
		for more := true; more; {
			select {
			case m := <-p.got:
				out = append(out, m)
			default:
				more = false
			}
		}
		if len(out) == n {
			return out
		}
	}
}

// statesOf returns the beats of owner's States among msgs.
func statesOf(msgs []message, owner string) []uint64 {
	var beats []uint64
	for _, m := range msgs {
		if m.typ == msgState && m.owner == owner {
			beats = append(beats, m.beat)
		}
	}
	return beats
}

// TestSyncLeavesNewerStatesToRelay: a peer that holds a State of an
// owner's run is not sent the newer one in the sync. When all that is
// newer only adds links, it is not sent at all (the owner's next
// heartbeat, relayed, brings it); when it drops one, it is relayed to the
// peer after the relay delay, as any other owner's State. A peer that
// holds no State of the owner gets it in the sync.
func TestSyncLeavesNewerStatesToRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Hour, 3*time.Hour } // no heartbeats
		a, o, q := newNode(t, "a", slow), newNode(t, "o", slow), newNode(t, "q", slow)
		connect(t, a, o)
		time.Sleep(time.Second)
		synctest.Wait()
		before := locked(a, func(r *Registry) uint64 { return r.owners["o"].beat })
		oq := connect(t, o, q) // o's next State adds q, and a holds it
		time.Sleep(time.Second)
		synctest.Wait()
		added := locked(a, func(r *Registry) uint64 { return r.owners["o"].beat })
		if added <= before {
			t.Fatalf("a holds o's State at beat %d after o linked q, want above %d", added, before)
		}
		sync := func(id string, oBeat uint64) *tapPeer {
			p := newTapPeer(t, a, id, 9)
			digest := []digestEntry{{owner: id, inc: 9, beat: 1}}
			if oBeat > 0 {
				digest = append(digest, digestEntry{owner: "o", inc: o.self.inc, beat: oBeat})
			}
			p.send(must(encodeHello(id, digest, DefaultMaxMessageBytes)))
			return p
		}

		c, d := sync("c", before), sync("d", 0)
		if got := statesOf(c.received(), "o"); len(got) != 0 {
			t.Fatalf("c, which holds a State of o, had o's States %v in its sync", got)
		}
		if got := statesOf(d.received(), "o"); len(got) != 1 || got[0] != added {
			t.Fatalf("d, which holds none, had o's States %v in its sync, want [%d]", got, added)
		}
		time.Sleep(time.Second)
		if got := statesOf(c.received(), "o"); len(got) != 0 {
			t.Fatalf("c, which lacks only a link o added, was relayed o's States %v", got)
		}

		oq.cut() // o's next State drops q: a loss
		time.Sleep(time.Second)
		synctest.Wait()
		lost := locked(a, func(r *Registry) uint64 { return r.owners["o"].beat })
		e := sync("e", added)
		if got := statesOf(e.received(), "o"); len(got) != 0 {
			t.Fatalf("e, which holds a State of o, had o's States %v in its sync", got)
		}
		time.Sleep(relayDelay)
		if got := statesOf(e.received(), "o"); len(got) != 1 || got[0] != lost {
			t.Fatalf("after the relay delay, e, which lacks o's loss, had o's States %v, want [%d]", got, lost)
		}
	})
}

// TestRelayDelays: another owner's State that drops a link, or leaves, is
// relayed after relayDelay; one that only adds links, after the window
// this node merges its own additions over, when that is longer (here 10
// ms for each of the 14 owners it knows).
func TestRelayDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newNode(t, "b", func(c *Config) { c.Heartbeat, c.Lifetime = 0, 0 }) // 1 s heartbeat
		x, c := newTapPeer(t, b, "x", 5), newTapPeer(t, b, "c", 6)
		binc := b.self.inc
		state := func(beat uint64, peers ...string) []byte {
			refs := []peerRef{{id: "b", inc: binc}}
			for _, p := range peers {
				refs = append(refs, peerRef{id: p, inc: 1})
			}
			return must(encodeState("x", 5, 0, beat, false, refs, DefaultMaxMessageBytes))
		}
		x.send(must(encodeHello("x", []digestEntry{{owner: "x", inc: 5, beat: 1}}, DefaultMaxMessageBytes)), state(1))
		c.send(must(encodeHello("c", []digestEntry{{owner: "c", inc: 6, beat: 1}}, DefaultMaxMessageBytes)))
		for i := range 12 {
			id := fmt.Sprintf("f%02d", i)
			x.send(must(encodeState(id, 1, 0, 1, false, []peerRef{{id: "x", inc: 5}}, DefaultMaxMessageBytes)))
		}
		time.Sleep(time.Second)
		x.received()
		c.received()
		hi := locked(b, func(r *Registry) time.Duration { return r.mergeWindow() })
		if hi <= relayDelay {
			t.Fatalf("b's merging window is %v, not above relayDelay: this test no longer covers an addition relayed later", hi)
		}

		for _, tc := range []struct {
			what, owner string
			frame       []byte
			after       time.Duration
		}{
			{"an addition", "x", state(2, "f00"), hi},
			{"a loss", "x", state(3), relayDelay},
			{"a first state, leaving", "g", must(encodeState("g", 1, 0, 1, true, []peerRef{{id: "x", inc: 5}}, DefaultMaxMessageBytes)), relayDelay},
		} {
			start := time.Now()
			x.send(tc.frame)
			time.Sleep(tc.after - time.Millisecond)
			if got := statesOf(c.received(), tc.owner); len(got) != 0 {
				t.Fatalf("%s of %s relayed to c after %v, want %v", tc.what, tc.owner, time.Since(start), tc.after)
			}
			time.Sleep(time.Millisecond)
			if got := statesOf(c.received(), tc.owner); len(got) != 1 {
				t.Fatalf("%s of %s not relayed to c after %v: %v", tc.what, tc.owner, tc.after, got)
			}
		}
	})
}

// TestAdditionsWaitForTheHeartbeat: a State that only adds a link between
// two owners reachable already is not relayed to a peer that holds the
// owner's State (in a forming mesh, nearly every State: relaying them was
// most of the work); the owner's next State that says more (here its
// heartbeat) is. Nor is its newest once half its lifetime has passed: the
// peer holds a State of the owner that names this node, its neighbour,
// and so renews the owner by this node's link (see vouched).
func TestAdditionsWaitForTheHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newNode(t, "b", func(c *Config) { c.Heartbeat, c.Lifetime = 0, 0 }) // 1 s heartbeat
		x, y, c := newTapPeer(t, b, "x", 5), newTapPeer(t, b, "y", 6), newTapPeer(t, b, "c", 7)
		binc := b.self.inc
		state := func(owner string, inc, beat uint64, peers ...peerRef) []byte {
			refs := append([]peerRef{{id: "b", inc: binc}}, peers...)
			slices.SortFunc(refs, func(a, b peerRef) int { return strings.Compare(a.id, b.id) })
			return must(encodeState(owner, inc, 0, beat, false, refs, DefaultMaxMessageBytes))
		}
		hello := func(p *tapPeer, id string, inc uint64) {
			p.send(must(encodeHello(id, []digestEntry{{owner: id, inc: inc, beat: 1}}, DefaultMaxMessageBytes)))
		}
		hello(x, "x", 5)
		hello(y, "y", 6)
		hello(c, "c", 7)
		x.send(state("x", 5, 1))
		y.send(state("y", 6, 1))
		time.Sleep(300 * time.Millisecond)
		if got := statesOf(c.received(), "x"); !slices.Equal(got, []uint64{1}) {
			t.Fatalf("c was relayed x's States %v after its first, want [1]", got)
		}

		// x and y, each linked to b and so reachable from it, link to
		// each other.
		x.send(state("x", 5, 2, peerRef{"y", 6}))
		y.send(state("y", 6, 2, peerRef{"x", 5}))
		time.Sleep(150 * time.Millisecond) // within half a lifetime of the first relay
		if got := statesOf(c.received(), "x"); len(got) != 0 {
			t.Fatalf("x's State that only adds y was relayed to c: %v", got)
		}
		if got := locked(b, func(r *Registry) uint64 { return r.owners["x"].peers["y"] }); got != 6 {
			t.Fatalf("b holds x's link to y at run %d, want 6: the State was not applied", got)
		}

		x.send(state("x", 5, 3, peerRef{"y", 6})) // its heartbeat: nothing changed
		time.Sleep(300 * time.Millisecond)
		if got := statesOf(c.received(), "x"); !slices.Equal(got, []uint64{3}) {
			t.Fatalf("c was relayed x's States %v after x's heartbeat, want [3]", got)
		}
		time.Sleep(2500 * time.Millisecond) // x's lifetime: 5 heartbeats

		// Half a lifetime after that relay, an addition still waits.
		x.send(state("x", 5, 4, peerRef{"y", 6}, peerRef{"z", 1}))
		time.Sleep(time.Second)
		if got := statesOf(c.received(), "x"); len(got) != 0 {
			t.Fatalf("c was relayed x's States %v half a lifetime after the last, want none: it holds one naming b", got)
		}
	})
}
