package e2e_test

// End-to-end tests of the service registry across real nodes (issue 3):
// queries, waiting, replication, liveness. See mesh_test.go.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

// Three versions of a role on three nodes, queried from a fourth.
func TestServiceVersionQueries(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	var nodes []*mesh.Node
	for i := range 4 {
		nodes = append(nodes, join(t, cluster, nodeConfig(fmt.Sprintf("v%d", i))))
	}
	eventually(t, meshWait, "a full mesh of 4 by mDNS", func() bool { return fullMesh(nodes...) })
	for i, v := range []string{"1.2.3", "1.3.5", "0.9.0"} {
		register(t, nodes[i], mesh.Service{Role: "beep@" + v, Port: 7000 + i})
	}
	register(t, nodes[0], mesh.Service{Role: "boop@1.2.3", Port: 7100}) // another name never matches
	q := nodes[3]
	eventually(t, changeWait, "3 beeps on the fourth node", func() bool { return len(services(t, q, "beep")) == 3 })

	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"beep", []string{"0.9.0", "1.2.3", "1.3.5"}},
		{"beep@1.2.x", []string{"1.2.3"}},
		{"beep@>1.2.0", []string{"1.2.3", "1.3.5"}},
		{"beep@1.2.3", []string{"1.2.3"}},
		{"beep@^1.2", []string{"1.2.3", "1.3.5"}},
		{"beep@~1.2", []string{"1.2.3"}},
		{"beep@>=1.0 <2", []string{"1.2.3", "1.3.5"}},
		{"beep@1.x", []string{"1.2.3", "1.3.5"}},
		{"beep@2", nil},
	} {
		if got := versions(services(t, q, tc.query)); !slices.Equal(got, tc.want) {
			t.Errorf("Services(%q) versions = %v, want %v", tc.query, got, tc.want)
		}
	}
	for i, rec := range services(t, q, "beep") {
		if rec.Owner == q.ID() || rec.Host != "127.0.0.1" || rec.Port < 7000 || rec.Port > 7002 {
			t.Errorf("record %d = %+v: want another owner, host 127.0.0.1, port 7000-7002", i, rec)
		}
	}
	for _, bad := range []string{"beep@>>1", "be ep", "@1.0", "beep@"} {
		if recs, err := q.Services(bad); !errors.Is(err, registry.ErrBadQuery) {
			t.Errorf("Services(%q) = %v, %v; want ErrBadQuery", bad, recs, err)
		}
	}
}

// A Lookup waiting before any instance exists resolves when one registers
// on another node, with its metadata.
func TestLookupBeforeRegister(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	a := join(t, cluster, nodeConfig("lookup-a"))
	b := join(t, cluster, nodeConfig("lookup-b"))
	eventually(t, meshWait, "a and b linked by mDNS", func() bool { return fullMesh(a, b) })

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := a.Lookup(short, "late@^2")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup with nothing registered = %v, want context.DeadlineExceeded", err)
	}

	type result struct {
		recs []mesh.Record
		err  error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), changeWait)
	defer cancel()
	go func() {
		recs, err := a.Lookup(ctx, "late@^2")
		done <- result{recs, err}
	}()
	// Register only once the Lookup is known to be waiting.
	eventually(t, changeWait, "the Lookup to wait", func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "registry.(*Registry).Lookup(")
	})
	select {
	case r := <-done:
		t.Fatalf("Lookup returned before any instance exists: %v, %v", r.recs, r.err)
	default:
	}
	register(t, b, mesh.Service{Role: "late@1.9.0", Port: 9001}) // out of range: the Lookup waits on
	meta := map[string]string{"zone": "blue", "weight": "3"}
	want := register(t, b, mesh.Service{Role: "late@2.1.0", Port: 9002, Meta: meta})

	r := <-done
	if r.err != nil {
		t.Fatalf("Lookup: %v", r.err)
	}
	if len(r.recs) != 1 {
		t.Fatalf("Lookup returned %d records, want 1: %+v", len(r.recs), r.recs)
	}
	got := r.recs[0]
	if got.ID != want.ID || got.Owner != b.ID() || got.Role() != "late@2.1.0" ||
		got.Host != "127.0.0.1" || got.Port != 9002 || !maps.Equal(got.Meta, meta) {
		t.Fatalf("Lookup = %+v, want %+v with meta %v", got, want, meta)
	}
}

