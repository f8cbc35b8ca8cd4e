package mesh

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/pki"
	"github.com/tallship-go/tallship/transport"
)

// The rule for a second live run of an id (docs/protocol.md, "Twins"),
// path by path. Run with -count=50: these paths raced before.

// conflictWithin waits up to d for an IDConflict event on ch and returns
// it.
func conflictWithin(t *testing.T, ch <-chan Event, d time.Duration) (Event, bool) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return Event{}, false
			}
			if e.Kind == IDConflict {
				return e, true
			}
		case <-timeout:
			return Event{}, false
		}
	}
}

// recorder keeps a node's events, read as they come.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

// record starts keeping n's events until the test ends.
func record(t *testing.T, n *Node) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := n.Events(ctx)
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range ch {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// of returns the events of kind kept so far.
func (r *recorder) of(kind EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// holds reports whether n's peer id is the run that advertises want's
// addresses.
func holds(n *Node, id string, want *Node) bool {
	for _, p := range n.Peers() {
		if p.ID == id {
			return slices.Equal(p.Addrs, want.Addrs())
		}
	}
	return false
}

// A node linked to one run of an id refuses another live run of it,
// whichever dials, whichever started first, even while the first run's
// link is still being taken in: the second run's Connect (or the
// holder's) fails with ErrDuplicateID, the second run gets IDConflict
// within 1 s, and the holder keeps the first run.
func TestTwinRefusedByHolder(t *testing.T) {
	tests := []struct {
		name        string
		twinEarlier bool // the twin started before the first run
		twinDials   bool // the twin dials the holder (else the holder dials it)
		settle      bool // wait until the first run's link is in on both ends
	}{
		{"holder dials", false, false, true},
		{"holder dials an earlier twin", true, false, true},
		{"twin dials", false, true, true},
		{"earlier twin dials", true, true, true},
		{"holder dials at once", false, false, false},
		{"twin dials at once", false, true, false},
		{"earlier twin dials at once", true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := start(t, "c", testConfig("a"))
			var first, twin *Node
			if tt.twinEarlier {
				twin = start(t, "c", testConfig("b"))
				first = start(t, "c", testConfig("b"))
			} else {
				first = start(t, "c", testConfig("b"))
				twin = start(t, "c", testConfig("b"))
			}
			ctx := context.Background()
			if tt.settle {
				linkPair(t, first, a)
			} else if _, err := first.Connect(ctx, addr(t, a)); err != nil {
				t.Fatal(err)
			}
			aEvents := record(t, a)
			twinEvents := twin.Events(ctx)
			var err error
			if tt.twinDials {
				_, err = twin.Connect(ctx, addr(t, a))
			} else {
				_, err = a.Connect(ctx, addr(t, twin))
			}
			if !errors.Is(err, transport.ErrDuplicateID) {
				t.Errorf("Connect = %v, want ErrDuplicateID%s", err, meshState(a, first, twin))
			}
			e, ok := conflictWithin(t, twinEvents, time.Second)
			if !ok || !errors.Is(e.Err, ErrIDConflict) || !errors.Is(e.Err, transport.ErrDuplicateID) {
				t.Fatalf("twin: IDConflict %v (%v), want one wrapping ErrIDConflict and ErrDuplicateID within 1 s", ok, e.Err)
			}
			waitFor(t, "a to hold the first run", 5*time.Second, func() bool { return holds(a, "b", first) })
			if err := a.Send(ctx, "b", []byte("first")); err != nil {
				t.Fatal(err)
			}
			if m := receive(t, first); string(m.Data) != "first" {
				t.Fatalf("first run got %q", m.Data)
			}
			if len(twin.Peers()) != 0 {
				t.Errorf("twin linked to %v", twin.Peers())
			}
			// a never let go of the first run.
			if downs := aEvents.of(PeerDown); len(downs) > 0 {
				t.Fatalf("a: %+v", downs)
			}
		})
	}
}

// Two runs of one id that meet (no other node) refuse the link on both
// ends with a TwinError; the later run gets IDConflict, the earlier does
// not. Alike with a secret and with TLS (where the id is judged once the
// certificates have proven it).
func TestTwinsMeet(t *testing.T) {
	ca := pki.New(t)
	modes := map[string]func(id string) Config{
		"plain":  testConfig,
		"secret": func(id string) Config { return secretConfig(id, "s3cret") },
		"tls":    func(id string) Config { c := testConfig(id); c.TLS = ca.Config(t, id); return c },
	}
	for mode, cfg := range modes {
		for _, laterDials := range []bool{false, true} {
			name := mode + map[bool]string{false: ", earlier dials", true: ", later dials"}[laterDials]
			t.Run(name, func(t *testing.T) { testTwinsMeet(t, cfg, laterDials) })
		}
	}
}

func testTwinsMeet(t *testing.T, cfg func(id string) Config, laterDials bool) {
	earlier := start(t, "c", cfg("x"))
	later := start(t, "c", cfg("x"))
	ctx := context.Background()
	earlyEvents, lateEvents := earlier.Events(ctx), later.Events(ctx)
	from, to := earlier, later
	if laterDials {
		from, to = later, earlier
	}
	_, err := from.Connect(ctx, addr(t, to))
	var twin *transport.TwinError
	if !errors.As(err, &twin) || !errors.Is(err, transport.ErrDuplicateID) || twin.Yield != laterDials {
		t.Fatalf("Connect = %v, want a TwinError (Yield %v) wrapping ErrDuplicateID", err, laterDials)
	}
	e, ok := conflictWithin(t, lateEvents, time.Second)
	if !ok || !errors.Is(e.Err, ErrIDConflict) || !errors.Is(e.Err, transport.ErrDuplicateID) {
		t.Fatalf("later run: IDConflict %v (%v), want one within 1 s", ok, e.Err)
	}
	if len(later.Peers()) != 0 || len(earlier.Peers()) != 0 {
		t.Errorf("the runs linked: %v, %v", earlier.Peers(), later.Peers())
	}
	if laterDials {
		return // the earlier run's refusal ends after the dialer's
	}
	// The earlier run dialed: it took its refusal before Connect
	// returned. Its next event is a PeerUp, no IDConflict.
	linkPair(t, start(t, "c", cfg("o")), earlier)
	for e := range earlyEvents {
		if e.Kind == IDConflict {
			t.Fatalf("the earlier run got IDConflict: %v", e.Err)
		}
		if e.Kind == PeerUp {
			break
		}
	}
}

// Two runs of one id dial one node at the same time: exactly one links,
// the other's Connect fails with ErrDuplicateID and it gets IDConflict.
func TestTwinsDialAtOnce(t *testing.T) {
	a := start(t, "c", testConfig("a"))
	runs := []*Node{start(t, "c", testConfig("b")), start(t, "c", testConfig("b"))}
	ctx := context.Background()
	events := []<-chan Event{runs[0].Events(ctx), runs[1].Events(ctx)}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Go(func() { _, errs[i] = r.Connect(ctx, addr(t, a)) })
	}
	wg.Wait()
	won := slices.IndexFunc(errs, func(err error) bool { return err == nil })
	if won < 0 || !errors.Is(errs[1-won], transport.ErrDuplicateID) {
		t.Fatalf("Connects = %v, want one nil and one ErrDuplicateID", errs)
	}
	if _, ok := conflictWithin(t, events[1-won], time.Second); !ok {
		t.Fatal("the refused run got no IDConflict within 1 s")
	}
	waitFor(t, "a to hold the run that linked", 5*time.Second, func() bool { return holds(a, "b", runs[won]) })
}

