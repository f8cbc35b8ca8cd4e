package registry

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
)

// nodes starts n registries named n0, n1...
func nodes(t *testing.T, n int, opts ...func(*Config)) []*node {
	t.Helper()
	ns := make([]*node, n)
	for i := range ns {
		ns[i] = newNode(t, fmt.Sprintf("n%d", i), opts...)
	}
	return ns
}

// fullMesh links every pair.
func fullMesh(t *testing.T, ns []*node) map[[2]int]*testLink {
	t.Helper()
	links := map[[2]int]*testLink{}
	for i := range ns {
		for j := i + 1; j < len(ns); j++ {
			links[[2]int{i, j}] = connect(t, ns[i], ns[j])
		}
	}
	for i := range ns {
		waitFor(t, "full mesh sync", func() bool { return len(ns[i].eventsOf(Synced)) == len(ns)-1 })
	}
	return links
}

// ring links n0-n1-...-n(k-1)-n0; chain omits the last link.
func ring(t *testing.T, ns []*node, closed bool) {
	t.Helper()
	for i := 0; i+1 < len(ns); i++ {
		connectSynced(t, ns[i], ns[i+1])
	}
	if closed {
		connectSynced(t, ns[len(ns)-1], ns[0])
	}
}

func TestTenNodesFullMesh(t *testing.T) {
	ns := nodes(t, 10)
	fullMesh(t, ns)
	start := time.Now()
	rec := ns[3].register(t, "svc@1.0.0", 1, map[string]string{"k": "v"})
	for _, n := range ns {
		waitFor(t, n.ID()+" sees it", func() bool { return n.has(t, rec.ID) })
	}
	t.Logf("register visible on 10 nodes in %v", time.Since(start))
	start = time.Now()
	if err := ns[3].Free(rec.ID); err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		waitFor(t, n.ID()+" frees it", func() bool { return !n.has(t, rec.ID) })
	}
	t.Logf("free gone from 10 nodes in %v", time.Since(start))
	flush(t, ns[0], ns...)
	for _, n := range ns {
		if r, f := n.count(Registered, rec.ID), n.count(Freed, rec.ID); r != 1 || f != 1 {
			t.Errorf("%s: %d registered, %d freed events, want 1 and 1", n.ID(), r, f)
		}
	}
}

// everyRecordOnce registers one record per node and checks that every node
// sees all of them, with exactly one Registered event each.
func everyRecordOnce(t *testing.T, ns []*node) []Record {
	t.Helper()
	var recs []Record
	for i, n := range ns {
		recs = append(recs, n.register(t, fmt.Sprintf("r%d@1.0.%d", i, i), 1000+i, nil))
	}
	for _, n := range ns {
		for _, rec := range recs {
			waitFor(t, n.ID()+" sees "+rec.ID, func() bool { return n.has(t, rec.ID) })
		}
	}
	// One more round of changes flushes anything still in flight.
	for _, n := range ns {
		flush(t, n, ns...)
	}
	for _, n := range ns {
		for _, rec := range recs {
			if c := n.count(Registered, rec.ID); c != 1 {
				t.Errorf("%s: %d registered events for %s, want 1", n.ID(), c, rec.ID)
			}
		}
	}
	return recs
}

func TestRingOfThree(t *testing.T) {
	ns := nodes(t, 3)
	ring(t, ns, true)
	everyRecordOnce(t, ns)
}

func TestRingOfSix(t *testing.T) {
	ns := nodes(t, 6)
	ring(t, ns, true)
	recs := everyRecordOnce(t, ns)
	if err := ns[0].Free(recs[0].ID); err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		waitFor(t, "free", func() bool { return !n.has(t, recs[0].ID) })
	}
	flush(t, ns[3], ns...)
	for _, n := range ns {
		if c := n.count(Freed, recs[0].ID); c != 1 {
			t.Errorf("%s: %d freed events", n.ID(), c)
		}
	}
}

