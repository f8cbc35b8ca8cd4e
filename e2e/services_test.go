package e2e_test

// End-to-end tests of port assignment, sync to a late joiner and refused
// links. See mesh_test.go.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/transport"
)

// A port-assignment listener serves a node that found it by query; closing
// it frees its record everywhere.
func TestListenServiceDialedByQuery(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	a := join(t, cluster, nodeConfig("port-a"))
	b := join(t, cluster, nodeConfig("port-b"))
	eventually(t, meshWait, "a and b linked by mDNS", func() bool { return fullMesh(a, b) })

	ctx, cancel := context.WithTimeout(context.Background(), changeWait)
	defer cancel()
	ln, err := a.ListenService(ctx, mesh.Service{Role: "echo@1.4.0", Meta: map[string]string{"proto": "line"}}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rec := ln.Record()
	if rec.Port != ln.Addr().(*net.TCPAddr).Port || rec.Host != "127.0.0.1" {
		t.Fatalf("listener record %+v, listening on %v", rec, ln.Addr())
	}
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err == nil {
			_, err = io.WriteString(conn, "echo "+line)
		}
		served <- err
	}()

	conn, err := b.DialService(ctx, "echo@^1.2")
	if err != nil {
		t.Fatalf("b.DialService: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(changeWait))
	if _, err := io.WriteString(conn, "hello\n"); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || reply != "echo hello\n" {
		t.Fatalf("reply %q, %v; want \"echo hello\\n\"", reply, err)
	}
	if err := <-served; err != nil {
		t.Fatalf("listener side: %v", err)
	}

	watchers := []*recorder{watch(t, a, "echo"), watch(t, b, "echo")}
	if err := ln.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	for i, w := range watchers {
		w.waitFor(t, changeWait, "the listener's record freed", freedAll(rec.ID))
		if recs := services(t, []*mesh.Node{a, b}[i], "echo"); len(recs) != 0 {
			t.Errorf("%s still sees %+v", w.node, recs)
		}
	}
	if c, err := net.DialTimeout("tcp", rec.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("listener still accepts on %s after Close", rec.Addr())
	}
}

// 1,000 records on one node reach, intact, a node that joins later.
func TestSyncThousandRecordsToLateJoiner(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	a := join(t, cluster, nodeConfig("sync-a"))
	const total = 1000
	for i := range total {
		register(t, a, mesh.Service{
			Role: fmt.Sprintf("bulk%d@%d.%d.0", i%7, i%3, i),
			Port: 20000 + i,
			Meta: map[string]string{"i": fmt.Sprint(i), "pad": strings.Repeat("x", i%50)},
		})
	}
	own := allRecords(t, a)
	if len(own) != total {
		t.Fatalf("a holds %d records, want %d", len(own), total)
	}

	b, err := mesh.New(cluster, nodeConfig("sync-b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ectx, ecancel := context.WithCancel(context.Background())
	defer ecancel()
	events := b.Events(ectx)
	t0 := time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := b.Start(sctx); err != nil {
		t.Fatal(err)
	}
	services, err := b.Watch(ectx, "")
	if err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(meshWait)
	defer timer.Stop()
	var linkedAt time.Duration
	registered := 0
	for synced := false; !synced || registered < total; {
		select {
		case ev := <-events:
			switch {
			case ev.Kind == mesh.PeerUp && ev.Peer == a.ID():
				linkedAt = time.Since(t0)
			case ev.Kind == mesh.PeerSynced && ev.Peer == a.ID():
				synced = true
			}
		case ev := <-services:
			if ev.Kind != registry.Registered {
				t.Fatalf("b watched %v of %s during the sync", ev.Kind, ev.Record.Role())
			}
			registered++
		case <-timer.C:
			t.Fatalf("b not synced with a after %v (synced: %v, %d records registered)", meshWait, synced, registered)
		}
	}
	t.Logf("late joiner: start → linked %v, → synced with %d records %v (sync %v)", linkedAt, total, time.Since(t0), time.Since(t0)-linkedAt)
	got := allRecords(t, b)
	if len(got) != total || registered != total {
		t.Fatalf("b holds %d records after sync (%d register events), want %d", len(got), registered, total)
	}
	for id, want := range own {
		r, ok := got[id]
		if !ok {
			t.Fatalf("record %s (%s) missing on b", id, want.Role())
		}
		if r.Role() != want.Role() || r.Owner != want.Owner || r.Host != want.Host || r.Port != want.Port ||
			r.Rev != want.Rev || !maps.Equal(r.Meta, want.Meta) {
			t.Fatalf("record %s on b = %+v, want %+v", id, r, want)
		}
	}
}

// allRecords returns every record of the bulk test's roles n sees, by id.
func allRecords(t *testing.T, n *mesh.Node) map[string]mesh.Record {
	t.Helper()
	out := map[string]mesh.Record{}
	for i := range 7 {
		for _, r := range services(t, n, fmt.Sprintf("bulk%d", i)) {
			out[r.ID] = r
		}
	}
	return out
}

// A node of another cluster in the same namespace never links and sees no
// records; a node never links to itself (nor to its own announcement).
func TestWrongClusterAndSelfNeverLink(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cluster := clusterName(t)
	other := clusterName(t)
	a, aLog := startLogged(t, cluster, nodeConfig("wc-a"))
	stranger, strangerLog := startLogged(t, other, nodeConfig("wc-z"))
	b, bLog := startLogged(t, cluster, nodeConfig("wc-b")) // started after the stranger announced
	register(t, a, mesh.Service{Role: "mine@1.0.0", Port: 1})
	register(t, stranger, mesh.Service{Role: "mine@2.0.0", Port: 2})
	eventually(t, meshWait, "a and b linked by mDNS", func() bool { return fullMesh(a, b) })
	eventually(t, changeWait, "b to see a's record", func() bool { return len(services(t, b, "mine")) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := stranger.Connect(ctx, addrOf(t, a)); !errors.Is(err, transport.ErrWrongCluster) {
		t.Errorf("stranger.Connect(a) = %v, want ErrWrongCluster", err)
	}
	if _, err := a.Connect(ctx, addrOf(t, stranger)); !errors.Is(err, transport.ErrWrongCluster) {
		t.Errorf("a.Connect(stranger) = %v, want ErrWrongCluster", err)
	}
	if _, err := a.Connect(ctx, addrOf(t, a)); !errors.Is(err, transport.ErrSelfLink) {
		t.Errorf("a.Connect(a) = %v, want ErrSelfLink", err)
	}
	// A change after the refusals: the refused links left nothing behind.
	late := register(t, a, mesh.Service{Role: "mine@1.1.0", Port: 3})
	eventually(t, changeWait, "b to see a's second record", func() bool { return has(t, b, "mine", late.ID) })

	for _, n := range []*mesh.Node{a, b} {
		if ps := peerIDs(n); len(ps) != 1 || slices.Contains(ps, n.ID()) || slices.Contains(ps, stranger.ID()) {
			t.Errorf("%s peers = %v, want only the other member", n.ID(), ps)
		}
		for _, r := range services(t, n, "mine") {
			if r.Owner == stranger.ID() {
				t.Errorf("%s sees the stranger's record %+v", n.ID(), r)
			}
		}
	}
	if ps := peerIDs(stranger); len(ps) != 0 {
		t.Errorf("stranger peers = %v, want none", ps)
	}
	if recs := services(t, stranger, "mine"); len(recs) != 1 || recs[0].Owner != stranger.ID() {
		t.Errorf("stranger sees %+v, want its own record only", recs)
	}
	// Never, not even for a moment: every peer-up each node saw.
	for _, c := range []struct {
		n    *mesh.Node
		log  *eventLog
		want []string
	}{{a, aLog, []string{b.ID()}}, {b, bLog, []string{a.ID()}}, {stranger, strangerLog, nil}} {
		if got := c.log.peerUps(); !slices.Equal(got, c.want) {
			t.Errorf("%s: peer-up events from %v, want %v", c.n.ID(), got, c.want)
		}
	}
}
