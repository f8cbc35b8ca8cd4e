package registry

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// TestLossIsNotMerged: while a node merges a burst of new links into one
// state, a link it loses is announced at once, with the additions: a
// node that reached the lost peer only through it frees the peer's
// records without waiting for the merging window.
func TestLossIsNotMerged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, c, x := newNode(t, "h"), newNode(t, "c"), newNode(t, "x")
		connect(t, h, c)
		hx := connect(t, h, x)
		rec := x.register(t, "x@1.0.0", 1, nil)
		time.Sleep(time.Second)
		synctest.Wait()
		if !c.has(t, rec.ID) {
			t.Fatal("x's record did not reach c through h")
		}
		for i := range 4 {
			connect(t, h, newNode(t, fmt.Sprintf("p%d", i)))
		}
		synctest.Wait()
		due := locked(h, func(r *Registry) bool { return r.stateDue })
		if !due {
			t.Fatal("h merges no additions: this test no longer covers a loss among them")
		}
		hx.cut()
		synctest.Wait() // no time passes: nothing waits for a window
		if c.has(t, rec.ID) {
			t.Fatal("c kept the lost peer's record: h's loss waited for its merged additions")
		}
		if got := c.peersOf("h"); len(got) != 5 {
			t.Fatalf("h's adjacency as c has it: %v, want c and p0..p3: the loss carries the additions", got)
		}
	})
}

// TestJoinThroughOneMember: a node that links to one member of a cluster
// has the cluster's records at once (that member's sync), and its own
// records show on the rest once the member's merging window and the relay
// of a state that adds links have passed (within a heartbeat), even when
// its link comes in a burst of others and is merged with them.
func TestJoinThroughOneMember(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newNode(t, "a"), newNode(t, "b") // 100 ms heartbeat
		connect(t, a, b)
		ra := a.register(t, "a@1.0.0", 1, nil)
		time.Sleep(time.Second)
		synctest.Wait()
		connect(t, b, newNode(t, "d")) // announced at once: the window starts
		c := newNode(t, "c")
		rc := c.register(t, "c@1.0.0", 2, nil)
		connect(t, b, c) // merged
		synctest.Wait()
		due := locked(b, func(r *Registry) bool { return r.stateDue })
		if !due {
			t.Fatal("b did not merge c's link: this test no longer covers a merged addition")
		}
		if !c.has(t, ra.ID) {
			t.Fatal("the new node does not have the cluster's records after its sync")
		}
		window := locked(b, func(r *Registry) time.Duration { return r.mergeWindow() })
		time.Sleep(window + max(relayDelay, window))
		synctest.Wait()
		if !a.has(t, rc.ID) {
			t.Fatal("the new node's record is not on the far member after the window and the relay")
		}
	})
}

// TestHeartbeatWaitsForMergedChange: while additions are being merged,
// a heartbeat does not issue them early (which would cut the window
// short and start another): the merged State, due within half a
// heartbeat, goes to every peer when its window ends, and is the
// heartbeat.
func TestHeartbeatWaitsForMergedChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
		connect(t, a, b)
		connect(t, b, c) // c is not a's neighbour: a's heartbeat goes to b
		time.Sleep(time.Second)
		synctest.Wait()
		connect(t, a, newNode(t, "d")) // announced at once
		connect(t, a, newNode(t, "e")) // merged
		synctest.Wait()
		a.Registry.mu.Lock()
		due, beat := a.stateDue, a.self.beat
		a.tick(time.Now())
		after := a.self.beat
		a.Registry.mu.Unlock()
		if !due {
			t.Fatal("a merges no additions: this test no longer covers a heartbeat while they wait")
		}
		if after != beat {
			t.Fatalf("the heartbeat issued state %d while a merged change waited (state %d)", after, beat)
		}
		time.Sleep(a.cfg.Heartbeat / 2)
		synctest.Wait()
		if got := b.peersOf("a"); len(got) != 3 {
			t.Fatalf("a's adjacency as b has it: %v, want b, d and e once the window ended", got)
		}
	})
}

// TestRecordsFollowMergedChange: a change of a node's records goes out
// after any merged change of adjacency that waits: a peer that has the
// node's record has its links as of then, without waiting for the window.
func TestRecordsFollowMergedChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := newNode(t, "a"), newNode(t, "b")
		connect(t, a, b)
		time.Sleep(time.Second)
		synctest.Wait()
		connect(t, a, newNode(t, "c")) // announced at once
		connect(t, a, newNode(t, "d")) // merged
		synctest.Wait()
		due := locked(a, func(r *Registry) bool { return r.stateDue })
		if !due {
			t.Fatal("a merges no additions: this test no longer covers a record change while they wait")
		}
		rec := a.register(t, "x@1.0.0", 1, nil)
		synctest.Wait() // no time passes: the window is not over
		if !b.has(t, rec.ID) {
			t.Fatal("b does not have a's record")
		}
		if got := b.peersOf("a"); len(got) != 3 {
			t.Fatalf("b has a's record, and a's adjacency %v: want b, c and d", got)
		}
	})
}