func TestChain(t *testing.T) {
	ns := nodes(t, 5)
	ring(t, ns, false)
	recs := everyRecordOnce(t, ns)
	up, err := ns[4].Update(recs[4].ID, map[string]string{"x": "y"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "update at the other end", func() bool {
		got, _ := ns[0].Services("r4")
		return len(got) == 1 && reflect.DeepEqual(got[0], up)
	})
}

func TestPartialMesh(t *testing.T) {
	// A star with a chord: n0 hub; n1-n2 linked; n4 behind n3.
	ns := nodes(t, 5)
	connectSynced(t, ns[0], ns[1])
	connectSynced(t, ns[0], ns[2])
	connectSynced(t, ns[0], ns[3])
	connectSynced(t, ns[1], ns[2])
	connectSynced(t, ns[3], ns[4])
	everyRecordOnce(t, ns)
}

func TestOwnerLinksVanish(t *testing.T) {
	ns := nodes(t, 4)
	links := fullMesh(t, ns)
	rec := ns[0].register(t, "x@1.0.0", 1, nil)
	for _, n := range ns {
		waitFor(t, "sees it", func() bool { return n.has(t, rec.ID) })
	}
	// n0 "dies": every link it has drops, it never says goodbye.
	start := time.Now()
	for k, l := range links {
		if k[0] == 0 {
			l.cut()
		}
	}
	for _, n := range ns[1:] {
		waitFor(t, n.ID()+" frees the dead node's record", func() bool { return !n.has(t, rec.ID) })
	}
	t.Logf("dead node's records freed on 3 nodes %v after its links dropped", time.Since(start))
	if !ns[0].has(t, rec.ID) {
		t.Error("the owner itself lost its record")
	}
}

// TestCloseFreesEverywhere: the records of a node that shuts down
// (gracefully) or closes (at once) go from every node, each freed once.
func TestCloseFreesEverywhere(t *testing.T) {
	for _, tc := range []struct{ topo, how string }{{"mesh", "Shutdown"}, {"chain", "Shutdown"}, {"mesh", "Close"}, {"chain", "Close"}} {
		topo := tc.topo
		t.Run(tc.topo+"/"+tc.how, func(t *testing.T) {
			ns := nodes(t, 4)
			if topo == "mesh" {
				fullMesh(t, ns)
			} else {
				ring(t, ns, false)
			}
			var recs []Record
			for i := range 50 {
				recs = append(recs, ns[0].register(t, "x@1.0.0", 100+i, nil))
			}
			for _, n := range ns {
				waitFor(t, "sees them", func() bool { return len(n.ids(t, "x")) == 50 })
			}
			// Every node knows every link: within an addition's merging
			// window, a node whose own link drops first may free the
			// records and show them again (see Announcing adjacency).
			settled(t, ns...)
			start := time.Now()
			if tc.how == "Close" {
				ns[0].Close()
			} else if err := ns[0].Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			for _, n := range ns[1:] {
				waitFor(t, n.ID()+" frees", func() bool { return len(n.ids(t, "x")) == 0 })
			}
			t.Logf("%s: 50 records of a node gone from 3 nodes %v after %s began", topo, time.Since(start), tc.how)
			flush(t, ns[1], ns[1:]...)
			for _, n := range ns[1:] {
				for _, r := range recs {
					if c := n.count(Freed, r.ID); c != 1 {
						t.Fatalf("%s: %d freed events for %s", n.ID(), c, r.ID)
					}
				}
			}
		})
	}
}

func TestCutAndRestoreThroughThird(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	connectSynced(t, a, b)
	connectSynced(t, b, c)
	ac := connectSynced(t, a, c)
	ra := a.register(t, "ra@1.0.0", 1, nil)
	rc := c.register(t, "rc@1.0.0", 2, nil)
	for _, n := range []*node{a, b, c} {
		waitFor(t, "all", func() bool { return n.has(t, ra.ID) && n.has(t, rc.ID) })
	}
	settled(t, a, b, c)
	for range 3 {
		ac.cut()
		for _, n := range []*node{a, b, c} {
			waitFor(t, n.ID()+" learns the cut", func() bool {
				return !slices.Contains(n.peersOf("a"), "c") && !slices.Contains(n.peersOf("c"), "a")
			})
		}
		ac = connectSynced(t, a, c)
		for _, n := range []*node{a, b, c} {
			waitFor(t, n.ID()+" learns the restore", func() bool {
				return slices.Contains(n.peersOf("a"), "c") && slices.Contains(n.peersOf("c"), "a")
			})
		}
	}
	flush(t, b, a, b, c)
	for _, n := range []*node{a, b, c} {
		if f := n.eventsOf(Freed); len(f) != 0 {
			t.Errorf("%s: freed events %v", n.ID(), f)
		}
		if r := n.eventsOf(Registered); len(r) != 3 {
			t.Errorf("%s: %d registered events, want 3", n.ID(), len(r))
		}
	}
}

func TestPartitionHeals(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	connectSynced(t, a, b)
	bc := connectSynced(t, b, c)
	rc := c.register(t, "rc@1.0.0", 1, nil)
	waitFor(t, "a sees rc", func() bool { return a.has(t, rc.ID) })
	bc.cut()
	waitFor(t, "a frees rc", func() bool { return !a.has(t, rc.ID) })
	// c changes while partitioned; a learns it all after the heal.
	rc2 := c.register(t, "rc2@1.0.0", 2, nil)
	connectSynced(t, b, c)
	waitFor(t, "a sees both", func() bool { return a.has(t, rc.ID) && a.has(t, rc2.ID) })
	// Events reach OnEvent through the registry's dispatch goroutine,
	// after the store: wait for the second, then check there is no third.
	waitFor(t, "rc registered again on a", func() bool { return a.count(Registered, rc.ID) >= 2 })
	flush(t, b, a, b, c)
	if got := a.count(Registered, rc.ID); got != 2 {
		t.Errorf("rc registered %d times on a, want 2 (before and after the partition)", got)
	}
}

func TestLateJoinerSync(t *testing.T) {
	small := func(c *Config) { c.MaxMessageBytes = 64 << 10 } // several snapshot chunks
	a, c := newNode(t, "a", small), newNode(t, "c", small)
	for i := range 1000 {
		a.register(t, fmt.Sprintf("svc%d@1.%d.0", i%7, i), 10000+i, map[string]string{"i": fmt.Sprint(i), "pad": "0123456789abcdef"})
	}
	// One free and one update, so the sync carries a history, not a log.
	all, _ := a.Services("")
	if err := a.Free(all[10].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(all[20].ID, map[string]string{"updated": "yes"}); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, "b", small)
	start := time.Now()
	connectSynced(t, a, b)
	t.Logf("1,000 records synced to a late joiner in %v", time.Since(start))
	want, _ := a.Services("")
	got, _ := b.Services("")
	if len(want) != 999 || !reflect.DeepEqual(got, want) {
		t.Fatalf("late joiner has %d records, owner %d; equal: %v", len(got), len(want), reflect.DeepEqual(got, want))
	}
	// And through a relay: c joins b only.
	connectSynced(t, b, c)
	got, _ = c.Services("")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("c has %d records through b", len(got))
	}
	flush(t, a, b)
	if n := len(b.eventsOf(Registered)); n != 1000 {
		t.Fatalf("b saw %d registered events, want 999 and a marker", n)
	}
}

