package e2e_test

// Multi-host tests of node identity: restarts with the same id, a second
// process with an id already in the mesh, nodes of other clusters (see
// lan_test.go).

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/lan"
	"github.com/tallship-go/tallship/internal/testutil/node"
)

// A node killed and restarted at once with its old id rejoins, and its
// new registrations replace the old ones everywhere.
func TestLANRestartSameID(t *testing.T) {
	l, procs := lanMesh(t, 5, node.Config{})
	recs, old, rest := lanOneToRestart(t, procs, "r")
	marks := lanMarks(rest)

	killed := old.Kill()
	again := l.Start(old.Host, node.Config{Cluster: lanCluster(t), ID: old.ID})
	restarted := time.Since(killed)
	newRec, _, _ := lanRejoined(t, again, rest, recs, lanMeshWait)
	t.Logf("figure: kill -9, restart with the old id (%v) → rejoined with its new records everywhere in %v",
		restarted.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if newRec.Inc <= recs[len(recs)-1].Inc {
		t.Errorf("restarted incarnation %d not above the old %d", newRec.Inc, recs[len(recs)-1].Inc)
	}
	for _, p := range rest {
		for _, e := range lanEventsSince(p, marks) {
			if e.Ev == "freed" && e.Peer != old.ID {
				t.Errorf("%s: freed a record of %s, a node that did not restart", p, e.Peer)
			}
		}
	}
}

// A host hangs (its process frozen: connections open, nothing answered)
// and its node is started again, with its old id, before the peers have
// noticed: the new one gets in once the old one is dropped, and its new
// registrations replace the old ones everywhere.
func TestLANRestartAfterHang(t *testing.T) {
	// The hung node has the highest id: its peers dialed its old links, and
	// its new run dials them (after FallbackDelay) while they may still
	// hold those old links.
	l, procs := lanMeshOf(t, 5, func(i int) node.Config {
		if i == 4 {
			return node.Config{ID: "zz-hung-node"}
		}
		return node.Config{}
	})
	recs, old, rest := lanOneToRestart(t, procs, "h")
	marks := lanMarks(rest)

	hung := time.Now()
	old.Freeze()
	again := l.Start(old.Host, node.Config{Cluster: lanCluster(t), ID: old.ID})
	_, all, want := lanRejoined(t, again, rest, recs, lanHealWait)
	t.Logf("figure: hang, restart with the old id → rejoined with its new records everywhere in %v", time.Since(hung).Round(time.Millisecond))
	for _, p := range rest {
		for _, e := range lanEventsSince(p, marks) {
			if (e.Ev == "freed" || e.Ev == "peer-down") && e.Peer != old.ID {
				t.Errorf("%s: %s of %s, a node that did not hang", p, e.Ev, e.Peer)
			}
		}
	}
	// The old process's death changes nothing for the new one: no link of
	// the mesh drops, no record is freed.
	marks = lanMarks(all)
	old.Kill()
	deadline := time.Now().Add(time.Second)
	for _, p := range all {
		skip, seen := marks[p], 0
		if e, ok := p.WaitEvent(time.Until(deadline), func(e node.Event) bool {
			seen++
			return seen > skip && (e.Ev == "peer-down" || e.Ev == "freed")
		}); ok {
			t.Errorf("%s: %s of %s (%s) when the old process was killed", p, e.Ev, e.Peer, e.Err)
		}
	}
	if err := lan.SeeExactly(all, want); err != nil {
		t.Error(err)
	}
}

// A second process started with the id of a running one: the second gets
// a clear error and the first is unaffected (it keeps its links and its
// records).
func TestLANDuplicateID(t *testing.T) {
	l, procs := lanMesh(t, 4, node.Config{})
	first := procs[0]
	recs := lanRegisterEach(t, procs, "d")
	// procs[3]'s host runs the second process with first's id.
	procs[3].Kill()
	members := procs[:3]
	lan.Eventually(t, lanChangeWait, "a mesh of three", func() error { return lan.FullMesh(members...) })
	recs = lanRecordsOf(recs, members)
	lan.Eventually(t, lanChangeWait, "the killed node's records gone", func() error { return lan.SeeExactly(members, recs) })
	marks := lanMarks(members)

	second, err := l.TryStart(procs[3].Host, node.Config{Cluster: lanCluster(t), ID: first.ID})
	if err != nil {
		t.Logf("the second process with id %s: %v", first.ID, err)
	} else {
		// It runs: it must say, soon, that its id is taken.
		e, ok := second.WaitEvent(lanDownBound, func(e node.Event) bool {
			return e.Ev == "fatal" || (e.Ev == "id-conflict" && strings.Contains(e.Err, first.ID))
		})
		if !ok {
			t.Errorf("the second process with id %s runs with no id-conflict error after %v; peers %v", first.ID, lanDownBound, peersOf(t, second.Proc))
		} else {
			t.Logf("the second process with id %s: %s %s", first.ID, e.Ev, e.Err)
		}
	}
	// The first is unaffected: no link of the three dropped or re-made,
	// nothing freed, every record in place.
	if _, ok := first.WaitEvent(lanDownBound, func(node.Event) bool { return false }); ok {
		t.Fatal("unreachable")
	}
	for _, p := range members {
		for _, e := range lanEventsSince(p, marks) {
			if e.Ev == "peer-down" || e.Ev == "peer-up" || e.Ev == "freed" {
				t.Errorf("%s: %s %s (%s) after the second process started", p, e.Ev, e.Peer, e.Err)
			}
		}
	}
	if err := lan.FullMesh(members...); err != nil {
		t.Error(err)
	}
	if err := lan.SeeExactly(members, recs); err != nil {
		t.Error(err)
	}
}

// lanOneToRestart registers a record of role prefix on each of procs and
// one more, old@1.0.0, on the last, which a test then restarts; it waits
// until every record is everywhere and returns them, the last process and
// the others.
func lanOneToRestart(t *testing.T, procs []*lan.Proc, prefix string) (recs []node.Record, old *lan.Proc, rest []*lan.Proc) {
	t.Helper()
	recs = lanRegisterEach(t, procs, prefix)
	old = procs[len(procs)-1]
	recs = append(recs, old.Register("old@1.0.0"))
	lan.Eventually(t, lanChangeWait, "every record everywhere", func() error { return lan.SeeExactly(procs, recs) })
	return recs, old, procs[:len(procs)-1]
}

// lanRejoined registers new@2.0.0 on again, the restarted process, and
// waits (meshWait) until it is in one mesh with rest and its new record
// has replaced its old ones everywhere. It returns the new record, every
// process, and the records each should see.
func lanRejoined(t *testing.T, again *lan.Proc, rest []*lan.Proc, recs []node.Record, meshWait time.Duration) (newRec node.Record, all []*lan.Proc, want []node.Record) {
	t.Helper()
	newRec = again.Register("new@2.0.0")
	all = append(slices.Clone(rest), again)
	want = append(lanRecordsOf(recs, rest), newRec)
	lan.Eventually(t, meshWait, "one mesh with the restarted node", func() error { return lan.FullMesh(all...) })
	lan.Eventually(t, lanChangeWait, "the new registrations in place of the old", func() error { return lan.SeeExactly(all, want) })
	return newRec, all, want
}

// Nodes of another cluster, with a wrong secret or with none, on the same
// LAN as a cluster with a secret: they never link with it, not by mDNS
// and not when told to connect, in either direction, and its services
// never see theirs.
func TestLANForeignNodesNeverLink(t *testing.T) {
	l := lan.New(t, 6)
	const cluster, secret = "blue", "s3cret"
	var members []*lan.Proc
	for _, h := range l.Hosts()[:3] {
		members = append(members, l.Start(h, node.Config{Cluster: cluster, Secret: secret}))
	}
	foreign := []*lan.Proc{
		l.Start(l.Host(3), node.Config{Cluster: "green", Secret: secret}),
		l.Start(l.Host(4), node.Config{Cluster: cluster, Secret: "wrong"}),
		l.Start(l.Host(5), node.Config{Cluster: cluster}),
	}
	what := []string{"another cluster", "a wrong secret", "no secret"}
	lan.Eventually(t, lanMeshWait, "the members' mesh", func() error { return lan.FullMesh(members...) })
	recs := lanRegisterEach(t, members, "b")
	for _, f := range foreign {
		f.Register("intruder@1.0.0")
	}
	// Told to connect, both ways: refused.
	for i, f := range foreign {
		if id, err := f.Connect(members[0].Addrs[0]); err == nil {
			t.Errorf("a node with %s linked to a member (%s)", what[i], id)
		} else {
			t.Logf("a node with %s connecting to a member: %v", what[i], err)
		}
		if id, err := members[1].Connect(f.Addrs[0]); err == nil {
			t.Errorf("a member linked to a node with %s (%s)", what[i], id)
		} else {
			t.Logf("a member connecting to a node with %s: %v", what[i], err)
		}
	}
	// For a while, while mDNS runs and the connects are retried: no link.
	memberIDs := lan.IDs(members...)
	bad := func(p *lan.Proc) func(e node.Event) bool {
		return func(e node.Event) bool {
			return e.Ev == "peer-up" && (slices.Contains(memberIDs, p.ID) != slices.Contains(memberIDs, e.Peer))
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, p := range append(slices.Clone(members), foreign...) {
		if e, ok := p.WaitEvent(time.Until(deadline), bad(p)); ok {
			t.Errorf("%s linked with %s", p, e.Peer)
		}
	}
	if err := lan.FullMesh(members...); err != nil {
		t.Error(err)
	}
	if err := lan.SeeExactly(members, recs); err != nil {
		t.Error(err)
	}
	for i, f := range foreign {
		if peers := peersOf(t, f.Proc); len(peers) != 0 {
			t.Errorf("the node with %s has peers %v", what[i], peers)
		}
	}
}
