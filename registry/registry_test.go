package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Config{ID: "x"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Heartbeat != time.Second || c.Lifetime != 5*time.Second || c.MaxRecordsPerOwner != 4096 ||
		c.MaxMetadataBytes != 4096 || c.MaxMessageBytes != 1<<20 || c.WatchBuffer != 1024 || c.Logger == nil {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = Config{ID: "x", Heartbeat: 2 * time.Second}.withDefaults()
	if err != nil || c.Lifetime != 10*time.Second {
		t.Fatalf("lifetime follows heartbeat: %v %v", c.Lifetime, err)
	}
	for _, bad := range []Config{
		{},
		{ID: strings.Repeat("x", 256)},
		{ID: "x", Heartbeat: time.Second, Lifetime: 2 * time.Second},
		{ID: "x", Heartbeat: -1},
		{ID: "x", MaxMessageBytes: 1000},
	} {
		if _, err := New(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", bad, err)
		}
	}
}

func TestVersionQueries(t *testing.T) {
	n := newNode(t, "a")
	for i, role := range []string{"beep@1.2.3", "beep@1.3.5", "beep@0.9.0", "boop@1.2.3"} {
		n.register(t, role, 9000+i, nil)
	}
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
		{"beep@<1 || >=1.3", []string{"0.9.0", "1.3.5"}},
		{"beep@2", nil},
		{"nobody", nil},
	} {
		recs, err := n.Services(tc.query)
		if err != nil {
			t.Fatalf("Services(%q): %v", tc.query, err)
		}
		var got []string
		for _, r := range recs {
			if r.Name != "beep" {
				t.Errorf("Services(%q) returned %s", tc.query, r.Role())
			}
			got = append(got, r.Version)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Services(%q) = %v, want %v", tc.query, got, tc.want)
		}
	}
	all, _ := n.Services("")
	if len(all) != 4 {
		t.Errorf(`Services("") = %d records, want 4`, len(all))
	}
}

func TestBadQueriesAndRoles(t *testing.T) {
	n := newNode(t, "a")
	for _, q := range []string{"@1", "be ep", "beep@", "beep@ ", "beep@>>1", "beep@1.2.3.4", "-beep", "beep/x", "é"} {
		if _, err := n.Services(q); !errors.Is(err, ErrBadQuery) {
			t.Errorf("Services(%q) = %v, want ErrBadQuery", q, err)
		}
		if _, err := n.Lookup(context.Background(), q); !errors.Is(err, ErrBadQuery) {
			t.Errorf("Lookup(%q) = %v, want ErrBadQuery", q, err)
		}
		if _, err := n.Watch(context.Background(), q); !errors.Is(err, ErrBadQuery) {
			t.Errorf("Watch(%q) = %v, want ErrBadQuery", q, err)
		}
	}
	for _, role := range []string{"", "@1.0.0", "web@", "web@x", "web@1.0.0@2", "w b@1.0.0", "web@^1", strings.Repeat("a", 129)} {
		if _, err := n.Register(Service{Role: role}); !errors.Is(err, ErrBadRole) {
			t.Errorf("Register(%q) = %v, want ErrBadRole", role, err)
		}
	}
	for _, tc := range []struct{ role, name, ver string }{
		{"web", "web", "0.0.0"},
		{"web@v1.2", "web", "1.2.0"},
		{"a.b-c_d@1.0.0-rc.1+build", "a.b-c_d", "1.0.0-rc.1+build"},
	} {
		name, ver, err := ParseRole(tc.role)
		if err != nil || name != tc.name || ver != tc.ver {
			t.Errorf("ParseRole(%q) = %q, %q, %v", tc.role, name, ver, err)
		}
	}
}