// Ten nodes find each other by mDNS and form the full mesh of 45 links; a
// register on one is seen by all, a free leaves none.
func TestTenNodesRegisterAndFree(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	start := time.Now()
	var nodes []*mesh.Node
	for i := range 10 {
		nodes = append(nodes, join(t, cluster, nodeConfig(fmt.Sprintf("ten-%02d", i))))
	}
	deadline := time.Now().Add(meshWait)
	for !fullMesh(nodes...) {
		if time.Now().After(deadline) {
			t.Fatalf("no full mesh of 10 by mDNS after %v; missing links: %v; discovery errors: %v", meshWait, missingLinks(nodes), discoveryErrors(nodes))
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("ten nodes started → full mesh: %v", time.Since(start))
	pairs := map[[2]string]bool{}
	for _, n := range nodes {
		ps := n.Peers()
		if len(ps) != 9 {
			t.Fatalf("%s has %d peers, want 9", n.ID(), len(ps))
		}
		for _, p := range ps {
			pairs[[2]string{min(n.ID(), p.ID), max(n.ID(), p.ID)}] = true
		}
	}
	if len(pairs) != 45 {
		t.Fatalf("%d distinct links, want 45", len(pairs))
	}
	converge(t, nodes...)

	watchers := make([]*recorder, len(nodes))
	for i, n := range nodes {
		watchers[i] = watch(t, n, "ten")
	}
	t0 := time.Now()
	rec := register(t, nodes[3], mesh.Service{Role: "ten@1.0.0", Port: 1010, Meta: map[string]string{"k": "v"}})
	var last time.Time
	for i, w := range watchers {
		at := w.waitFor(t, changeWait, "the register", func(evs []mesh.ServiceEvent) bool {
			return slices.ContainsFunc(evs, func(ev mesh.ServiceEvent) bool {
				return ev.Kind == registry.Registered && ev.Record.ID == rec.ID
			})
		})
		last = latest(last, at)
		if !has(t, nodes[i], "ten@1", rec.ID) {
			t.Fatalf("%s: record not in Services after its event", nodes[i].ID())
		}
	}
	t.Logf("register → visible on all ten: %v", last.Sub(t0))

	t0 = time.Now()
	if err := nodes[3].Free(rec.ID); err != nil {
		t.Fatal(err)
	}
	last = time.Time{}
	for i, w := range watchers {
		last = latest(last, w.waitFor(t, changeWait, "the free", freedAll(rec.ID)))
		if recs := services(t, nodes[i], "ten"); len(recs) != 0 {
			t.Fatalf("%s still sees %+v after the free", nodes[i].ID(), recs)
		}
	}
	t.Logf("free → gone from all ten: %v", last.Sub(t0))
	for _, w := range watchers {
		if n := w.count(registry.Registered, rec.ID); n != 1 {
			t.Errorf("%s: %d register events, want 1", w.node, n)
		}
		if n := w.count(registry.Freed, rec.ID); n != 1 {
			t.Errorf("%s: %d free events, want 1", w.node, n)
		}
	}
}

// A ring of three built with Connect only: every node sees every record,
// and no event is delivered twice although every change reaches each
// node by two paths.
func TestRingOfThreeNoDuplicates(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	nodes := []*mesh.Node{
		join(t, cluster, connectConfig("ring-a")),
		join(t, cluster, connectConfig("ring-b")),
		join(t, cluster, connectConfig("ring-c")),
	}
	watchers := make([]*recorder, len(nodes))
	for i, n := range nodes {
		watchers[i] = watch(t, n, "ring")
	}
	// Records registered before the links exist travel by the sync;
	// those registered after, by pushes and relays.
	var ids []string
	for i, n := range nodes {
		ids = append(ids, register(t, n, mesh.Service{Role: "ring@1.0.0", Port: 100 + i}).ID)
	}
	for i, n := range nodes {
		connect(t, n, addrOf(t, nodes[(i+1)%3]))
	}
	eventually(t, meshWait, "the ring", func() bool { return fullMesh(nodes...) })
	for i, n := range nodes {
		ids = append(ids, register(t, n, mesh.Service{Role: "ring@2.0.0", Port: 200 + i}).ID)
	}
	for _, n := range nodes {
		eventually(t, changeWait, n.ID()+" to see all 6 records", func() bool { return len(services(t, n, "ring")) == 6 })
	}
	// Update then free each node's own records.
	for i, n := range nodes {
		for _, id := range []string{ids[i], ids[3+i]} {
			if _, err := n.Update(id, map[string]string{"v": "2"}); err != nil {
				t.Fatalf("%s update %s: %v", n.ID(), id, err)
			}
			if err := n.Free(id); err != nil {
				t.Fatalf("%s free %s: %v", n.ID(), id, err)
			}
		}
	}
	for _, w := range watchers {
		w.waitFor(t, changeWait, "every free", freedAll(ids...))
	}
	// A barrier: a marker from every node reaches every node after what
	// each sent before it, relays included.
	var markers []string
	for i, n := range nodes {
		markers = append(markers, register(t, n, mesh.Service{Role: "ring@9.0.0", Port: 900 + i}).ID)
	}
	for _, w := range watchers {
		w.waitFor(t, changeWait, "the markers", func(evs []mesh.ServiceEvent) bool {
			n := 0
			for _, ev := range evs {
				if ev.Kind == registry.Registered && slices.Contains(markers, ev.Record.ID) {
					n++
				}
			}
			return n >= len(markers)
		})
	}
	owner := map[string]string{} // record id → owner id
	for i, id := range ids {
		owner[id] = nodes[i%3].ID()
	}
	for _, w := range watchers {
		evs := w.events()
		for _, id := range ids {
			var seq []string
			for _, ev := range evs {
				if ev.Record.ID == id {
					seq = append(seq, ev.Kind.String())
				}
			}
			// Each event once, in order. An update may be folded into the
			// free when the link that carried it was a duplicate being
			// retired: the replacement link's sync sends the net change.
			switch {
			case slices.Equal(seq, []string{"registered", "updated", "freed"}):
			case slices.Equal(seq, []string{"registered", "freed"}) && w.node != owner[id]:
				t.Logf("%s: the update of %s was folded into its free", w.node, id)
			default:
				t.Errorf("%s: events of %s = %v, want [registered updated freed]", w.node, id, seq)
			}
		}
		for _, id := range markers {
			if n := w.count(registry.Registered, id); n != 1 {
				t.Errorf("%s: %d register events of marker %s, want 1", w.node, n, id)
			}
		}
	}
}

// A node killed with kill -9 has its records freed on the others as soon
// as its links reset, and they stay freed; the node restarted with the
// same id registers anew, and only its new records are seen.
func TestKilledNodeRecordsVanish(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	nodeBinary(t) // build first: a build on a busy machine could delay the nodes' keepalives
	a := join(t, cluster, nodeConfig("kill-a"))
	b := join(t, cluster, nodeConfig("kill-b"))
	cfg := harnessConfig(cluster, "kill-victim")
	cfg.Roles, cfg.Meta = []string{"doomed@1.0.0", "doomed@2.0.0"}, []string{"pid=child"}
	victim := startNode(t, cfg)
	if victim.ID != "kill-victim" || len(victim.Records) != 2 {
		t.Fatalf("child said id %q records %v", victim.ID, victim.Records)
	}
	victimRecords := recordIDs(victim)
	watchers := []*recorder{watch(t, a, "doomed"), watch(t, b, "doomed")}
	for _, w := range watchers {
		w.waitFor(t, meshWait, "the child's records", func(evs []mesh.ServiceEvent) bool {
			n := 0
			for _, ev := range evs {
				if ev.Kind == registry.Registered && ev.Record.Owner == victim.ID && ev.Record.Meta["pid"] == "child" {
					n++
				}
			}
			return n == 2
		})
	}
	for _, n := range []*mesh.Node{a, b} {
		logOf(n).waitFor(t, meshWait, n.ID()+" synced with the child", func(ev mesh.Event) bool {
			return ev.Kind == mesh.PeerSynced && ev.Peer == victim.ID
		})
	}
	converge(t, a, b)
	t0 := time.Now()
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for _, w := range watchers {
		last = latest(last, w.waitFor(t, changeWait, "the records freed", freedAll(victimRecords...)))
	}
	d := last.Sub(t0)
	t.Logf("kill -9 → records freed on both peers: %v", d)
	if d > 3*time.Second {
		t.Errorf("records freed %v after kill -9, want < 3s", d)
	}
	<-victim.Done()
	// What a and b relay to each other afterwards brings nothing back.
	settle(t, a, b)
	for i, n := range []*mesh.Node{a, b} {
		if recs := services(t, n, "doomed"); len(recs) != 0 {
			t.Errorf("%s still sees %+v", n.ID(), recs)
		}
		for _, id := range victimRecords {
			if r, f := watchers[i].count(registry.Registered, id), watchers[i].count(registry.Freed, id); r != 1 || f != 1 {
				t.Errorf("%s: record %s registered %d times, freed %d times; want once each; events: %s", n.ID(), id, r, f, watchers[i].describe())
			}
		}
	}

	// Restarted with the same id: its new records, never the old ones.
	again := recordIDs(startNode(t, cfg))
	for _, n := range []*mesh.Node{a, b} {
		eventually(t, meshWait, n.ID()+" to see the restarted node's records", func() bool {
			recs := services(t, n, "doomed")
			return len(recs) == 2 && slices.ContainsFunc(recs, func(r mesh.Record) bool { return r.ID == again[0] }) &&
				slices.ContainsFunc(recs, func(r mesh.Record) bool { return r.ID == again[1] })
		})
	}
}

// settle registers a marker on every node, waits until every node sees
// them all and frees them: whatever the nodes sent each other before has
// been applied everywhere by then.
func settle(t *testing.T, nodes ...*mesh.Node) {
	t.Helper()
	var ids []string
	for i, n := range nodes {
		ids = append(ids, register(t, n, mesh.Service{Role: "settle@1.0.0", Port: 60000 + i}).ID)
	}
	for _, n := range nodes {
		eventually(t, changeWait, n.ID()+" to see every marker", func() bool {
			recs := services(t, n, "settle")
			return len(recs) == len(ids) && !slices.ContainsFunc(recs, func(r mesh.Record) bool { return !slices.Contains(ids, r.ID) })
		})
	}
	for i, n := range nodes {
		if err := n.Free(ids[i]); err != nil {
			t.Fatalf("%s free marker: %v", n.ID(), err)
		}
	}
	for _, n := range nodes {
		eventually(t, changeWait, n.ID()+" to see the markers freed", func() bool { return len(services(t, n, "settle")) == 0 })
	}
}

// A node that closes frees its records everywhere at once.
func TestClosedNodeRecordsVanish(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	a := join(t, cluster, nodeConfig("close-a"))
	b := join(t, cluster, nodeConfig("close-b"))
	c := join(t, cluster, nodeConfig("close-c"))
	eventually(t, meshWait, "a full mesh of 3 by mDNS", func() bool { return fullMesh(a, b, c) })
	converge(t, a, b, c)
	r1 := register(t, c, mesh.Service{Role: "leaving@1.0.0", Port: 1})
	r2 := register(t, c, mesh.Service{Role: "leaving@1.1.0", Port: 2})
	watchers := []*recorder{watch(t, a, "leaving"), watch(t, b, "leaving")}
	for _, w := range watchers {
		w.waitFor(t, changeWait, "c's records", func(evs []mesh.ServiceEvent) bool { return len(evs) == 2 })
	}
	t0 := time.Now()
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	closed := time.Since(t0)
	var last time.Time
	for _, w := range watchers {
		last = latest(last, w.waitFor(t, changeWait, "c's records freed", freedAll(r1.ID, r2.ID)))
	}
	d := last.Sub(t0)
	t.Logf("shutdown → records freed on both peers: %v (Shutdown returned after %v)", d, closed)
	if d > time.Second {
		t.Errorf("records freed %v after close, want < 1s (goal 100 ms)", d)
	}
	settle(t, a, b)
	for i, n := range []*mesh.Node{a, b} {
		if recs := services(t, n, "leaving"); len(recs) != 0 {
			t.Errorf("%s still sees %+v", n.ID(), recs)
		}
		for _, id := range []string{r1.ID, r2.ID} {
			if r, f := watchers[i].count(registry.Registered, id), watchers[i].count(registry.Freed, id); r != 1 || f != 1 {
				t.Errorf("%s: record %s registered %d times, freed %d times; want once each; events: %s", n.ID(), id, r, f, watchers[i].describe())
			}
		}
	}
}

// A node cannot free (or update) another node's record: it is refused and
// nothing changes anywhere.
func TestFreeByOtherNodeRefused(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	a := join(t, cluster, nodeConfig("owner-a"))
	b := join(t, cluster, nodeConfig("thief-b"))
	c := join(t, cluster, nodeConfig("witness-c"))
	nodes := []*mesh.Node{a, b, c}
	eventually(t, meshWait, "a full mesh of 3 by mDNS", func() bool { return fullMesh(nodes...) })
	converge(t, nodes...)
	rec := register(t, a, mesh.Service{Role: "owned@1.0.0", Port: 4242, Meta: map[string]string{"k": "v"}})
	for _, n := range nodes {
		eventually(t, changeWait, n.ID()+" to see the record", func() bool { return has(t, n, "owned", rec.ID) })
	}
	var watchers []*recorder
	for _, n := range nodes {
		watchers = append(watchers, watch(t, n, "owned"))
	}

	if err := b.Free(rec.ID); !errors.Is(err, registry.ErrNotOwner) {
		t.Fatalf("b.Free(a's record) = %v, want ErrNotOwner", err)
	}
	if _, err := c.Update(rec.ID, map[string]string{"k": "stolen"}); !errors.Is(err, registry.ErrNotOwner) {
		t.Fatalf("c.Update(a's record) = %v, want ErrNotOwner", err)
	}
	if err := b.Free("no-such-record"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("b.Free(unknown) = %v, want ErrNotFound", err)
	}

	// A barrier: markers from b and c reach every node after anything
	// the refused calls might have sent.
	mb := register(t, b, mesh.Service{Role: "owned@9.0.0", Port: 1})
	mc := register(t, c, mesh.Service{Role: "owned@9.0.1", Port: 1})
	for _, w := range watchers {
		w.waitFor(t, changeWait, "the markers", func(evs []mesh.ServiceEvent) bool {
			return slices.ContainsFunc(evs, func(ev mesh.ServiceEvent) bool { return ev.Record.ID == mb.ID }) &&
				slices.ContainsFunc(evs, func(ev mesh.ServiceEvent) bool { return ev.Record.ID == mc.ID })
		})
	}
	for i, n := range nodes {
		recs := services(t, n, "owned@1.0.0")
		if len(recs) != 1 || recs[0].ID != rec.ID || recs[0].Rev != rec.Rev || recs[0].Meta["k"] != "v" || recs[0].Owner != a.ID() {
			t.Errorf("%s sees %+v, want unchanged %+v", n.ID(), recs, rec)
		}
		for _, ev := range watchers[i].events() {
			if ev.Record.ID == rec.ID && ev.Kind != registry.Registered {
				t.Errorf("%s: event %v of the record after a refused free", n.ID(), ev.Kind)
			}
		}
	}
}
