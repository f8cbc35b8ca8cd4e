package mesh

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// waitResult is what a WaitPeers running in a goroutine returned.
type waitResult struct {
	peers []Peer
	err   error
}

// waitPeersAsync runs n.WaitPeers(ctx, count) in a goroutine that the
// test waits for.
func waitPeersAsync(t *testing.T, ctx context.Context, n *Node, count int) <-chan waitResult {
	t.Helper()
	ch := make(chan waitResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		peers, err := n.WaitPeers(ctx, count)
		ch <- waitResult{peers, err}
	}()
	t.Cleanup(func() { <-done })
	return ch
}

// result returns what a WaitPeers returned, failing after 5 s.
func result(t *testing.T, ch <-chan waitResult) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("WaitPeers has not returned after 5 s")
		return waitResult{}
	}
}

func ids(peers []Peer) []string {
	var out []string
	for _, p := range peers {
		out = append(out, p.ID)
	}
	return out
}

func TestWaitPeersReturnsAtCount(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := start(t, "wait", testConfig("a"))
	got := waitPeersAsync(t, ctx, a, 2)

	b := start(t, "wait", testConfig("b"))
	linkPair(t, b, a)
	// One peer of two: a WaitPeers for two is still waiting. A later
	// event (the sync of b's registry) has been published by now or
	// soon; the check below runs after a has b as a peer.
	waitFor(t, "a's registry synced with b", 5*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.peers["b"] != nil && a.peers["b"].synced
	})
	select {
	case r := <-got:
		t.Fatalf("WaitPeers(2) returned with one peer: %v %v", ids(r.peers), r.err)
	default:
	}

	c := start(t, "wait", testConfig("c"))
	if _, err := c.Connect(ctx, addr(t, a)); err != nil {
		t.Fatal(err)
	}
	r := result(t, got)
	if r.err != nil {
		t.Fatalf("WaitPeers(2): %v", r.err)
	}
	if !slices.Equal(ids(r.peers), []string{"b", "c"}) {
		t.Fatalf("WaitPeers(2) = %v, want [b c]", ids(r.peers))
	}

	// Already there: at once, as are counts of zero or less.
	for _, count := range []int{2, 1, 0, -1} {
		peers, err := a.WaitPeers(ctx, count)
		if err != nil || len(peers) != 2 {
			t.Errorf("WaitPeers(%d) with two peers = %v, %v; want both", count, ids(peers), err)
		}
	}
}

func TestWaitPeersBeforeStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := New("wait", testConfig("a"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	got := waitPeersAsync(t, ctx, a, 1)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b := start(t, "wait", testConfig("b"))
	if _, err := b.Connect(ctx, addr(t, a)); err != nil {
		t.Fatal(err)
	}
	if r := result(t, got); r.err != nil || !slices.Equal(ids(r.peers), []string{"b"}) {
		t.Fatalf("WaitPeers(1) called before Start = %v, %v; want [b]", ids(r.peers), r.err)
	}
}

func TestWaitPeersEnds(t *testing.T) {
	t.Run("ctx ends", func(t *testing.T) {
		a := start(t, "wait", testConfig("a"))
		ctx, cancel := context.WithCancel(context.Background())
		got := waitPeersAsync(t, ctx, a, 1)
		cancel()
		if r := result(t, got); !errors.Is(r.err, context.Canceled) || r.peers != nil {
			t.Fatalf("WaitPeers after cancel = %v, %v; want context.Canceled", ids(r.peers), r.err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		if _, err := a.WaitPeers(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitPeers past its deadline = %v; want context.DeadlineExceeded", err)
		}
	})
	t.Run("node closes", func(t *testing.T) {
		a := start(t, "wait", testConfig("a"))
		got := waitPeersAsync(t, context.Background(), a, 1)
		a.Close()
		if r := result(t, got); !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("WaitPeers while the node closes = %v; want net.ErrClosed", r.err)
		}
		if _, err := a.WaitPeers(context.Background(), 0); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("WaitPeers on a closed node = %v; want net.ErrClosed", err)
		}
	})
}

func TestBroadcastWithoutPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := start(t, "wait", testConfig("a"))
	if err := a.Broadcast(ctx, []byte("anyone?")); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("Broadcast alone = %v; want ErrNoPeers", err)
	}

	b := start(t, "wait", testConfig("b"))
	linkPair(t, b, a)
	if err := a.Broadcast(ctx, []byte("hello, b")); err != nil {
		t.Fatalf("Broadcast to b: %v", err)
	}
	if m := receive(t, b); m.From != "a" || string(m.Data) != "hello, b" {
		t.Fatalf("b received %q from %s; want hello, b from a", m.Data, m.From)
	}

	// b leaves: a is alone again, and says so.
	events := a.Events(ctx)
	b.Close()
	nextEvent(t, events, PeerDown)
	if err := a.Broadcast(ctx, []byte("still there?")); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("Broadcast after the last peer left = %v; want ErrNoPeers", err)
	}
	if err := a.Broadcast(ctx, make([]byte, a.cfg.MaxMessageSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Broadcast of an oversized message alone = %v; want ErrTooLarge", err)
	}
	a.Close()
	if err := a.Broadcast(ctx, []byte("closed")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Broadcast on a closed node = %v; want net.ErrClosed", err)
	}
}

// Two nodes found by mDNS alone, as the README's program runs: WaitPeers
// returns once they are linked, and a Broadcast then reaches the other.
func TestWaitPeersMDNS(t *testing.T) {
	netns.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := start(t, "wait-mdns", mdnsConfig("a"))
	got := waitPeersAsync(t, ctx, a, 1)
	b := start(t, "wait-mdns", mdnsConfig("b"))
	peers, err := b.WaitPeers(ctx, 1)
	if err != nil || !slices.Equal(ids(peers), []string{"a"}) {
		t.Fatalf("b.WaitPeers(1) = %v, %v; want [a]", ids(peers), err)
	}
	if r := result(t, got); r.err != nil || !slices.Equal(ids(r.peers), []string{"b"}) {
		t.Fatalf("a.WaitPeers(1) = %v, %v; want [b]", ids(r.peers), r.err)
	}
	if err := b.Broadcast(ctx, []byte("hello, mesh")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, a); m.From != "b" || string(m.Data) != "hello, mesh" {
		t.Fatalf("a received %q from %s", m.Data, m.From)
	}
}