func TestLocalLimits(t *testing.T) {
	n := newNode(t, "a", func(c *Config) { c.MaxRecordsPerOwner = 3; c.MaxMetadataBytes = 10 })
	if _, err := n.Register(Service{Role: "x@1.0.0", Meta: map[string]string{"key": "12345678"}}); !errors.Is(err, ErrMetadataTooLarge) {
		t.Errorf("big metadata: %v", err)
	}
	if _, err := n.Register(Service{Role: "x@1.0.0", Port: 70000}); !errors.Is(err, ErrBadService) {
		t.Errorf("bad port: %v", err)
	}
	rec := n.register(t, "x@1.0.0", 8080, nil)
	if _, err := n.Register(Service{Role: "y@1.0.0", Port: 8080}); !errors.Is(err, ErrPortTaken) {
		t.Errorf("same port: %v", err)
	}
	n.register(t, "y@1.0.0", 0, nil)
	n.register(t, "z@1.0.0", 0, nil) // port 0 may repeat
	if _, err := n.Register(Service{Role: "w@1.0.0"}); !errors.Is(err, ErrTooManyRecords) {
		t.Errorf("4th record: %v", err)
	}
	if _, err := n.Update(rec.ID, map[string]string{"k": "0123456789"}); !errors.Is(err, ErrMetadataTooLarge) {
		t.Errorf("update with big metadata: %v", err)
	}
	if err := n.Free(rec.ID); err != nil {
		t.Fatal(err)
	}
	n.register(t, "x@1.0.0", 8080, nil) // the port is free again
	if err := n.Free("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Free(unknown) = %v", err)
	}
}

func TestRecordsAreCopies(t *testing.T) {
	n := newNode(t, "a")
	meta := map[string]string{"k": "v"}
	rec := n.register(t, "x@1.0.0", 1, meta)
	meta["k"] = "changed"
	rec.Meta["k"] = "changed"
	got, _ := n.Services("x")
	if got[0].Meta["k"] != "v" {
		t.Fatalf("stored metadata changed through a caller's map: %v", got[0].Meta)
	}
	got[0].Meta["k"] = "changed"
	again, _ := n.Services("x")
	if again[0].Meta["k"] != "v" {
		t.Fatal("stored metadata changed through a returned record")
	}
}

