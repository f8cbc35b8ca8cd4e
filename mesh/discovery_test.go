package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// mdnsConfig is testConfig with mDNS discovery on loopback.
func mdnsConfig(id string) Config {
	c := testConfig(id)
	c.Discovery = nil
	return c
}

func TestMDNSTwoNodesTogether(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	var a, b *Node
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a = start(t, "pair", mdnsConfig("a")) }()
	go func() { defer wg.Done(); b = start(t, "pair", mdnsConfig("b")) }()
	wg.Wait()
	began := time.Now()
	waitFor(t, "one link each way", 5*time.Second, func() bool { return settled(a, b) })
	t.Logf("linked %v after both started", time.Since(began))
	ctx := context.Background()
	if err := b.Send(ctx, "a", []byte("hi a")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, a); m.From != "b" || string(m.Data) != "hi a" {
		t.Fatalf("a got %+v", m)
	}
}

func TestMDNSOneAfterTheOther(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	// The later node has the lower id, so it dials; then the reverse.
	for _, ids := range [][2]string{{"b", "a"}, {"a", "b"}} {
		t.Run(ids[0]+" then "+ids[1], func(t *testing.T) {
			cluster := "seq-" + ids[0]
			first := start(t, cluster, mdnsConfig(ids[0]))
			began := time.Now()
			second := start(t, cluster, mdnsConfig(ids[1]))
			waitFor(t, "one link each way", 5*time.Second, func() bool { return settled(first, second) })
			t.Logf("linked %v after the second joined", time.Since(began))
			if err := first.Send(context.Background(), ids[1], []byte("x")); err != nil {
				t.Fatal(err)
			}
			receive(t, second)
		})
	}
}

// counting wraps a discoverer and counts what it reports.
type counting struct {
	d     discovery.Discoverer
	mu    sync.Mutex
	found map[string]int
	errs  []error
}

func (c *counting) Run(ctx context.Context, self discovery.Self, report func(discovery.Event)) error {
	return c.d.Run(ctx, self, func(e discovery.Event) {
		c.mu.Lock()
		if e.Err != nil {
			c.errs = append(c.errs, e.Err)
		} else if e.Kind == discovery.Found {
			c.found[e.Peer.ID]++
		}
		c.mu.Unlock()
		report(e)
	})
}

func (c *counting) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("found %v, errors %v", c.found, c.errs)
}

func TestMDNSTenNodesFullMesh(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	nodes := make([]*Node, 10)
	counts := make([]*counting, 10)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range nodes {
		counts[i] = &counting{d: &discovery.MDNS{}, found: map[string]int{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := testConfig(fmt.Sprintf("n%02d", i))
			cfg.Discovery = []discovery.Discoverer{counts[i]}
			nodes[i] = start(t, "ten", cfg)
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for !settled(nodes...) {
		if time.Now().After(deadline) {
			for i, c := range counts {
				t.Logf("n%02d discovery: %v", i, c)
			}
			t.Fatalf("no full mesh after 10 s:%s", meshState(nodes...))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("ten nodes formed the full mesh %v after starting", time.Since(began))
	links := 0
	for _, n := range nodes {
		links += linkCount(n)
	}
	if links != 90 { // each link counted at both ends
		t.Fatalf("%d link ends, want 90", links)
	}
}

func TestMDNSOtherClusterNeverLinks(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	a := start(t, "blue", mdnsConfig("a"))
	b := start(t, "blue", mdnsConfig("b"))
	x := start(t, "green", mdnsConfig("x"))
	waitFor(t, "blue linked", 5*time.Second, func() bool { return settled(a, b) })
	// A green node joining later hears the blue announcements too.
	y := start(t, "green", mdnsConfig("y"))
	waitFor(t, "green linked", 5*time.Second, func() bool { return settled(x, y) })
	for _, n := range []*Node{a, b, x, y} {
		if got := len(n.Peers()); got != 1 {
			t.Fatalf("%s has %d peers: %v", n.ID(), got, peerIDs(n))
		}
	}
}

func TestStaticDiscoveryAndPeerExchange(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "st", testConfig("a"))
	b := start(t, "st", testConfig("b"))
	if _, err := b.Connect(context.Background(), addr(t, a)); err != nil {
		t.Fatal(err)
	}
	// c knows only a's address; peer exchange brings b.
	cfg := testConfig("c")
	cfg.Discovery = []discovery.Discoverer{&discovery.Static{Addrs: []string{addr(t, a)}}}
	c := start(t, "st", cfg)
	waitFor(t, "full mesh through one address", 5*time.Second, func() bool { return settled(a, b, c) })
}

// TestMDNSTwinFailsJoin: with only two nodes on the LAN, a second node
// with a running node's id fails Join within 2 s, by mDNS alone, with an
// error that says so; the first keeps running and a third node links to
// it, not to the twin.
func TestMDNSTwinFailsJoin(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	a := start(t, "twins", mdnsConfig("web-1"))
	began := time.Now()
	twin, err := mdnsConfig("web-1").Join(context.Background(), "twins")
	took := time.Since(began)
	if err == nil {
		twin.Close()
		t.Fatal("the twin joined")
	}
	if !errors.Is(err, ErrIDConflict) || !errors.Is(err, discovery.ErrIDConflict) || took > 2*time.Second {
		t.Fatalf("the twin's Join = %v after %v, want ErrIDConflict (by mDNS) within 2 s", err, took)
	}
	t.Logf("the twin's Join failed after %v: %v", took, err)
	c := start(t, "twins", mdnsConfig("z"))
	waitFor(t, "the third node linked to the first", 5*time.Second, func() bool { return settled(a, c) })
	if err := c.Send(context.Background(), "web-1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, a); m.From != "z" {
		t.Fatalf("a got %+v", m)
	}
}

// TestMDNSRandomIDJoinsAtOnce: Join with a random id (the default) does
// not wait for mDNS to claim it: a UUID cannot collide.
func TestMDNSRandomIDJoinsAtOnce(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	const probeRound = 750 * time.Millisecond // three probes 250 ms apart
	began := time.Now()
	start(t, "random", mdnsConfig(""))
	if took := time.Since(began); took >= probeRound {
		t.Errorf("Join with a random id took %v: it waited for a probe round (%v)", took, probeRound)
	}
}
