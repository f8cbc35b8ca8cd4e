package registry

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// quiet is a logger for tests; set REGISTRY_TEST_LOG=1 to see the logs.
var quiet = slog.New(slog.DiscardHandler)

// node is a Registry under test with a log of every event it emitted.
type node struct {
	*Registry
	mu     sync.Mutex
	events []Event
	wake   chan struct{}
}

// locked returns what f returns, with n's registry locked.
func locked[T any](n *node, f func(r *Registry) T) T {
	n.Registry.mu.Lock()
	defer n.Registry.mu.Unlock()
	return f(n.Registry)
}

// newNode starts a registry with fast timers, closed at the end of the test.
func newNode(t testing.TB, id string, opts ...func(*Config)) *node {
	t.Helper()
	n := &node{wake: make(chan struct{}, 1)}
	cfg := LocalConfig(id)
	cfg.Logger = quiet
	cfg.OnEvent = func(ev Event) {
		n.mu.Lock()
		n.events = append(n.events, ev)
		n.mu.Unlock()
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
	for _, o := range opts {
		o(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%q): %v", id, err)
	}
	n.Registry = r
	t.Cleanup(func() { r.Close() })
	return n
}

// eventsOf returns the events of kind seen so far.
func (n *node) eventsOf(kind EventKind) []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Event
	for _, ev := range n.events {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// count returns how many events of kind concern record id.
func (n *node) count(kind EventKind, id string) int {
	c := 0
	for _, ev := range n.eventsOf(kind) {
		if ev.Record.ID == id {
			c++
		}
	}
	return c
}

// testLink is a pair of Serve calls over net.Pipe.
type testLink struct {
	a, b       *node
	ca, cb     net.Conn
	errA, errB chan error
	once       sync.Once
	sent       atomic.Int64 // bytes written, both ways
}

// countingConn counts the bytes written to it.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// connect links a and b in memory; the link is cut at the end of the test.
func connect(t testing.TB, a, b *node) *testLink {
	t.Helper()
	pa, pb := net.Pipe()
	l := &testLink{a: a, b: b, errA: make(chan error, 1), errB: make(chan error, 1)}
	ca, cb := countingConn{pa, &l.sent}, countingConn{pb, &l.sent}
	l.ca, l.cb = ca, cb
	go func() { l.errA <- a.Serve(context.Background(), b.ID(), ca) }()
	go func() { l.errB <- b.Serve(context.Background(), a.ID(), cb) }()
	t.Cleanup(l.cut)
	return l
}

// cut closes both ends and waits for both Serve calls to return.
func (l *testLink) cut() {
	l.once.Do(func() {
		l.ca.Close()
		l.cb.Close()
		<-l.errA
		<-l.errB
	})
}

// connectSynced links a and b and waits until each has applied the other's
// sync.
func connectSynced(t testing.TB, a, b *node) *testLink {
	t.Helper()
	na, nb := len(a.syncedWith(b.ID())), len(b.syncedWith(a.ID()))
	l := connect(t, a, b)
	waitFor(t, "sync "+a.ID()+"-"+b.ID(), func() bool {
		return len(a.syncedWith(b.ID())) > na && len(b.syncedWith(a.ID())) > nb
	})
	return l
}

func (n *node) syncedWith(peer string) []Event {
	var out []Event
	for _, ev := range n.eventsOf(Synced) {
		if ev.Peer == peer {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// ids returns the ids of the records n sees for query.
func (n *node) ids(t testing.TB, query string) []string {
	t.Helper()
	recs, err := n.Services(query)
	if err != nil {
		t.Fatalf("Services(%q): %v", query, err)
	}
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	slices.Sort(out)
	return out
}

// has reports whether n sees the record id.
func (n *node) has(t testing.TB, id string) bool {
	return slices.Contains(n.ids(t, ""), id)
}

// register registers a service or fails the test.
func (n *node) register(t testing.TB, role string, port int, meta map[string]string) Record {
	t.Helper()
	rec, err := n.Register(Service{Role: role, Host: "127.0.0.1", Port: port, Meta: meta})
	if err != nil {
		t.Fatalf("%s: Register(%q): %v", n.ID(), role, err)
	}
	return rec
}

// peersOf returns the adjacency n holds for owner.
func (n *node) peersOf(owner string) []string {
	n.Registry.mu.Lock()
	defer n.Registry.mu.Unlock()
	o := n.Registry.owners[owner]
	if o == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(o.peers))
}

// settled waits until every node of ns knows every node's adjacency as
// that node has it, and has no state waiting to be relayed: the registry
// has converged, and a fault injected now is the only change.
func settled(t testing.TB, ns ...*node) {
	t.Helper()
	for _, n := range ns {
		waitFor(t, n.ID()+" knows every adjacency", func() bool {
			relaying := locked(n, func(r *Registry) bool { return len(r.relayDue) > 0 })
			if relaying {
				return false
			}
			for _, m := range ns {
				if have := n.peersOf(m.ID()); len(have) == 0 || !slices.Equal(have, m.peersOf(m.ID())) {
					return false
				}
			}
			return true
		})
	}
}

// drain reads and discards everything from c until it fails.
func drain(c io.Reader) {
	io.Copy(io.Discard, c)
}

// waitEvent waits until n has emitted at least one event of kind for the
// record id. Events are delivered in order, so every event n emitted
// before it has been delivered too.
func (n *node) waitEvent(t testing.TB, kind EventKind, id string) {
	t.Helper()
	waitFor(t, n.ID()+" event "+kind.String()+" "+id, func() bool { return n.count(kind, id) > 0 })
}

// flush registers a marker on owner and waits until every node has emitted
// its event: what was in flight before it has arrived.
func flush(t testing.TB, owner *node, all ...*node) {
	t.Helper()
	m := owner.register(t, "marker@1.0.0", 0, nil)
	for _, n := range all {
		n.waitEvent(t, Registered, m.ID)
	}
}