func TestOverlappingLinks(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	old := connectSynced(t, a, b)
	connectSynced(t, b, c)
	ra := a.register(t, "ra@1.0.0", 1, nil)
	waitFor(t, "c", func() bool { return c.has(t, ra.ID) })
	connectSynced(t, a, b) // the replacement
	old.cut()
	ra2 := a.register(t, "ra2@1.0.0", 2, nil)
	waitFor(t, "c", func() bool { return c.has(t, ra2.ID) })
	if !slices.Equal(c.peersOf("a"), []string{"b"}) {
		t.Fatalf("a's adjacency as c sees it: %v", c.peersOf("a"))
	}
	flush(t, a, b, c)
	for _, n := range []*node{b, c} {
		if f := n.eventsOf(Freed); len(f) != 0 {
			t.Errorf("%s: freed events while a link was replaced: %v", n.ID(), f)
		}
	}
}

func TestRestartSameID(t *testing.T) {
	a1, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	ab := connectSynced(t, a1, b)
	connectSynced(t, b, c)
	old := a1.register(t, "svc@1.0.0", 1, nil)
	waitFor(t, "c", func() bool { return c.has(t, old.ID) })

	// a crashes (its link just drops) and restarts with the same id.
	ab.cut()
	waitFor(t, "c frees the old record", func() bool { return !c.has(t, old.ID) })
	a2 := newNode(t, "a")
	fresh := a2.register(t, "svc@1.0.0", 1, nil) // the same port: a new process
	connectSynced(t, a2, b)
	for _, n := range []*node{b, c} {
		waitFor(t, n.ID()+" sees the new record", func() bool { return n.has(t, fresh.ID) })
		if got := n.ids(t, "svc"); !slices.Equal(got, []string{fresh.ID}) {
			t.Errorf("%s: svc records %v, want only the new one", n.ID(), got)
		}
	}
	// Even if the old incarnation comes back (it should not), it loses.
	connectSynced(t, a1, c)
	marker := a2.register(t, "marker@1.0.0", 2, nil)
	waitFor(t, "marker", func() bool { return c.has(t, marker.ID) })
	if c.has(t, old.ID) || b.has(t, old.ID) {
		t.Error("the old incarnation's record came back")
	}
	flush(t, a2, b, c)
	for _, n := range []*node{b, c} {
		if c := n.count(Registered, old.ID); c != 1 {
			t.Errorf("%s: old record registered %d times, want 1 (never again)", n.ID(), c)
		}
	}
}

