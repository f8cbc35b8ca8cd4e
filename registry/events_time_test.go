package registry

import (
	"context"
	"testing"
	"time"
)

// TestEventsSayWhen: a Watch event says when this node applied the change
// (a consumer reading late still orders and times it), and the events a
// Watch starts with say when Watch was called.
func TestEventsSayWhen(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	connectSynced(t, a, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := b.Watch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	rec := a.register(t, "web@1.0.0", 1, nil)
	b.waitEvent(t, Registered, rec.ID)
	after := time.Now()
	time.Sleep(20 * time.Millisecond) // read late
	ev := <-w
	if ev.Record.ID != rec.ID || ev.Time.Before(before) || ev.Time.After(after) {
		t.Fatalf("event %v of %s at %v; want %s's, applied between %v and %v", ev.Kind, ev.Record.ID, ev.Time, rec.ID, before, after)
	}
	watched := time.Now()
	w2, err := b.Watch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-w2; ev.Time.Before(watched) || ev.Time.After(time.Now()) {
		t.Fatalf("a watch's first event at %v, before its Watch call at %v", ev.Time, watched)
	}
}
