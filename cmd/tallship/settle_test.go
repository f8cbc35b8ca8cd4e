package main

import (
	"context"
	"testing"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// TestSettle: settle ends once what the node heard of has answered and a
// quiet spell passed: with NATS up and no LAN peer it does not wait for
// all of max; with nothing heard, or NATS down and no peer, it does.
func TestSettle(t *testing.T) {
	const max, quiet = 600 * time.Millisecond, 20 * time.Millisecond
	for _, c := range []struct {
		name   string
		nats   bool
		events []mesh.Event
		early  bool
	}{
		{"no NATS, no peer", false, nil, false},
		{"NATS up, no peer", true, []mesh.Event{{Kind: mesh.NATSUp}}, true},
		{"NATS down, no peer", true, []mesh.Event{{Kind: mesh.NATSDown}}, false},
		{"a peer synced", false, []mesh.Event{{Kind: mesh.PeerUp, Peer: "p"}, {Kind: mesh.PeerSynced, Peer: "p"}}, true},
		{"NATS not answered", true, []mesh.Event{{Kind: mesh.PeerUp, Peer: "p"}, {Kind: mesh.PeerSynced, Peer: "p"}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			events := make(chan mesh.Event, len(c.events))
			for _, ev := range c.events {
				events <- ev
			}
			start := time.Now()
			if err := settle(context.Background(), events, max, quiet, c.nats); err != nil {
				t.Fatal(err)
			}
			if early := time.Since(start) < max/2; early != c.early {
				t.Fatalf("settled after %v, early %v, want %v", time.Since(start), early, c.early)
			}
		})
	}
}
