package discovery

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

func TestMain(m *testing.M) { netns.Main(m) }

// recorder collects the events of one discoverer. Its report never blocks.
type recorder struct {
	mu     sync.Mutex
	events []Event
	at     []time.Time
	notify chan struct{} // closed and replaced on every event
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{})} }

func (r *recorder) report(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	r.at = append(r.at, time.Now())
	close(r.notify)
	r.notify = make(chan struct{})
}

// snapshot returns the events so far.
func (r *recorder) snapshot() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor waits until cond holds for the events so far, or fails t after
// timeout. It returns when cond first held.
func (r *recorder) waitFor(t testing.TB, timeout time.Duration, what string, cond func([]Event) bool) time.Time {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for i := range r.events {
			if cond(r.events[:i+1]) {
				at := r.at[i]
				r.mu.Unlock()
				return at
			}
		}
		ch := r.notify
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("after %v, still waiting for %s; events: %v", timeout, what, r.snapshot())
			return time.Time{}
		}
	}
}

// peers replays events into the peers known at the end of them.
func peers(events []Event) map[string]Peer {
	out := map[string]Peer{}
	for _, ev := range events {
		switch ev.Kind {
		case Found:
			out[ev.Peer.ID] = ev.Peer
		case Lost:
			delete(out, ev.Peer.ID)
		}
	}
	return out
}

func knows(ids ...string) func([]Event) bool {
	return func(events []Event) bool {
		p := peers(events)
		for _, id := range ids {
			if _, ok := p[id]; !ok {
				return false
			}
		}
		return true
	}
}

func lost(id string) func([]Event) bool {
	return func(events []Event) bool {
		ev := events[len(events)-1]
		return ev.Kind == Lost && ev.Peer.ID == id
	}
}

// node is one running discoverer.
type node struct {
	self    Self
	rec     *recorder
	started time.Time
	cancel  context.CancelFunc
	done    chan error
}

// startNode runs d for self until the test ends (or stop is called). A
// zero self.Port gets an arbitrary one.
func startNode(t testing.TB, d Discoverer, self Self) *node {
	t.Helper()
	if self.Port == 0 && len(self.Addrs) == 0 {
		self.Port = 40000 + int(time.Now().UnixNano()%20000)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{self: self, rec: newRecorder(), cancel: cancel, done: make(chan error, 1), started: time.Now()}
	go func() { n.done <- d.Run(ctx, self, n.rec.report) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop cancels the node and waits for Run to return nil.
func (n *node) stop(t testing.TB) {
	t.Helper()
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok && err != nil {
			t.Errorf("Run(%q) = %v, want nil", n.self.ID, err)
		}
		if ok {
			close(n.done)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Run(%q) did not return 5 s after cancel", n.self.ID)
	}
}
