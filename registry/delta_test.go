package registry

import (
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// TestAdjacencyChangeGoesAsDelta: a node with many neighbours that gains
// one more tells a peer that holds its adjacency only what changed: a
// State naming the new neighbour alone, on top of the beat the peer has.
// A lost neighbour goes the same way, named at incarnation 0. What a
// node sends for a change of its links does not grow with the mesh.
func TestAdjacencyChangeGoesAsDelta(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Hour, 3*time.Hour } // no heartbeats
		a := newNode(t, "a", slow)
		for _, id := range []string{"n1", "n2", "n3", "n4", "n5", "n6"} {
			connect(t, a, newNode(t, id, slow))
		}
		synctest.Wait()
		time.Sleep(time.Second) // a's merged additions are issued
		synctest.Wait()

		c := newTapPeer(t, a, "c", 9)
		if err := c.send(must(encodeHello("c", []digestEntry{{owner: "c", inc: 9, beat: 1}}, DefaultMaxMessageBytes))); err != nil {
			t.Fatal(err)
		}
		var base uint64
		for _, m := range c.until(t, "synced", isSynced) {
			if m.typ == msgState && m.owner == "a" {
				if m.delta || len(m.peers) != 7 {
					t.Fatalf("a's state in the sync: delta %v, %d neighbours; want whole, 7 (c too)", m.delta, len(m.peers))
				}
				base = m.beat
			}
		}
		isStateOfA := func(m *message) bool { return m.typ == msgState && m.owner == "a" }
		// The sync's state was made for c alone, as a's new link to c
		// waited to be announced. The announcement comes once its
		// merging window has passed: to c, a delta on the sync's state,
		// with nothing c does not have.
		msgs := c.until(t, "a's state announcing c", isStateOfA)
		m := msgs[len(msgs)-1]
		if !m.delta || m.base != base || len(m.peers) != 0 {
			t.Fatalf("a's state announcing c: delta %v on beat %d naming %v; want a delta on the sync's beat %d naming nothing", m.delta, m.base, m.peers, base)
		}
		base = m.beat

		n7 := newNode(t, "n7", slow)
		l := connect(t, a, n7)
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		msgs = c.until(t, "a's state naming n7", isStateOfA)
		m = msgs[len(msgs)-1]
		if !m.delta || m.base != base || len(m.peers) != 1 || m.peers[0] != (peerRef{id: "n7", inc: n7.self.inc}) {
			t.Fatalf("a's state after linking n7: delta %v on beat %d naming %v; want a delta on beat %d naming n7 alone", m.delta, m.base, m.peers, base)
		}
		base = m.beat

		l.ca.Close() // a loses n7: its state goes at once
		msgs = c.until(t, "a's state without n7", isStateOfA)
		m = msgs[len(msgs)-1]
		if !m.delta || m.base != base || len(m.peers) != 1 || m.peers[0] != (peerRef{id: "n7"}) {
			t.Fatalf("a's state after losing n7: delta %v on beat %d naming %v; want a delta on beat %d removing n7 alone", m.delta, m.base, m.peers, base)
		}
	})
}

