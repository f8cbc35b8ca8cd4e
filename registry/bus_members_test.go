package registry

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// remoteEvents returns n's RemoteUp and RemoteDown events of id, each as
// its kind, run and error.
func (n *node) remoteEvents(id string) []Event {
	var out []Event
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range n.events {
		if (ev.Kind == RemoteUp || ev.Kind == RemoteDown) && ev.Peer == id {
			out = append(out, ev)
		}
	}
	return out
}

// waitRemoteEvents waits until n has had want events of id and returns
// them.
func (n *node) waitRemoteEvents(t *testing.T, id string, want int) []Event {
	t.Helper()
	waitFor(t, "remote events of "+id, func() bool { return len(n.remoteEvents(id)) >= want })
	evs := n.remoteEvents(id)
	if len(evs) != want {
		t.Fatalf("%d remote events of %s: %+v", len(evs), id, evs)
	}
	return evs
}

// TestBusRemoteMembers: a node of another site is a member (RemoteUp,
// with its site and run) once its Beats come, and one no longer
// (RemoteDown, saying why) when it leaves, goes silent, restarts, or is
// reached over links; each once.
func TestBusRemoteMembers(t *testing.T) {
	h := newHub()
	a := siteNodes(t, h, "a", 1)
	b := siteNodes(t, h, "b", 1)
	evs := b[0].waitRemoteEvents(t, "a-0", 1)
	if ev := evs[0]; ev.Kind != RemoteUp || ev.Site != "a" || ev.Inc != a[0].self.inc || ev.Observer {
		t.Fatalf("first event %+v", ev)
	}

	// Silent: down; back: up again, the same run.
	h.mu.Lock()
	bus := h.buses["a-0"]
	h.mu.Unlock()
	bus.detach()
	evs = b[0].waitRemoteEvents(t, "a-0", 2)
	if ev := evs[1]; ev.Kind != RemoteDown || !errors.Is(ev.Err, errRemoteSilent) || ev.Inc != a[0].self.inc {
		t.Fatalf("after the cut: %+v", ev)
	}
	h.attach(t, a[0])
	if ev := b[0].waitRemoteEvents(t, "a-0", 3)[2]; ev.Kind != RemoteUp || ev.Inc != a[0].self.inc {
		t.Fatalf("back: %+v", ev)
	}

	// Leaves: down, no error.
	a[0].Close()
	if ev := b[0].waitRemoteEvents(t, "a-0", 4)[3]; ev.Kind != RemoteDown || ev.Err != nil {
		t.Fatalf("left: %+v", ev)
	}

	// Restarts (a new run while the old one is still a member): down,
	// then up with the new run.
	x := siteNodes(t, h, "x", 1)
	b[0].waitRemoteEvents(t, "x-0", 1)
	h.mu.Lock()
	bus = h.buses["x-0"]
	h.mu.Unlock()
	bus.detach()
	x2 := siteNodes(t, h, "x", 1)
	evs = b[0].waitRemoteEvents(t, "x-0", 3)
	if evs[1].Kind != RemoteDown || !errors.Is(evs[1].Err, errRemoteRestarted) || evs[1].Inc != x[0].self.inc ||
		evs[2].Kind != RemoteUp || evs[2].Inc != x2[0].self.inc {
		t.Fatalf("restart: %+v", evs)
	}

	// Linked by hand: a member here no longer, its records shown once.
	connectSynced(t, b[0], x2[0])
	if ev := b[0].waitRemoteEvents(t, "x-0", 4)[3]; ev.Kind != RemoteDown || !errors.Is(ev.Err, errRemoteLinked) {
		t.Fatalf("linked: %+v", ev)
	}
	// An observer is a member too, marked.
	o := siteNodes(t, h, "o", 1, func(c *Config) { c.Observer = true })
	if ev := b[0].waitRemoteEvents(t, o[0].ID(), 1)[0]; ev.Kind != RemoteUp || !ev.Observer {
		t.Fatalf("observer: %+v", ev)
	}
}

// TestBusOwnMessageReplayed: a message of this node's that a NATS user
// recorded and publishes again is no node of this node's id (no
// IDConflict, nothing said above Debug); another run of its id still is.
func TestBusOwnMessageReplayed(t *testing.T) {
	h := newHub()
	var mu sync.Mutex
	var recorded [][]byte
	h.drop = func(from, _ string, msg []byte) bool {
		if from == "a-0" {
			mu.Lock()
			recorded = append(recorded, bytes.Clone(msg))
			mu.Unlock()
		}
		return false
	}
	warns := make(chan string, 100)
	a := onBusNode(t, h, "a-0", "a", func(c *Config) { c.Logger = slog.New(warnLines(warns)) })
	b := siteNodes(t, h, "b", 1)
	a.register(t, "web@1.0.0", 80, nil)
	b[0].waitRemoteEvents(t, "a-0", 1)
	mu.Lock()
	replays := slices.Clone(recorded)
	mu.Unlock()
	if len(replays) == 0 {
		t.Fatal("nothing recorded")
	}
	for _, m := range replays {
		feed(a, m)
	}
	for len(warns) > 0 {
		if w := <-warns; strings.Contains(w, "this node's id") {
			t.Fatalf("a replay of its own message: %q", w)
		}
	}
	// A Beat of another run of a-0's from an hour ago, recorded and
	// published again: not a node of its id now either.
	old := newBusOwner(t, "c", "a-0", nil)
	feed(a, old.msg(old.beatAt(false, time.Now().Add(-time.Hour))))
	for len(warns) > 0 {
		if w := <-warns; strings.Contains(w, "this node's id") {
			t.Fatalf("an hour-old Beat of another run: %q", w)
		}
	}
	if n := len(a.eventsOf(IDConflict)); n != 0 {
		t.Fatalf("%d IDConflict events for replays", n)
	}
	twin := newBusOwner(t, "c", "a-0", nil)
	feed(a, twin.msg(twin.beatNow()))
	waitFor(t, "the IDConflict event", func() bool { return len(a.eventsOf(IDConflict)) == 1 })
}