func TestLookupBeforeRegister(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	connectSynced(t, a, b)
	got := make(chan []Record, 1)
	errc := make(chan error, 1)
	go func() {
		recs, err := b.Lookup(context.Background(), "db@^2")
		got <- recs
		errc <- err
	}()
	a.register(t, "db@1.0.0", 1, nil) // does not match
	a.register(t, "db@2.1.0", 2, map[string]string{"primary": "yes"})
	recs := <-got
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Version != "2.1.0" || recs[0].Meta["primary"] != "yes" || recs[0].Owner != "a" {
		t.Fatalf("Lookup = %+v", recs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Lookup(ctx, "nothing"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup with nothing = %v", err)
	}
}

func TestFreeByOtherRefused(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	connectSynced(t, a, b)
	connectSynced(t, b, c)
	rec := a.register(t, "x@1.0.0", 1, nil)
	waitFor(t, "c sees it", func() bool { return c.has(t, rec.ID) })
	for _, n := range []*node{b, c} {
		if err := n.Free(rec.ID); !errors.Is(err, ErrNotOwner) {
			t.Errorf("%s: Free = %v, want ErrNotOwner", n.ID(), err)
		}
		if _, err := n.Update(rec.ID, nil); !errors.Is(err, ErrNotOwner) {
			t.Errorf("%s: Update = %v, want ErrNotOwner", n.ID(), err)
		}
	}
	// A change made after the refused free reaches everyone behind it: had
	// the free gone anywhere, it would have arrived first.
	flush(t, a, a, b, c)
	for _, n := range []*node{a, b, c} {
		if !n.has(t, rec.ID) || n.count(Freed, rec.ID) != 0 {
			t.Errorf("%s: record freed by a refused free", n.ID())
		}
	}
}

func TestUpdate(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	connectSynced(t, a, b)
	ch, err := b.Watch(t.Context(), "x")
	if err != nil {
		t.Fatal(err)
	}
	rec := a.register(t, "x@1.0.0", 1, map[string]string{"v": "1"})
	up, err := a.Update(rec.ID, map[string]string{"v": "2"})
	if err != nil || up.Rev.Compare(rec.Rev) <= 0 {
		t.Fatalf("Update = %+v, %v", up, err)
	}
	if err := a.Free(rec.ID); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, want := range []EventKind{Registered, Updated, Freed} {
		ev := <-ch
		kinds = append(kinds, fmt.Sprintf("%s:%s", ev.Kind, ev.Record.Meta["v"]))
		if ev.Kind != want || ev.Record.ID != rec.ID {
			t.Fatalf("events %v, want registered, updated, freed", kinds)
		}
	}
	if kinds[1] != "updated:2" {
		t.Errorf("update event carries %v", kinds)
	}
}

func TestWatchStartsWithCurrentAndEndsWithContext(t *testing.T) {
	n := newNode(t, "a")
	n.register(t, "x@1.0.0", 1, nil)
	n.register(t, "y@1.0.0", 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := n.Watch(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-ch; ev.Kind != Registered || ev.Record.Name != "x" {
		t.Fatalf("first event %+v", ev)
	}
	cancel()
	for range ch {
		t.Fatal("event after cancel")
	}
}

func TestWatchOverflow(t *testing.T) {
	n := newNode(t, "a", func(c *Config) { c.WatchBuffer = 4 })
	ch, err := n.Watch(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		n.register(t, "x@1.0.0", 100+i, nil) // never blocks
	}
	var got []EventKind
	for ev := range ch {
		got = append(got, ev.Kind)
	}
	if !slices.Equal(got, []EventKind{Registered, Registered, Registered, Overflowed}) {
		t.Fatalf("events %v", got)
	}
}

// A consumer that reads late, but within WatchBuffer, gets every event in
// order, those that started the watch first; one that stops reading gets
// its channel closed when its context ends, however much waits for it
// (what waits is dropped), and the registry's goroutines end.
func TestWatchSlowConsumer(t *testing.T) {
	leakcheck.Goroutines(t)
	n := newNode(t, "a", func(c *Config) { c.WatchBuffer = 200 })
	const before, after = 40, 150
	var want []string
	for i := range before {
		want = append(want, n.register(t, "x@1.0.0", 1000+i, nil).ID)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := n.Watch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	idle, err := n.Watch(ctx, "") // never read
	if err != nil {
		t.Fatal(err)
	}
	for i := range after {
		want = append(want, n.register(t, "x@1.0.0", 2000+i, nil).ID)
	}
	var got []string
	for range want {
		ev := <-ch
		if ev.Kind != Registered {
			t.Fatalf("event %d: %v, want registered", len(got), ev.Kind)
		}
		got = append(got, ev.Record.ID)
	}
	slices.Sort(got[:before]) // the records at the start come in no set order
	slices.Sort(want[:before])
	if !slices.Equal(got, want) {
		t.Fatalf("events out of order or missing:\ngot  %v\nwant %v", got, want)
	}
	cancel()
	for range ch {
		t.Fatal("event after cancel")
	}
	for range idle { // closes although it was never read
	}
}

func TestClosed(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	l := connectSynced(t, a, b)
	ch, _ := a.Watch(context.Background(), "")
	lookup := make(chan error, 1)
	go func() {
		_, err := a.Lookup(context.Background(), "never")
		lookup <- err
	}()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := <-l.errA; !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close = %v, want ErrClosed", err)
	}
	l.errA <- nil // for the cleanup
	if err := <-lookup; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Lookup after Close = %v", err)
	}
	for range ch {
	}
	if _, err := a.Register(Service{Role: "x"}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Register after Close = %v", err)
	}
	if _, err := a.Services(""); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Services after Close = %v", err)
	}
	c1, c2 := net.Pipe()
	defer c2.Close()
	if err := a.Serve(context.Background(), "z", c1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve on closed = %v", err)
	}
}

func TestServeEndsWithContext(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	ctx, cancel := context.WithCancel(context.Background())
	c1, c2 := net.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- a.Serve(ctx, "b", c1) }()
	go b.Serve(context.Background(), "a", c2)
	waitFor(t, "sync", func() bool { return len(a.syncedWith("b")) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v, want context.Canceled", err)
	}
	if err := a.Serve(ctx, "a", c1); !errors.Is(err, ErrBadPeer) {
		t.Fatalf("Serve(self) = %v", err)
	}
}

func TestRecordFields(t *testing.T) {
	a, b := newNode(t, "a", func(c *Config) { c.Host = "10.0.0.1" }), newNode(t, "b")
	connectSynced(t, a, b)
	rec, err := a.Register(Service{Role: "web@v2.1", Port: 8080, Meta: map[string]string{"zone": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []Record
	waitFor(t, "b", func() bool { got, _ = b.Services("web"); return len(got) == 1 })
	if !reflect.DeepEqual(got[0], rec) {
		t.Fatalf("b has %+v\nwant %+v", got[0], rec)
	}
	if rec.Role() != "web@2.1.0" || rec.Addr() != "10.0.0.1:8080" || rec.Owner != "a" || rec.Rev.Incarnation == 0 {
		t.Fatalf("record %+v", rec)
	}
}
