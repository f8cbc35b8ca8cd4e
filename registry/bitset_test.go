package registry

import (
	"testing"
)

// checkNames checks that n's owners have distinct indices, and that each
// owner's names says, for every other, what its peers say: that it names
// that owner's current run.
func checkNames(t *testing.T, n *node) {
	t.Helper()
	for _, bad := range locked(n, func(r *Registry) []string {
		var bad []string
		seen := map[int]string{}
		for id, o := range r.owners {
			if other, dup := seen[o.idx]; dup {
				bad = append(bad, "index of "+id+" is "+other+"'s too")
			}
			seen[o.idx] = id
			for _, x := range r.owners {
				inc, ok := o.peers[x.id]
				if want := ok && inc == x.inc; o.names.has(x.idx) != want {
					bad = append(bad, o.id+" names "+x.id+": bit differs from its adjacency")
				}
			}
		}
		return bad
	}) {
		t.Errorf("%s: %s", n.ID(), bad)
	}
}

// TestNamesFollowAdjacency: the bit sets that stand for adjacency in the
// walk and the relays (owner.names) say what the adjacency says, through
// links made and cut, a node's restart, and an owner forgotten whose
// index goes to a newcomer. A wrong bit would show a dead node's records
// or hide a live one's.
func TestNamesFollowAdjacency(t *testing.T) {
	a1, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	ab := connectSynced(t, a1, b)
	connectSynced(t, b, c)
	rec := a1.register(t, "svc@1.0.0", 1, nil)
	waitFor(t, "c has a's record", func() bool { return c.has(t, rec.ID) })
	for _, n := range []*node{a1, b, c} {
		checkNames(t, n)
	}

	// a restarts: the same id, a new run, linked to b again.
	ab.cut()
	waitFor(t, "c frees a's record", func() bool { return !c.has(t, rec.ID) })
	a1.Close()
	a2 := newNode(t, "a")
	fresh := a2.register(t, "svc@1.0.0", 1, nil)
	ab2 := connectSynced(t, a2, b)
	waitFor(t, "c has the new run's record", func() bool { return c.has(t, fresh.ID) })
	for _, n := range []*node{a2, b, c} {
		checkNames(t, n)
	}

	// a goes for good: c forgets it, and a newcomer takes its index.
	ab2.cut()
	a2.Close()
	waitFor(t, "c forgets a", func() bool {
		return locked(c, func(r *Registry) bool { return r.owners["a"] == nil })
	})
	checkNames(t, c)
	d := newNode(t, "d")
	connectSynced(t, d, c)
	late := d.register(t, "late@1.0.0", 2, nil)
	waitFor(t, "b has d's record", func() bool { return b.has(t, late.ID) })
	for _, n := range []*node{b, c, d} {
		checkNames(t, n)
	}
	if !b.has(t, late.ID) || b.has(t, fresh.ID) {
		t.Errorf("b: d's record %v, a's last %v; want d's alone", b.has(t, late.ID), b.has(t, fresh.ID))
	}
}