// TestDeltaOnMissingBaseAsksWhole: a delta built on an adjacency this
// node does not hold is not applied (it would make up an adjacency
// nobody announced): the node asks the sender for the owner, and the
// whole State in the answer puts it right. A delta on what the node
// holds then applies, additions and removals.
func TestDeltaOnMissingBaseAsksWhole(t *testing.T) {
	a := newNode(t, "a")
	c := newTapPeer(t, a, "c", 9)
	if err := c.send(must(encodeHello("c", []digestEntry{{owner: "c", inc: 9, beat: 1}}, DefaultMaxMessageBytes))); err != nil {
		t.Fatal(err)
	}
	c.until(t, "synced", isSynced)
	delta := func(beat, base uint64, peers ...peerRef) []byte {
		return must(encodeStateOf(&message{typ: msgState, owner: "x", inc: 4, beat: beat, base: base, delta: true, peers: peers}, DefaultMaxMessageBytes))
	}
	xPeers := func() map[string]uint64 {
		return locked(a, func(r *Registry) map[string]uint64 {
			if x := r.owners["x"]; x != nil {
				return maps.Clone(x.peers)
			}
			return nil
		})
	}
	isWantOfX := func(m *message) bool { return m.typ == msgWant && m.owner == "x" }

	if err := c.send(delta(5, 3, peerRef{"c", 9})); err != nil {
		t.Fatal(err)
	}
	c.until(t, "a's want of x", isWantOfX)
	if got := xPeers(); len(got) != 0 {
		t.Fatalf("a applied a delta on a beat it never had: x's adjacency is %v", got)
	}

	if err := c.send(append(must(encodeSnap("x", 4, 0, nil, DefaultMaxMessageBytes)),
		must(encodeState("x", 4, 0, 5, false, []peerRef{{"c", 9}, {"y", 2}}, DefaultMaxMessageBytes)))...); err != nil {
		t.Fatal(err)
	}
	if err := c.send(delta(6, 5, peerRef{"y", 0}, peerRef{"z", 3})); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"c": 9, "z": 3}
	waitFor(t, "x's adjacency after the delta", func() bool { return maps.Equal(xPeers(), want) })

	// A delta on beat 5 again: a holds beat 6's adjacency.
	if err := c.send(delta(7, 5, peerRef{"w", 1})); err != nil {
		t.Fatal(err)
	}
	c.until(t, "a's want of x, again", isWantOfX)
	if got := xPeers(); !maps.Equal(got, want) {
		t.Fatalf("x's adjacency is %v after a delta on a beat a no longer holds, want %v kept", got, want)
	}
}

// TestPeerGoneFreesAtOnce: when the caller knows a peer's run is over
// (its address refused: kill -9), the peer's records go at once, though
// another node's State still names its link to the dead node (that node
// has not noticed yet). Without PeerGone, the dead node stays reachable
// through that node until its loss arrives. A newer State of the run
// (it was alive after all) shows the records again.
func TestPeerGoneFreesAtOnce(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	a.PeerUp("c") // the transport holds c, as the mesh does
	connectSynced(t, a, b)
	connectSynced(t, b, c)
	ac := connectSynced(t, a, c)
	rec := c.register(t, "c@1.0.0", 1, nil)
	a.waitEvent(t, Registered, rec.ID)
	waitFor(t, "b's state naming c at a", func() bool {
		return locked(a, func(r *Registry) bool { return r.owners["b"] != nil && r.owners["b"].peers["c"] != 0 })
	})

	ac.cut() // a's link to c ends; a still holds c
	flush(t, b, a)
	if got := len(a.eventsOf(Freed)); got != 0 {
		t.Fatalf("a freed %d records when its link to c ended while it held c", got)
	}
	a.PeerGone("c")
	a.waitEvent(t, Freed, rec.ID) // b's State still names c: only PeerGone frees it
	a.PeerDown("c")
	// a's next heartbeat: b's link to c, which b has not lost, renews
	// nothing of a run a knows is over.
	locked(a, func(r *Registry) bool {
		r.tick(time.Now())
		if r.dirty {
			r.recompute() // what the walk due after walkGap does
		}
		return true
	})
	if a.has(t, rec.ID) {
		t.Fatal("a showed the record of a run it knows is over again at its next heartbeat, on b's word")
	}

	// c lives after all: its next State, relayed by b, brings its records
	// back at a.
	c.Registry.mu.Lock()
	c.bumpState()
	c.Registry.mu.Unlock()
	waitFor(t, "c's record shown again at a", func() bool { return len(a.eventsOf(Registered)) >= 2 })
}

// checkUncovered fails unless, for every owner, the peers n relays to
// (uncoveredPeers, from the adjacencies' bits) are those of n's adjacency
// that the owner's does not name at the run n links, by id.
func checkUncovered(t testing.TB, n *node) {
	t.Helper()
	locked(n, func(r *Registry) bool {
		for id, o := range r.owners {
			if o == r.self {
				continue
			}
			var want []string
			for peer, mine := range r.self.peers {
				if peer != id && o.peers[peer] != mine {
					want = append(want, peer)
				}
			}
			var got []string
			for _, p := range r.uncoveredPeers(o) {
				got = append(got, p.id)
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s: owner %s: uncovered %v, by id %v", r.ID(), id, got, want)
			}
		}
		return true
	})
}

