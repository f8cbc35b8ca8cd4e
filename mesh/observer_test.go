package mesh

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
)

// TestObserverIsNoMember: an observer (the CLI's ls) links and reads the
// cluster like any node, but the members do not count it: it is not in
// their Peers, their Events mark it, Broadcast leaves it out, and their
// member lists do not name it, while it learns every member from them.
func TestObserverIsNoMember(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	linkPair(t, a, b)
	rec, err := b.Register(Service{Role: "web@1.0.0", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evA := a.Events(ctx)

	ocfg := testConfig("o")
	ocfg.Observer = true
	o := start(t, "c", ocfg)
	if _, err := o.Connect(ctx, addr(t, a)); err != nil {
		t.Fatal(err)
	}
	// The observer learns b from a's member list, and links to it.
	ps, err := o.WaitPeers(ctx, 2)
	if err != nil || !slices.Equal(ids(ps), []string{"a", "b"}) {
		t.Fatalf("the observer's peers: %v, %v; want a and b", ids(ps), err)
	}
	recs, err := o.Lookup(ctx, "web")
	if err != nil || len(recs) != 1 || recs[0].ID != rec.ID {
		t.Fatalf("the observer's lookup of b's record: %v, %v", recs, err)
	}
	if e := nextEvent(t, evA, PeerUp); e.Peer != "o" || !e.Observer {
		t.Errorf("a's PeerUp of %s, observer %v; want o, marked", e.Peer, e.Observer)
	}
	for _, n := range []*Node{a, b} {
		want := []string{"a", "b"}
		want = slices.DeleteFunc(want, func(id string) bool { return id == n.ID() })
		if got := ids(n.Peers()); !slices.Equal(got, want) {
			t.Errorf("%s's peers %v, want %v (not the observer)", n.ID(), got, want)
		}
	}

	// Broadcast goes to the members only.
	if err := a.Broadcast(ctx, []byte("to members")); err != nil {
		t.Fatal(err)
	}
	if m, err := b.Receive(ctx); err != nil || string(m.Data) != "to members" {
		t.Fatalf("b's message: %q, %v", m.Data, err)
	}
	if err := o.Send(ctx, "a", []byte("from the observer")); err != nil {
		t.Fatal(err)
	}
	if m, err := a.Receive(ctx); err != nil || m.From != "o" {
		t.Fatalf("a's message from the observer: %+v, %v", m, err)
	}
	b.Close() // (a Disconnect would not keep b away: the observer's member list names a to it)
	waitFor(t, "a alone but for the observer", 5*time.Second, func() bool { return len(a.Peers()) == 0 })
	if err := a.Broadcast(ctx, []byte("nobody")); !errors.Is(err, ErrNoPeers) {
		t.Errorf("Broadcast with only an observer linked: %v, want ErrNoPeers", err)
	}
}

// TestObserverOfALargerMeshStaysLinked: beyond five members, members
// watch each other on a ring and relax their other links; an observer is
// on no ring, and its links stay strict at both ends. Idle for longer
// than a relaxed beat and eight silent-peer bounds, nobody finds it
// silent, and none of its links is lost or made again.
func TestObserverOfALargerMeshStaysLinked(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var members []*Node
	for _, id := range []string{"m1", "m2", "m3", "m4", "m5", "m6"} {
		m := start(t, "c", testConfig(id))
		if len(members) > 0 {
			if _, err := m.Connect(ctx, addr(t, members[0])); err != nil {
				t.Fatal(err)
			}
		}
		members = append(members, m)
	}
	waitFor(t, "the members' full mesh", 10*time.Second, func() bool { return settled(members...) })
	ocfg := testConfig("obs")
	ocfg.Observer = true
	o := start(t, "c", ocfg)
	evs := []<-chan Event{o.Events(ctx)}
	for _, m := range members {
		evs = append(evs, m.Events(ctx))
	}
	if _, err := o.Connect(ctx, addr(t, members[0])); err != nil {
		t.Fatal(err)
	}
	if _, err := o.WaitPeers(ctx, len(members)); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("")
	before := o.Stats().LinksRedone
	time.Sleep(9 * (cfg.KeepAliveInterval + cfg.WriteTimeout)) // idle: what is tested is that nothing happens
	cancel()
	if redone := o.Stats().LinksRedone - before; redone != 0 {
		t.Errorf("the observer's links were made again %d times while idle", redone)
	}
	for i, ch := range evs {
		for e := range ch {
			if e.Kind == PeerDown {
				who := "the observer"
				if i > 0 {
					who = members[i-1].ID()
				}
				t.Errorf("%s: peer %s down while idle: %v", who, e.Peer, e.Err)
			}
		}
	}
}