// Two runs of one id, each linked to another node, meet through peer
// exchange when those two nodes link: each is refused by the node that
// holds the other, so both get IDConflict, and neither holder drops its
// run.
func TestTwinsMeetThroughPeerExchange(t *testing.T) {
	a, c := start(t, "c", testConfig("a")), start(t, "c", testConfig("c"))
	b1, b2 := start(t, "c", testConfig("b")), start(t, "c", testConfig("b"))
	linkPair(t, b1, a)
	linkPair(t, b2, c)
	ctx := context.Background()
	ev1, ev2 := b1.Events(ctx), b2.Events(ctx)
	if _, err := a.Connect(ctx, addr(t, c)); err != nil {
		t.Fatal(err)
	}
	for i, ev := range []<-chan Event{ev1, ev2} {
		if _, ok := conflictWithin(t, ev, 2*time.Second); !ok {
			t.Fatalf("run %d of b got no IDConflict%s", i+1, meshState(a, c, b1, b2))
		}
	}
	if !holds(a, "b", b1) || !holds(c, "b", b2) {
		t.Fatalf("a or c changed its run of b%s", meshState(a, c, b1, b2))
	}
}

// A later run of a linked peer's id whose earlier run no longer answers
// (its link stalled: a hung process, a pulled cable) is a restart: it
// links, with no IDConflict, and replaces the earlier run. The earlier
// run, should it come back, is the one refused.
func TestRestartWhileEarlierRunHangs(t *testing.T) {
	a := start(t, "c", testConfig("a"))
	old := start(t, "c", testConfig("b"))
	px := newProxy(t, addr(t, a))
	if _, err := old.Connect(context.Background(), px.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link", 5*time.Second, func() bool { return settled(a, old) })
	px.stall()
	again := start(t, "c", testConfig("b"))
	ctx := context.Background()
	againEvents, oldEvents := record(t, again), old.Events(ctx)
	if _, err := again.Connect(ctx, addr(t, a)); err != nil {
		t.Fatalf("the restart's Connect = %v, want nil", err)
	}
	waitFor(t, "a to hold the restart", 5*time.Second, func() bool { return holds(a, "b", again) })
	// The earlier run comes back: a has closed its link; when it links
	// again, a refuses it.
	px.resume()
	px.cut()
	if e, ok := conflictWithin(t, oldEvents, 5*time.Second); !ok || !errors.Is(e.Err, transport.ErrDuplicateID) {
		t.Fatalf("the earlier run: IDConflict %v (%v), want one", ok, e.Err)
	}
	if c := againEvents.of(IDConflict); len(c) > 0 {
		t.Fatalf("the restart got IDConflict: %+v", c)
	}
	if !holds(a, "b", again) {
		t.Fatalf("a let go of the restart%s", meshState(a, again))
	}
}

// A twin that arrives while the holder's link is being made again (the
// link broke, both runs live on) is still a twin: the node waits for the
// link to be back, pings the holder and refuses the twin; it does not
// take it for a restart.
func TestTwinWhileHolderRelinks(t *testing.T) {
	a := start(t, "c", testConfig("a"))
	first := start(t, "c", testConfig("b"))
	px := newProxy(t, addr(t, a))
	if _, err := first.Connect(context.Background(), px.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link", 5*time.Second, func() bool { return settled(a, first) })
	twin := start(t, "c", testConfig("b"))
	ctx := context.Background()
	twinEvents := twin.Events(ctx)
	px.cut()
	_, err := twin.Connect(ctx, addr(t, a))
	if !errors.Is(err, transport.ErrDuplicateID) && !errors.Is(err, transport.ErrRefused) {
		t.Fatalf("the twin's Connect = %v, want ErrDuplicateID (or ErrRefused while the link is made again)%s", err, meshState(a, first, twin))
	}
	if errors.Is(err, transport.ErrRefused) {
		// Refused without a verdict on the id: it tries again, as a kept
		// peer would, once the holder's link is back.
		waitFor(t, "a to hold the first run again", 5*time.Second, func() bool { return holds(a, "b", first) })
		if _, err = twin.Connect(ctx, addr(t, a)); !errors.Is(err, transport.ErrDuplicateID) {
			t.Fatalf("the twin's second Connect = %v, want ErrDuplicateID", err)
		}
	}
	if _, ok := conflictWithin(t, twinEvents, time.Second); !ok {
		t.Fatal("the twin got no IDConflict within 1 s")
	}
	waitFor(t, "a to hold the first run", 5*time.Second, func() bool { return holds(a, "b", first) })
}