// TestUncoveredFollowsAdjacencies: the count relay skips by (owners that
// name every peer of this node) stays what counting afresh gives while
// links come and go in any order, and a whole mesh relays nothing.
func TestUncoveredFollowsAdjacencies(t *testing.T) {
	ns := []*node{newNode(t, "a"), newNode(t, "b"), newNode(t, "c"), newNode(t, "d"), newNode(t, "e")}
	links := map[[2]int]*testLink{}
	check := func() {
		t.Helper()
		flush(t, ns[0], ns...)
		for _, n := range ns {
			checkUncovered(t, n)
		}
	}
	// A chain, then a whole mesh, then links cut and made again.
	for i := range len(ns) - 1 {
		links[[2]int{i, i + 1}] = connectSynced(t, ns[i], ns[i+1])
	}
	check()
	for i := range ns {
		for j := i + 2; j < len(ns); j++ {
			links[[2]int{i, j}] = connectSynced(t, ns[i], ns[j])
		}
	}
	check()
	before := ns[0].relayed.Load()
	ns[2].register(t, "c@1.0.0", 1, nil)
	flush(t, ns[2], ns...)
	if got := ns[0].relayed.Load() - before; got != 0 {
		t.Errorf("a node of a whole mesh relayed %d messages", got)
	}
	for _, k := range [][2]int{{0, 2}, {1, 3}, {2, 4}} {
		links[k].cut()
		check()
	}
	for _, k := range [][2]int{{0, 2}, {2, 4}} {
		links[k] = connectSynced(t, ns[k[0]], ns[k[1]])
		check()
	}
}

// TestNoForgeryOfNeighboursRecords: a peer that passes off records as
// another node's, or frees that node's records, changes nothing on a node
// linked to that node itself (it has them first-hand, and nothing of them
// is relayed to it). In a whole mesh no node can change another's records
// anywhere.
func TestNoForgeryOfNeighboursRecords(t *testing.T) {
	a, x := newNode(t, "a"), newNode(t, "x")
	connectSynced(t, a, x)
	real := x.register(t, "web@1.0.0", 80, nil)
	a.waitEvent(t, Registered, real.ID)
	p := newTapPeer(t, a, "p", 9)
	if err := p.send(must(encodeHello("p", []digestEntry{{owner: "p", inc: 9, beat: 1}}, DefaultMaxMessageBytes))); err != nil {
		t.Fatal(err)
	}
	p.until(t, "synced", isSynced)
	inc, seq := x.self.inc, locked(x, func(r *Registry) uint64 { return r.self.seq })
	if err := p.send(
		must(encodePut("x", inc, fakeRecord("x", inc, seq+1, "evil", nil), DefaultMaxMessageBytes)),
		must(encodeDel("x", inc, seq+2, real.ID, DefaultMaxMessageBytes)),
		must(encodeState("x", inc, seq+2, 1000, true, nil, DefaultMaxMessageBytes)), // "x leaves"
	); err != nil {
		t.Fatal(err)
	}
	flush(t, x, a) // x's own next change reaches a after what p sent
	got, err := a.Services("")
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, r := range got {
		if r.Owner == "x" {
			roles = append(roles, r.Name)
		}
	}
	if !slices.Contains(roles, "web") || slices.Contains(roles, "evil") {
		t.Fatalf("x's records on a after p's forgeries: %v; want web, not evil", roles)
	}
}

// TestWholeMeshLinksHoldNoTable: once a mesh is whole, no link holds a
// table of what its peer has of other owners (each owner sends its peers
// all of its own): formed in any order, syncs and relays noted entries
// on the way, and every one goes within a heartbeat or so.
func TestWholeMeshLinksHoldNoTable(t *testing.T) {
	ns := []*node{newNode(t, "a"), newNode(t, "b"), newNode(t, "c"), newNode(t, "d"), newNode(t, "e")}
	for _, n := range ns {
		n.register(t, "x@1.0.0", 1, nil)
	}
	// A chain first, so that syncs carry other owners' records and
	// states, then every other pair.
	for i := range len(ns) - 1 {
		connectSynced(t, ns[i], ns[i+1])
	}
	for i := range ns {
		for j := i + 2; j < len(ns); j++ {
			connectSynced(t, ns[i], ns[j])
		}
	}
	settled(t, ns...)
	for _, n := range ns {
		waitFor(t, n.ID()+"'s links holding no table", func() bool {
			return locked(n, func(r *Registry) bool {
				for _, ls := range r.links {
					for _, l := range ls {
						if l.knownCount != 0 || l.known != nil {
							return false
						}
					}
				}
				return true
			})
		})
	}
}
