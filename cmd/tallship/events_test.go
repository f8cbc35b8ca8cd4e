package main

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

// TestEventStreamApply: a record is shown registered once, a watch's
// repeat of it (after an overflow) is not shown, a repeat with new content
// is shown updated, and only records shown are shown freed.
func TestEventStreamApply(t *testing.T) {
	web := mesh.Record{ID: "1", Name: "web", Version: "1.0.0", Owner: "a", Host: "10.0.0.1", Port: 80,
		Meta: map[string]string{"k": "v"}, Rev: registry.Rev{Incarnation: 1, Seq: 1}}
	changed := web
	changed.Meta = map[string]string{"k": "w"}
	changed.Rev.Seq = 2
	ev := func(kind registry.EventKind, rec mesh.Record) mesh.ServiceEvent {
		return mesh.ServiceEvent{Kind: kind, Record: rec}
	}
	tests := []struct {
		name string
		in   []mesh.ServiceEvent
		want []string
	}{
		{"register, update, free", []mesh.ServiceEvent{ev(registry.Registered, web), ev(registry.Updated, changed), ev(registry.Freed, changed)},
			[]string{"service-registered", "service-updated", "service-freed"}},
		{"repeated unchanged", []mesh.ServiceEvent{ev(registry.Registered, web), ev(registry.Registered, web)},
			[]string{"service-registered"}},
		{"repeated changed", []mesh.ServiceEvent{ev(registry.Registered, web), ev(registry.Registered, changed)},
			[]string{"service-registered", "service-updated"}},
		{"freed unseen", []mesh.ServiceEvent{ev(registry.Freed, web)}, nil},
		{"freed twice", []mesh.ServiceEvent{ev(registry.Registered, web), ev(registry.Freed, web), ev(registry.Freed, web)},
			[]string{"service-registered", "service-freed"}},
		{"registered again after free", []mesh.ServiceEvent{ev(registry.Registered, web), ev(registry.Freed, web), ev(registry.Registered, web)},
			[]string{"service-registered", "service-freed", "service-registered"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &eventStream{known: map[string]mesh.Record{}}
			var got []string
			for _, sev := range tt.in {
				if e, show := s.apply(sev); show {
					if e.record.ID != sev.Record.ID || e.Time.IsZero() {
						t.Errorf("%s: event %+v for record %s", e.name(), e, sev.Record.ID)
					}
					got = append(got, e.name())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("shown %q, want %q", got, tt.want)
			}
		})
	}
}

// TestEventStreamNext: next merges the node's events and the service
// changes, and ends when the node's events end or ctx does.
func TestEventStreamNext(t *testing.T) {
	events := make(chan mesh.Event, 2)
	watch := make(chan mesh.ServiceEvent, 2)
	s := &eventStream{events: events, watch: watch, known: map[string]mesh.Record{}}
	events <- mesh.Event{Kind: mesh.PeerUp, Peer: "a"}
	watch <- mesh.ServiceEvent{Kind: registry.Registered, Record: mesh.Record{ID: "1", Name: "web", Version: "1.0.0", Owner: "a"}}
	ctx := context.Background()
	var got []string
	for range 2 {
		e, ok := s.next(ctx)
		if !ok {
			t.Fatalf("the stream ended after %q", got)
		}
		got = append(got, eventOf(e).Event+" "+eventOf(e).Peer)
	}
	slices.Sort(got)
	if want := []string{"peer-up a", "service-registered a"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	close(watch) // the watch ends with the node: the stream waits for its events to end
	close(events)
	if e, ok := s.next(ctx); ok {
		t.Errorf("after the events ended: %+v", e)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	s = &eventStream{events: make(chan mesh.Event), known: map[string]mesh.Record{}}
	if e, ok := s.next(cctx); ok {
		t.Errorf("after ctx ended: %+v", e)
	}
}

// A peer-down that left messages undelivered says how many, in join's
// line and in its JSON; one that left none says nothing of it.
func TestPeerDownLineCountsUndelivered(t *testing.T) {
	at := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	down := event{Event: mesh.Event{Kind: mesh.PeerDown, Time: at, Peer: "b", Err: errors.New("link lost: not reached again in time"), Undelivered: 3}}
	if got, want := eventLine(down), "01:02:03.000 peer-down          b (link lost: not reached again in time), 3 messages undelivered"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
	if got := eventOf(down).Undelivered; got != 3 {
		t.Errorf("JSON undelivered %d, want 3", got)
	}
	down.Undelivered, down.Err = 0, nil
	if got, want := eventLine(down), "01:02:03.000 peer-down          b"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
}

// A service's line says its owner's site when records have one (with
// --site or --nats), and nothing of sites when they do not.
func TestServiceLineSaysSite(t *testing.T) {
	at := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	rec := mesh.Record{ID: "r", Name: "api", Version: "1.0.0", Host: "10.0.0.1", Port: 80, Owner: "a0", Site: "lab"}
	ev := event{Event: mesh.Event{Time: at}, change: registry.Registered, record: rec}
	if got, want := eventLine(ev), "01:02:03.000 service-registered api@1.0.0 10.0.0.1:80 owner a0 (site lab)"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
	ev.record.Site = ""
	if got, want := eventLine(ev), "01:02:03.000 service-registered api@1.0.0 10.0.0.1:80 owner a0"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
}

// A member of another site coming and going is one line each, naming it
// and its site, and what it did not acknowledge.
func TestRemoteMemberLines(t *testing.T) {
	at := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	up := event{Event: mesh.Event{Time: at, Kind: mesh.RemoteUp, Peer: "b0", Site: "lab"}}
	if got, want := eventLine(up), "01:02:03.000 remote-up          b0 (site lab)"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
	down := event{Event: mesh.Event{Time: at, Kind: mesh.RemoteDown, Peer: "b0", Site: "lab", Err: errors.New("silent for 3s"), Undelivered: 2}}
	if got, want := eventLine(down), "01:02:03.000 remote-down        b0 (site lab) (silent for 3s), 2 messages undelivered"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
}
