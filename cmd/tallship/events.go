package main

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

// What join prints and the dashboard logs is one stream of events: the
// node's own (Node.Events: peers, ids, discovery) and the changes of the
// service records it sees (Node.Watch), in the order they are read.

// event is one event of that stream: a node event, or a service change
// when change is set (then the embedded Event has only Time).
type event struct {
	mesh.Event
	change registry.EventKind // Registered, Updated or Freed; 0 for a node event
	record mesh.Record        // the record changed (for Freed, its last content)
}

// name is the event's name in join's output: "peer-up", …,
// "service-registered", "service-updated", "service-freed".
func (ev event) name() string {
	switch ev.change {
	case registry.Registered:
		return "service-registered"
	case registry.Updated:
		return "service-updated"
	case registry.Freed:
		return "service-freed"
	}
	return ev.Kind.String()
}

// eventStream merges a node's events and the changes of every service
// record it sees. It starts no goroutine: next reads both channels in the
// caller's, so the stream ends with the command that reads it.
type eventStream struct {
	n      *mesh.Node
	events <-chan mesh.Event
	watch  <-chan mesh.ServiceEvent // nil once it ended without overflowing
	// known are the records shown as registered and not yet as freed, by
	// id: a Watch started again after an overflow first repeats the
	// records it holds, which are shown only if they changed meanwhile.
	known   map[string]mesh.Record
	pending []event // changes found by a resync, shown before the rest
}

// followNode starts watching n's services and returns the stream of
// events and service changes. events are n's events (Node.Events);
// service changes are followed until ctx ends or the node closes. n must
// be started.
func followNode(ctx context.Context, n *mesh.Node, events <-chan mesh.Event) (*eventStream, error) {
	watch, err := n.Watch(ctx, "")
	if err != nil {
		return nil, err
	}
	return &eventStream{n: n, events: events, watch: watch, known: map[string]mesh.Record{}}, nil
}

// next returns the next event, or false once ctx has ended or the node's
// events have (when it closes).
func (s *eventStream) next(ctx context.Context) (event, bool) {
	for {
		if len(s.pending) > 0 {
			ev := s.pending[0]
			s.pending = s.pending[1:]
			return ev, true
		}
		// A node event already waiting goes first: it was stamped when
		// it happened, a service change is stamped as it is read, so the
		// other way round the lines' times would go backwards. (One
		// still on its way from the node can follow a change stamped
		// later: Watch's events carry no time of their own.)
		select {
		case ev, ok := <-s.events:
			if !ok {
				return event{}, false
			}
			return event{Event: ev}, true
		default:
		}
		select {
		case <-ctx.Done():
			return event{}, false
		case ev, ok := <-s.events:
			if !ok {
				return event{}, false
			}
			return event{Event: ev}, true
		case sev, ok := <-s.watch:
			switch {
			case !ok: // ctx ended or the node closed: events end too
				s.watch = nil
			case sev.Kind == registry.Overflowed:
				s.resync(ctx)
			default:
				if ev, show := s.apply(sev); show {
					return ev, true
				}
			}
		}
	}
}

// apply takes one change into the known records and returns the event to
// show for it, if any: a record registered again unchanged (a resync's
// repeat) or freed unseen is not shown; one registered again changed is
// shown as updated.
func (s *eventStream) apply(sev mesh.ServiceEvent) (event, bool) {
	rec := sev.Record
	old, wasKnown := s.known[rec.ID]
	kind := sev.Kind
	switch kind {
	case registry.Registered, registry.Updated:
		s.known[rec.ID] = rec
		if kind == registry.Registered && wasKnown {
			if sameRecord(old, rec) {
				return event{}, false
			}
			kind = registry.Updated
		}
	case registry.Freed:
		if !wasKnown {
			return event{}, false
		}
		delete(s.known, rec.ID)
	default:
		return event{}, false
	}
	ev := serviceChange(kind, rec)
	if !sev.Time.IsZero() {
		ev.Time = sev.Time // when the node applied it, not when read
	}
	return ev, true
}

// resync watches again after the watch overflowed. The known records gone
// by now were freed while the stream lagged behind: they are shown freed
// first. (The new watch repeats the records still there; apply leaves
// those out.) When the node is closing, the stream goes on without
// service changes until its events end.
func (s *eventStream) resync(ctx context.Context) {
	s.watch = nil
	watch, err := s.n.Watch(ctx, "")
	if err != nil {
		return
	}
	s.watch = watch
	// Taken after Watch, so that no record missing here is left shown.
	// One freed between the two calls is shown freed, then registered
	// and freed again from the new watch: rare, and it ends right.
	now, err := s.n.Services("")
	if err != nil {
		return
	}
	present := make(map[string]bool, len(now))
	for _, rec := range now {
		present[rec.ID] = true
	}
	for _, id := range slices.Sorted(maps.Keys(s.known)) {
		if !present[id] {
			s.pending = append(s.pending, serviceChange(registry.Freed, s.known[id]))
			delete(s.known, id)
		}
	}
}

// serviceChange is the event of a change of rec, stamped now.
func serviceChange(kind registry.EventKind, rec mesh.Record) event {
	return event{Event: mesh.Event{Time: time.Now()}, change: kind, record: rec}
}

// sameRecord reports whether a and b are the same content of a record.
func sameRecord(a, b mesh.Record) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Version == b.Version && a.Owner == b.Owner &&
		a.Host == b.Host && a.Port == b.Port && a.Rev.Compare(b.Rev) == 0 && maps.Equal(a.Meta, b.Meta)
}
