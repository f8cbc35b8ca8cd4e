package mesh

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// TestMDNSHundredNodesFullMesh: a hundred nodes started at once in one
// private network, with the default timers and mDNS, reach the full mesh
// (every node linked once to the 99 others) by themselves, stay whole, see
// a record registered on one of them, and take in a hundred-and-first
// node that joins late. It asserts what happens, not how fast: the
// benchmark (tallship-bench -only scale) measures that.
//
// Under the race detector a hundred nodes run five to ten times slower on
// a CI machine's cores, which measures the detector; scripts/test runs
// this test again without it.
// hundredNodes skips a test of a hundred nodes under the race detector
// (scripts/test runs those without it) and returns the config of node i,
// its id prefix then i.
func hundredNodes(t *testing.T, prefix string) func(i int) Config {
	t.Helper()
	netns.Require(t)
	if raceEnabled {
		t.Skip("a hundred nodes under the race detector: scripts/test runs this test without it")
	}
	leakcheck.Goroutines(t)
	return func(i int) Config {
		c := Config{ID: fmt.Sprintf("%s%03d", prefix, i), Listen: "127.0.0.1:0"}
		if os.Getenv("TALLSHIP_DEBUG") != "" {
			c.Logger = testConfig("").Logger
		}
		return c
	}
}

func TestMDNSHundredNodesFullMesh(t *testing.T) {
	cfg := hundredNodes(t, "n")
	const n = 100
	nodes := make([]*Node, n)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range nodes {
		wg.Go(func() { nodes[i] = start(t, "hundred", cfg(i)) })
	}
	wg.Wait()
	least := func(nodes []*Node) (id string, peers int) {
		peers = len(nodes)
		for _, nd := range nodes {
			if p := len(nd.Peers()); p < peers {
				id, peers = nd.ID(), p
			}
		}
		return id, peers
	}
	deadline := time.Now().Add(3 * time.Minute)
	for !settled(nodes...) {
		if time.Now().After(deadline) {
			id, p := least(nodes)
			t.Fatalf("no full mesh of %d nodes after %v: %s has %d peers", n, time.Since(began).Round(time.Second), id, p)
		}
		time.Sleep(50 * time.Millisecond) // polling against the deadline
	}
	t.Logf("%d nodes formed the full mesh %v after starting", n, time.Since(began).Round(time.Millisecond))

	// Whole, and it stays so: no link lost while idle.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !settled(nodes...) {
			id, p := least(nodes)
			t.Fatalf("the full mesh broke while idle: %s has %d peers", id, p)
		}
	}

	// A record registered on one node is seen on every other.
	if _, err := nodes[n/2].Register(Service{Role: "web@1.0.0", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		recs, err := nd.Lookup(ctx, "web@^1")
		cancel()
		if err != nil || len(recs) != 1 || recs[0].Owner != nodes[n/2].ID() {
			t.Fatalf("%s: the record of %s: %+v, %v", nd.ID(), nodes[n/2].ID(), recs, err)
		}
	}

	// A late node links to all of them.
	late := start(t, "hundred", cfg(n))
	all := append(nodes, late)
	deadline = time.Now().Add(time.Minute)
	for !settled(all...) {
		if time.Now().After(deadline) {
			t.Fatalf("a node joining a mesh of %d has %d peers after a minute", n, len(late.Peers()))
		}
		time.Sleep(20 * time.Millisecond) // polling against the deadline
	}
}

// TestMDNSHundredNodesHalfThenHalf: fifty nodes form their full mesh, then
// fifty more start at once beside it; the hundred reach the full mesh by
// themselves (each newcomer links with the fifty members and the other
// newcomers), and the first fifty keep every link they had: none is lost
// or made again while the others join.
func TestMDNSHundredNodesHalfThenHalf(t *testing.T) {
	cfg := hundredNodes(t, "h")
	const n = 100
	nodes := make([]*Node, n)
	startAll := func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() { nodes[i] = start(t, "halves", cfg(i)) })
		}
		wg.Wait()
	}
	waitWhole := func(what string, group []*Node, within time.Duration) {
		t.Helper()
		began := time.Now()
		for !settled(group...) {
			if time.Since(began) > within {
				short := 0
				for _, nd := range group {
					if len(nd.Peers()) < len(group)-1 {
						short++
					}
				}
				t.Fatalf("%s: no full mesh of %d nodes after %v: %d nodes short of peers", what, len(group), within, short)
			}
			time.Sleep(50 * time.Millisecond) // polling against the deadline
		}
		t.Logf("%s: full mesh of %d nodes after %v", what, len(group), time.Since(began).Round(time.Millisecond))
	}
	startAll(0, n/2)
	waitWhole("the first half", nodes[:n/2], 2*time.Minute)
	first := nodes[:n/2]
	ev := make([]<-chan Event, len(first))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, nd := range first {
		ev[i] = nd.Events(ctx)
	}
	startAll(n/2, n)
	waitWhole("both halves", nodes, 3*time.Minute)
	cancel()
	for i, nd := range first {
		for e := range ev[i] {
			if e.Kind == PeerDown && e.Peer < fmt.Sprintf("h%03d", n/2) {
				t.Errorf("%s lost its link to %s, of the first half, while the second joined: %v", nd.ID(), e.Peer, e.Err)
			}
		}
	}
}