// A node restarts while its old run hangs (its links stay open) and the
// new run links to a alone (issue 18): b, still linked to the old run,
// shows the new run's record once it knows the new run reachable, and
// never frees it, neither when the new run's records reach it ahead of
// its state nor when its link to the old run dies.
func TestRestartWhileOldRunHangs(t *testing.T) {
	a, b, x1 := newNode(t, "a"), newNode(t, "b"), newNode(t, "x")
	connectSynced(t, a, b)
	xa := connectSynced(t, x1, a)
	xb := connectSynced(t, x1, b)
	old := x1.register(t, "svc@1.0.0", 1, nil)
	waitFor(t, "b sees the old record", func() bool { return b.has(t, old.ID) })
	settled(t, a, b, x1)

	// The new run links to a, which drops its link to the old run (the
	// mesh found it gone); b's link to the old run stays open.
	x2 := newNode(t, "x")
	connectSynced(t, x2, a)
	xa.cut()
	fresh := x2.register(t, "svc@1.0.0", 1, nil)
	b.waitEvent(t, Registered, fresh.ID)
	flush(t, x2, a, b)
	if !b.has(t, fresh.ID) || b.has(t, old.ID) {
		t.Errorf("b sees %v, want only the new run's record %s", b.ids(t, "svc"), fresh.ID)
	}

	// b finds the old run dead: its records are long gone, the new run's
	// stay.
	xb.cut()
	flush(t, x2, a, b)
	if !b.has(t, fresh.ID) {
		t.Errorf("b lost the new run's record when its link to the old run died")
	}
	for _, n := range []*node{a, b} {
		if c := n.count(Registered, fresh.ID); c != 1 {
			t.Errorf("%s: the new run's record registered %d times, want 1", n.ID(), c)
		}
		if c := n.count(Freed, fresh.ID); c != 0 {
			t.Errorf("%s: the new run's record freed %d times, want 0 (a live record flapped)", n.ID(), c)
		}
		if c := n.count(Freed, old.ID); c != 1 {
			t.Errorf("%s: the old run's record freed %d times, want 1", n.ID(), c)
		}
	}
}

func TestOwnRecordsNotTakenFromPeers(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	connectSynced(t, a, b)
	rec := a.register(t, "x@1.0.0", 1, nil)
	waitFor(t, "b", func() bool { return b.has(t, rec.ID) })
	got, _ := a.Services("")
	if len(got) != 1 || !maps.Equal(got[0].Meta, rec.Meta) {
		t.Fatalf("a has %v", got)
	}
}

