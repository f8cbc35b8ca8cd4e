package mesh

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

func TestMain(m *testing.M) { netns.Main(m) }

// testConfig is LocalConfig without discovery, listening on loopback.
func testConfig(id string) Config {
	c := LocalConfig()
	c.ID = id
	c.Listen = "127.0.0.1:0"
	c.Discovery = NoDiscovery
	if os.Getenv("TALLSHIP_DEBUG") != "" {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return c
}

// start joins a node that the test closes when it ends.
func start(t *testing.T, cluster string, cfg Config) *Node {
	t.Helper()
	n, err := cfg.Join(context.Background(), cluster)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// addr returns a node's first address as a string for Connect.
func addr(t *testing.T, n *Node) string {
	t.Helper()
	as := n.Addrs()
	if len(as) == 0 {
		t.Fatalf("node %s has no address", n.ID())
	}
	return as[0].String()
}

// linkPair connects from to to and waits until the two are linked with
// each other, and only each other.
func linkPair(t *testing.T, from, to *Node) {
	t.Helper()
	if _, err := from.Connect(context.Background(), addr(t, to)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link", 5*time.Second, func() bool { return settled(from, to) })
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func peerIDs(n *Node) []string {
	var ids []string
	for _, p := range n.Peers() {
		ids = append(ids, p.ID)
	}
	return ids
}

// linkCount is the number of links a node holds, duplicates included.
func linkCount(n *Node) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.links)
}

// meshState describes who is linked to whom, for failure messages.
func meshState(nodes ...*Node) string {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "\n  %s: %d links, peers %v", n.ID(), linkCount(n), peerIDs(n))
	}
	return b.String()
}

// settled reports whether every node is linked, by exactly one link, to
// every other.
func settled(nodes ...*Node) bool {
	for _, n := range nodes {
		want := make([]string, 0, len(nodes)-1)
		for _, o := range nodes {
			if o != n {
				want = append(want, o.ID())
			}
		}
		slices.Sort(want)
		if !slices.Equal(peerIDs(n), want) || linkCount(n) != len(want) {
			return false
		}
	}
	return true
}

func receive(t *testing.T, n *Node) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := n.Receive(ctx)
	if err != nil {
		t.Fatalf("%s receive: %v", n.ID(), err)
	}
	return m
}

// nextEvent returns the next event of kind from ch, skipping others.
func nextEvent(t *testing.T, ch <-chan Event, kind EventKind) Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("event stream closed waiting for %v", kind)
			}
			if e.Kind == kind {
				return e
			}
		case <-timeout:
			t.Fatalf("no %v event", kind)
		}
	}
}

// proxy forwards TCP connections to target, keeping a copy of every byte
// that crosses it, until cut. While stalled it holds what crosses it, as
// a network that stops carrying would (TCP's retransmissions backing off
// on a lossy link), and lets it go on resume.
type proxy struct {
	ln net.Listener
	wg sync.WaitGroup

	mu      sync.Mutex
	target  string
	conns   []net.Conn
	seen    bytes.Buffer
	resumed chan struct{} // closed unless stalled
	closed  bool
	delay   time.Duration // each chunk's latency (setDelay)
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, resumed: make(chan struct{})}
	close(p.resumed)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			target := p.target
			p.mu.Unlock()
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.closed {
				// Accepted as the test ends: nodes still redial.
				p.mu.Unlock()
				c.Close()
				u.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); p.copy(u, c); u.Close() }()
			go func() { defer p.wg.Done(); p.copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.resume()
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.cut()
		p.wg.Wait()
	})
	return p
}

// copy forwards src to dst, keeping a copy, and holding each chunk while
// the proxy stalls.
func (p *proxy) copy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			p.mu.Lock()
			p.seen.Write(buf[:k])
			wait, delay := p.resumed, p.delay
			p.mu.Unlock()
			<-wait
			time.Sleep(delay) // the network's latency, one way
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// setTarget makes the proxy forward the connections it accepts from now
// on to target: for a node that advertises the proxy's address, and so
// starts after it.
func (p *proxy) setTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// stall holds what crosses the proxy from now on, until resume.
func (p *proxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if isClosed(p.resumed) {
		p.resumed = make(chan struct{})
	}
}

// setDelay makes each chunk that crosses the proxy from now on take d
// more, each way: a slow path, as across a WAN.
func (p *proxy) setDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !isClosed(p.resumed) {
		close(p.resumed)
	}
}

// captured returns every byte that crossed the proxy so far.
func (p *proxy) captured() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.seen.Bytes())
}

// cut closes every connection through the proxy.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
