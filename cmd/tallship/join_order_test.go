package main

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

// TestJoinLinesInOrder: join prints "joined" first, with a time before
// every event after it, and the node's events in the order of their
// times, also the events of links made while Start was still running (a
// chosen --id makes Start wait for mDNS to claim it, while the node
// already links with the peers it finds), in the text and in the JSON
// form. (Service changes are stamped as join reads them, and a node
// event on its way may follow one: they are only checked against
// "joined".)
func TestJoinLinesInOrder(t *testing.T) {
	netns.Require(t)
	bin := build(t)
	const cluster = "join-order"
	x := joinObserver(t, bin, cluster, "x")
	// A service on x's side, so that y also prints a service change.
	tallship(t, bin, "run w", nil, "run", cluster, "web@1.0.0", "--fast", "--id", "w", "--", bin.child)
	x.waitEvent("web registered", 10*time.Second, 0, serviceEvent("service-registered", "web@1.0.0", "w"))

	for _, asJSON := range []bool{false, true} {
		args := []string{"join", cluster, "--fast", "--id", "y"}
		if asJSON {
			args = append(args, "--json")
		}
		y := tallship(t, bin, strings.Join(args, " "), nil, args...)
		// The link to x comes up during Start (the claim of "y" takes
		// about 750 ms), then w's service is seen.
		y.waitLine("w's service", 15*time.Second, 0, func(s string) bool { return strings.Contains(s, "service-registered") })
		lines := y.snapshot()
		var joined, prev time.Time // prev: of the last node event
		for i, l := range lines {
			var at time.Time
			var name string
			if asJSON {
				var e eventJSON
				if err := json.Unmarshal([]byte(l.text), &e); err != nil {
					t.Fatalf("line %d: %q: %v", i, l.text, err)
				}
				at, name = e.Time, e.Event
			} else {
				f := strings.Fields(l.text)
				if len(f) < 2 {
					t.Fatalf("line %d: %q", i, l.text)
				}
				clock, err := time.ParseInLocation(timeLayout, f[0], time.Local)
				if err != nil {
					t.Fatalf("line %d: %q: %v", i, l.text, err)
				}
				at, name = clock, f[1]
			}
			switch {
			case i == 0:
				if name != "joined" {
					t.Fatalf("first line %q, want joined", l.text)
				}
				joined, prev = at, at
			case at.Before(joined):
				t.Errorf("line %d is before joined: %q after %q", i, l.text, lines[0].text)
			case strings.HasPrefix(name, "service-"):
			case at.Before(prev):
				t.Errorf("line %d goes back in time: %q after %s", i, l.text, prev.Format(timeLayout))
			default:
				prev = at
			}
		}
		if !strings.Contains(lines[1].text, "peer-up") {
			t.Errorf("second line %q, want x's peer-up, from during Start", lines[1].text)
		}
		y.signal(syscall.SIGINT)
		if code := y.wait(10 * time.Second); code != 0 {
			t.Errorf("%q: exit status %d after SIGINT", args, code)
		}
	}
}

// TestEventStreamNodeEventsFirst: of a node event and a service change
// both waiting, the node event, stamped when it happened, is shown first;
// the change is stamped as it is read, after it.
func TestEventStreamNodeEventsFirst(t *testing.T) {
	for range 50 {
		events := make(chan mesh.Event, 1)
		watch := make(chan mesh.ServiceEvent, 1)
		s := &eventStream{events: events, watch: watch, known: map[string]mesh.Record{}}
		events <- mesh.Event{Kind: mesh.PeerUp, Peer: "a", Time: time.Now()}
		watch <- mesh.ServiceEvent{Kind: registry.Registered, Record: mesh.Record{ID: "1", Name: "web", Version: "1.0.0", Owner: "a"}}
		first, _ := s.next(context.Background())
		second, _ := s.next(context.Background())
		if first.Kind != mesh.PeerUp || second.change != registry.Registered || second.Time.Before(first.Time) {
			t.Fatalf("shown %s at %v, then %s at %v; want the peer-up first", first.name(), first.Time, second.name(), second.Time)
		}
	}
}