func TestRelayCounts(t *testing.T) {
	slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Hour, 3*time.Hour } // no heartbeats
	relayed := func(ns []*node) int64 {
		var n int64
		for _, x := range ns {
			n += x.relayed.Load()
		}
		return n
	}
	for _, tc := range []struct {
		name  string
		build func(t *testing.T, ns []*node)
		want  int64 // relays of one register at n0
	}{
		{"full mesh", func(t *testing.T, ns []*node) { fullMesh(t, ns) }, 0},
		{"chain", func(t *testing.T, ns []*node) { ring(t, ns, false) }, 2}, // n1→n2, n2→n3
		{"ring", func(t *testing.T, ns []*node) { ring(t, ns, true) }, 2},   // n1→n2 and n3→n2 (dropped there)
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := nodes(t, 4, slow)
			tc.build(t, ns)
			settled(t, ns...)
			before := relayed(ns)
			rec := ns[0].register(t, "x@1.0.0", 1, nil)
			for _, n := range ns {
				waitFor(t, "record", func() bool { return n.has(t, rec.ID) })
			}
			if got := relayed(ns) - before; got != tc.want {
				t.Errorf("%d relays, want %d", got, tc.want)
			}
		})
	}
}

// TestStateRelayedOnce: n3 has no link to n2, and n0 and n1 are linked to
// both. A new state of n2 reaches n3 relayed once, by n0 (the lower id of
// the two), not once per common neighbour; and with n0's link to n3 cut,
// n1 takes over.
func TestStateRelayedOnce(t *testing.T) {
	slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Hour, 3*time.Hour } // no heartbeats
	ns := nodes(t, 4, slow)
	links := map[[2]int]*testLink{}
	for _, p := range [][2]int{{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}} {
		links[p] = connect(t, ns[p[0]], ns[p[1]])
	}
	beatOf := func(n *node, owner string) uint64 {
		n.Registry.mu.Lock()
		defer n.Registry.mu.Unlock()
		if o := n.owners[owner]; o != nil {
			return o.beat
		}
		return 0
	}
	relays := func() [4]int64 {
		var c [4]int64
		for i, n := range ns {
			c[i] = n.relayed.Load()
		}
		return c
	}
	renew := func() [4]int64 {
		t.Helper()
		settled(t, ns...)
		before := relays()
		n2 := ns[2].Registry
		n2.mu.Lock()
		n2.bumpState()
		beat := n2.self.beat
		n2.mu.Unlock()
		waitFor(t, "n2's state at n3", func() bool { return beatOf(ns[3], "n2") == beat })
		for _, n := range ns[:2] {
			waitFor(t, "n2's state at "+n.ID(), func() bool { return beatOf(n, "n2") == beat })
		}
		after := relays()
		for i := range after {
			after[i] -= before[i]
		}
		return after
	}
	if got := renew(); got != [4]int64{1, 0, 0, 0} {
		t.Errorf("relays of n2's state by n0..n3: %v, want only n0's", got)
	}
	links[[2]int{0, 3}].cut()
	if got := renew(); got != [4]int64{0, 1, 0, 0} {
		t.Errorf("with n0-n3 cut, relays of n2's state by n0..n3: %v, want only n1's", got)
	}
}

// TestHeldPeerStaysLinked: while the transport says it has a link to a
// peer (PeerUp), the end of the peer's last Serve does not make it
// unlinked, and its records stay; once it says the peer is down
// (PeerDown), they go.
func TestHeldPeerStaysLinked(t *testing.T) {
	ns := nodes(t, 2)
	link := connectSynced(t, ns[0], ns[1])
	rec := ns[0].register(t, "x@1.0.0", 1, nil)
	waitFor(t, "n1 sees the record", func() bool { return ns[1].has(t, rec.ID) })
	ns[1].PeerUp(ns[0].ID())
	ns[1].PeerUp(ns[0].ID()) // a second link: calls pair up
	link.cut()               // returns once both Serve calls have
	ns[1].PeerDown(ns[0].ID())
	if !ns[1].has(t, rec.ID) {
		t.Fatal("the record went while its owner was held by PeerUp")
	}
	ns[1].PeerDown(ns[0].ID())
	if ns[1].has(t, rec.ID) {
		t.Fatal("the record stayed once its owner was down (PeerDown)")
	}
}
