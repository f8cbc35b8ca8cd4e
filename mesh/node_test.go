package mesh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/transport"
)

func TestConnectLinksBothWays(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	if _, err := b.Connect(context.Background(), addr(t, a)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one link each way", 5*time.Second, func() bool { return settled(a, b) })
	ctx := context.Background()
	if err := a.Send(ctx, "b", []byte("hello b")); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(ctx, "a", []byte("hello a")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, b); m.From != "a" || string(m.Data) != "hello b" {
		t.Fatalf("b got %+v", m)
	}
	if m := receive(t, a); m.From != "b" || string(m.Data) != "hello a" {
		t.Fatalf("a got %+v", m)
	}
}

// TestThreeNodesThenOneLeaves: a node that shuts down is seen leaving
// gracefully (PeerDown with no Err); one that closes, as a lost link;
// either way at once, and the others go on.
func TestThreeNodesThenOneLeaves(t *testing.T) {
	for _, how := range []string{"Shutdown", "Close"} {
		t.Run(how, func(t *testing.T) { threeNodesThenOneLeaves(t, how) })
	}
}

func threeNodesThenOneLeaves(t *testing.T, how string) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	c := start(t, "c", testConfig("c"))
	ctx := context.Background()
	// c knows only b; peer exchange completes the mesh.
	if _, err := b.Connect(ctx, addr(t, a)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(ctx, addr(t, b)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "full mesh of three", 5*time.Second, func() bool { return settled(a, b, c) })

	evA, evB := a.Events(ctx), b.Events(ctx)
	closed := time.Now()
	if how == "Close" {
		c.Close()
	} else if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, ev := range []<-chan Event{evA, evB} {
		e := nextEvent(t, ev, PeerDown)
		if e.Peer != "c" || (e.Err == nil) != (how == "Shutdown") {
			t.Fatalf("event %+v after c's %s, want a peer-down of c with an Err only after Close", e, how)
		}
		t.Logf("peer-down seen %v after %s began", time.Since(closed), how)
		if d := time.Since(closed); d > time.Second {
			t.Errorf("peer-down seen after %v", d)
		}
	}
	waitFor(t, "two nodes left", 5*time.Second, func() bool { return settled(a, b) })
	if err := a.Send(ctx, "b", []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, b); string(m.Data) != "still here" {
		t.Fatalf("got %q", m.Data)
	}
}

func TestDedupByteOrderedIDs(t *testing.T) {
	leakcheck.Goroutines(t)
	x := start(t, "c", testConfig("0A0"))
	y := start(t, "c", testConfig("00A"))
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); x.Connect(ctx, addr(t, y)) }()
	go func() { defer wg.Done(); y.Connect(ctx, addr(t, x)) }()
	wg.Wait()
	waitFor(t, "exactly one link", 5*time.Second, func() bool { return settled(x, y) })
	// The survivor is the link dialed by the lower id, "00A".
	y.mu.Lock()
	kept := y.peers["0A0"].active.tl
	y.mu.Unlock()
	if kept.Dialer().ID != "00A" {
		t.Fatalf("kept the link dialed by %q, want 00A", kept.Dialer().ID)
	}
}

// TestSimultaneousDialsLoseNothing dials both ways at once, over and over,
// while 100 ordered round trips run: every ping and pong arrives once.
func TestSimultaneousDialsLoseNothing(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Connect(ctx, addr(t, b)); err != nil {
		t.Fatal(err)
	}
	stopDials := make(chan struct{})
	var dials sync.WaitGroup
	for i := 0; i < 5; i++ {
		dials.Add(2)
		go func() { defer dials.Done(); a.dial(ctx, b.Addrs()[0]) }()
		go func() { defer dials.Done(); b.dial(ctx, a.Addrs()[0]) }()
	}
	go func() {
		// Echo every ping back.
		for {
			m, err := b.Receive(ctx)
			if err != nil {
				return
			}
			if err := b.Send(ctx, m.From, m.Data); err != nil {
				return
			}
		}
	}()
	for i := 0; i < 100; i++ {
		if i == 50 {
			dials.Wait()
			close(stopDials)
			for j := 0; j < 3; j++ {
				dials.Add(2)
				go func() { defer dials.Done(); a.dial(ctx, b.Addrs()[0]) }()
				go func() { defer dials.Done(); b.dial(ctx, a.Addrs()[0]) }()
			}
		}
		want := fmt.Sprintf("ping %d", i)
		if err := a.Send(ctx, "b", []byte(want)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		m, err := a.Receive(ctx)
		if err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		if string(m.Data) != want {
			t.Fatalf("round trip %d: got %q", i, m.Data)
		}
	}
	dials.Wait()
	waitFor(t, "one link", 10*time.Second, func() bool { return settled(a, b) })
	select {
	case m := <-a.recv:
		t.Fatalf("extra message %q", m.Data)
	default:
	}
}

// TestOrderAcrossDuplicateLinks sends numbered messages while duplicate
// links come and go: they arrive in order, none lost. Streamed, most go
// through the peer's writer goroutine; one at a time (each answered before
// the next is sent), each Send writes its message itself.
func TestOrderAcrossDuplicateLinks(t *testing.T) {
	t.Run("streamed", func(t *testing.T) { orderAcrossDuplicateLinks(t, false) })
	t.Run("one at a time", func(t *testing.T) {
		writeNowAlways(t)
		orderAcrossDuplicateLinks(t, true)
	})
}

func orderAcrossDuplicateLinks(t *testing.T, lockstep bool) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.Connect(ctx, addr(t, a)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link", 5*time.Second, func() bool { return settled(a, b) })
	const total = 2000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; i < total; i++ {
			if i%200 == 0 {
				go a.dial(ctx, b.Addrs()[0])
				go b.dial(ctx, a.Addrs()[0])
			}
			if err := a.Send(ctx, "b", []byte(fmt.Sprint(i))); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			if !lockstep {
				continue
			}
			if m, err := a.Receive(ctx); err != nil || string(m.Data) != fmt.Sprint(i) {
				t.Errorf("answer to %d: %q, %v", i, m.Data, err)
				return
			}
		}
	}()
	for i := 0; i < total; i++ {
		m, err := b.Receive(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", i, err)
		}
		if string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Data)
		}
		if lockstep {
			if err := b.Send(ctx, "a", m.Data); err != nil {
				t.Fatalf("answer %d: %v", i, err)
			}
		}
	}
	<-sent
	waitFor(t, "one link", 10*time.Second, func() bool { return settled(a, b) })
}

// writeNowAlways makes every Send that finds its peer idle write at once,
// for the rest of t.
func writeNowAlways(t *testing.T) {
	gap := writeNowGap
	writeNowGap = 0
	t.Cleanup(func() { writeNowGap = gap })
}

// TestSendToPeerThatDoesNotRead: a peer that stops reading holds Send
// back only once its stream's window and the send queue are full, and
// then only until Send's context ends; nothing sent is lost.
func TestSendToPeerThatDoesNotRead(t *testing.T) {
	leakcheck.Goroutines(t)
	writeNowAlways(t)
	cfg := testConfig("a")
	cfg.SendQueueBytes = 128 << 10
	a := start(t, "c", cfg)
	cfg = testConfig("b")
	cfg.ReceiveBuffer = 1
	b := start(t, "c", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.Connect(ctx, addr(t, a)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link", 5*time.Second, func() bool { return settled(a, b) })

	msg := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 32<<10) }
	sent := make(chan int, 1)
	go func() {
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			err := a.Send(ctx, "b", msg(i))
			cancel()
			if err != nil {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("send %d: %v", i, err)
				}
				sent <- i
				return
			}
		}
	}()
	var n int
	select {
	case n = <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("Send to a peer that does not read blocked past its context")
	}
	t.Logf("Send waited after %d messages", n)
	// The stream's window (512 KiB) and the queue (128 KiB) hold 20
	// messages; what the peer buffers adds some.
	if n < 20 || n > 1000 {
		t.Fatalf("Send waited after %d messages of 32 KiB", n)
	}
	for i := range n {
		if m := receive(t, b); !bytes.Equal(m.Data, msg(i)) {
			t.Fatalf("message %d: %d bytes of %d", i, len(m.Data), m.Data[0])
		}
	}
	ctx2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if m, err := b.Receive(ctx2); err == nil {
		t.Fatalf("got a message %d that Send gave up on", m.Data[0])
	}
}

func TestKeptPeerReconnects(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	px := newProxy(t, addr(t, b))
	ctx := context.Background()
	ev := a.Events(ctx)
	peer, err := a.Connect(ctx, px.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if peer.ID != "b" || !peer.Kept {
		t.Fatalf("peer = %+v", peer)
	}
	nextEvent(t, ev, PeerSynced)
	first := activeLink(a, "b")
	px.cut()
	// The link is made again silently: no PeerDown, and a message sent
	// meanwhile arrives.
	if err := a.Send(ctx, "b", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, b); string(m.Data) != "again" {
		t.Fatalf("got %q", m.Data)
	}
	waitFor(t, "a new link", 5*time.Second, func() bool { l := activeLink(a, "b"); return l != 0 && l != first })
	select {
	case e := <-ev:
		t.Fatalf("event %v of %s (err %v) for a link made again", e.Kind, e.Peer, e.Err)
	default:
	}
	if err := a.Disconnect(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "disconnected", 5*time.Second, func() bool { return len(a.Peers()) == 0 })
}

// activeLink is the id of n's active link to the peer id, 0 for none.
func activeLink(n *Node, id string) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.peers[id]; p != nil && p.active != nil {
		return p.active.tl.ID()
	}
	return 0
}

func TestAddrsFollowLifecycle(t *testing.T) {
	leakcheck.Goroutines(t)
	n, err := New("c", testConfig("a"))
	if err != nil {
		t.Fatal(err)
	}
	if as := n.Addrs(); len(as) != 0 {
		t.Fatalf("before start: %v", as)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	as := n.Addrs()
	if len(as) == 0 || as[0].Port() == 0 || !as[0].Addr().IsValid() {
		t.Fatalf("after start: %v", as)
	}
	c, err := net.Dial("tcp", as[0].String())
	if err != nil {
		t.Fatalf("address %v does not accept: %v", as[0], err)
	}
	c.Close()
	if err := n.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second start: %v", err)
	}
	n.Close()
	if as := n.Addrs(); len(as) != 0 {
		t.Fatalf("after close: %v", as)
	}
}

func TestCloseIsCleanAndIdempotent(t *testing.T) {
	t.Run("no peers", func(t *testing.T) {
		leakcheck.Goroutines(t)
		n := start(t, "c", testConfig("a"))
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("twice", func(t *testing.T) {
		leakcheck.Goroutines(t)
		a := start(t, "c", testConfig("a"))
		b := start(t, "c", testConfig("b"))
		if _, err := a.Connect(context.Background(), addr(t, b)); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := a.Close(); err != nil {
			t.Fatalf("Close again: %v", err)
		}
		if _, err := a.Receive(context.Background()); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("receive after close: %v", err)
		}
		if err := a.Send(context.Background(), "b", nil); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("send after close: %v", err)
		}
	})
	t.Run("right after join, with mDNS default", func(t *testing.T) {
		netns.Require(t) // mDNS: only inside the private namespace
		leakcheck.Goroutines(t)
		cfg := testConfig("a")
		cfg.Discovery = nil
		n, err := cfg.Join(context.Background(), "c")
		if err != nil {
			t.Fatal(err)
		}
		n.Close()
	})
}

func TestSendErrorsAndLimits(t *testing.T) {
	leakcheck.Goroutines(t)
	cfg := testConfig("hub")
	cfg.MaxMessageSize = 64 << 10
	hub := start(t, "c", cfg)
	ctx := context.Background()
	var spokes []*Node
	for _, id := range []string{"s1", "s2", "s3"} {
		c := testConfig(id)
		c.MaxMessageSize = 64 << 10
		s := start(t, "c", c)
		if _, err := s.Connect(ctx, addr(t, hub)); err != nil {
			t.Fatal(err)
		}
		spokes = append(spokes, s)
	}
	waitFor(t, "hub linked to 3", 5*time.Second, func() bool { return len(hub.Peers()) == 3 })

	err := hub.Send(ctx, "nobody", []byte("x"))
	if !errors.Is(err, ErrUnknownPeer) || !strings.Contains(err.Error(), "nobody") {
		t.Fatalf("send to unknown: %v", err)
	}
	if err := hub.Broadcast(ctx, []byte("all")); err != nil {
		t.Fatal(err)
	}
	max := bytes.Repeat([]byte{1}, 64<<10)
	if err := hub.Send(ctx, "s1", max); err != nil {
		t.Fatalf("max size: %v", err)
	}
	if err := hub.Send(ctx, "s1", append(max, 1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("max+1: %v", err)
	}
	for _, s := range spokes {
		if m := receive(t, s); m.From != "hub" || string(m.Data) != "all" {
			t.Fatalf("%s got %+v", s.ID(), m)
		}
	}
	if m := receive(t, spokes[0]); !bytes.Equal(m.Data, max) {
		t.Fatalf("max-size message: %d bytes", len(m.Data))
	}
	for _, s := range spokes {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		m, err := s.Receive(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s got a second message %q", s.ID(), m.Data)
		}
	}
}

func TestStreamWrittenAtOnce(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	ctx := context.Background()
	if _, err := a.Connect(ctx, addr(t, b)); err != nil {
		t.Fatal(err)
	}
	ln, err := b.Listen("blob")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := b.Listen("blob"); !errors.Is(err, ErrProtocolInUse) {
		t.Fatalf("second listen: %v", err)
	}
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i*31 + i>>8)
	}
	errc := make(chan error, 1)
	go func() {
		s, err := a.OpenStream(ctx, "b", "blob")
		if err != nil {
			errc <- err
			return
		}
		_, err = s.Write(payload)
		s.Close()
		errc <- err
	}()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.RemoteAddr().String() != "a" {
		t.Fatalf("remote addr %v, want a", s.RemoteAddr())
	}
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("stream corrupted: %d bytes", len(got))
	}
}

func TestRefusedLinks(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	other := start(t, "other", testConfig("x"))
	ctx := context.Background()
	if _, err := a.Connect(ctx, addr(t, other)); !errors.Is(err, transport.ErrWrongCluster) {
		t.Fatalf("wrong cluster: %v", err)
	}
	if _, err := a.Connect(ctx, addr(t, a)); !errors.Is(err, transport.ErrSelfLink) {
		t.Fatalf("self: %v", err)
	}
	if len(a.Peers()) != 0 || len(other.Peers()) != 0 {
		t.Fatalf("peers: %v, %v", a.Peers(), other.Peers())
	}
}

func TestSameIDTwiceIsRefused(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	first := start(t, "c", testConfig("x"))
	if _, err := first.Connect(context.Background(), addr(t, a)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link", 5*time.Second, func() bool { return settled(a, first) })
	second := start(t, "c", testConfig("x"))
	ev := second.Events(context.Background())
	_, err := second.Connect(context.Background(), addr(t, a))
	if !errors.Is(err, transport.ErrDuplicateID) {
		t.Fatalf("second node with the same id: err = %v, want ErrDuplicateID", err)
	}
	if e := nextEvent(t, ev, IDConflict); !errors.Is(e.Err, transport.ErrDuplicateID) {
		t.Fatalf("event %+v", e)
	}
	// The first is unaffected.
	if err := a.Send(context.Background(), "x", []byte("still you")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, first); string(m.Data) != "still you" {
		t.Fatalf("got %q", m.Data)
	}
	// A restart (the first run gone) is not a conflict.
	first.Close()
	waitFor(t, "restart accepted", 5*time.Second, func() bool {
		_, err := second.Connect(context.Background(), addr(t, a))
		return err == nil
	})
}

// TestNoDialWhilePeerDialsIn: a node that learns of a lower-id peer waits
// FallbackDelay for that peer to dial it, and then does not dial while the
// peer's handshake with it is under way (on a busy machine the acceptor
// finishes well after the dialer): the pair gets one link, not two.
func TestNoDialWhilePeerDialsIn(t *testing.T) {
	leakcheck.Goroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := start(t, "c", testConfig("a"))
	cfg := testConfig("b")
	cfg.FallbackDelay, cfg.DialBackoff = 10*time.Millisecond, 5*time.Millisecond
	b := start(t, "c", cfg)
	ev := a.Events(ctx)

	// a dials b and stalls before its verdict: b has read a's hello.
	conn, err := net.Dial("tcp", addr(t, b))
	if err != nil {
		t.Fatal(err)
	}
	stalled := &stallSecondWrite{Conn: conn, release: make(chan struct{})}
	handshook := make(chan error, 1)
	go func() {
		// The dialer cannot tell that its verdict did not go out: it may
		// return a link, over a closed connection.
		l, err := transport.Client(ctx, stalled, a.hello(1), a.tcfg, nil)
		if err == nil {
			l.Close()
		}
		handshook <- err
	}()
	waitFor(t, "b has a's hello", 5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.inbound["a"] > 0
	})
	b.consider("a", a.Addrs(), true) // as a discoverer would report it
	waitFor(t, "b to put its dial off 3 times", 5*time.Second, func() bool { return b.deferred.Load() >= 3 })
	if ids := peerIDs(a); len(ids) != 0 {
		t.Fatalf("b dialed a while a's dial to b was under way: a has %v", ids)
	}
	// a's dial fails; now b dials.
	released := time.Now()
	close(stalled.release)
	conn.Close()
	<-handshook
	if e := nextEvent(t, ev, PeerUp); e.Peer != "b" || e.Time.Before(released) {
		t.Fatalf("a: %+v, want b up after %v", e, released.Format(time.StampMicro))
	}
}

// TestDialYieldsToLowerPeersDial: a node whose own dial to a lower-id
// peer is under way (here: stuck at an address that answers nothing)
// ends it when that peer's dial to it passes admission: of the two links
// both ends would keep the lower id's, so the pair gets one link, and the
// node's dial is not left to run to its timeout.
func TestDialYieldsToLowerPeersDial(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	cfg := testConfig("b")
	cfg.HandshakeTimeout = 30 * time.Second // a dial that is not ended stays under way
	b := start(t, "c", cfg)
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := mute.Accept(); err == nil {
			accepted <- c
		}
	}()
	// b hears of a at an address where nothing answers, and dials it.
	b.consider("a", []netip.AddrPort{netip.MustParseAddrPort(mute.Addr().String())}, false)
	var stuck net.Conn
	select {
	case stuck = <-accepted:
		defer stuck.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("b did not dial a")
	}
	// a dials b: b's dial yields.
	a.consider("b", b.Addrs(), true)
	waitFor(t, "a and b linked", 10*time.Second, func() bool { return settled(a, b) })
	// b's hello, then the end of its dial (its close), not the deadline.
	stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, stuck); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("b's dial to a was left running after a's dial to b was admitted")
	}
	waitFor(t, "b's dial to end", 10*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		t := b.targets["a"]
		return t == nil || !t.dialing
	})
	if made := b.Stats().LinksMade; made != 1 {
		t.Errorf("b took in %d links, want 1", made)
	}
}

// stallSecondWrite is a conn whose second write waits for release, then
// fails: a dialer stalled after its hello.
type stallSecondWrite struct {
	net.Conn
	writes  int
	release chan struct{}
}

func (c *stallSecondWrite) Write(p []byte) (int, error) {
	if c.writes++; c.writes == 2 {
		<-c.release
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// TestShutdownDeliversWhatSendQueued: every message Send accepted before
// Shutdown reaches the peer, in order, before the node is gone; Close
// after Shutdown returns nil at once.
func TestShutdownDeliversWhatSendQueued(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := a.Connect(ctx, addr(t, b)); err != nil {
		t.Fatal(err)
	}
	const count = 3000
	msg := make([]byte, 1024)
	got := make(chan error, 1)
	go func() {
		for i := range count {
			m, err := b.Receive(ctx)
			if err != nil {
				got <- fmt.Errorf("after %d messages: %w", i, err)
				return
			}
			if seq := binary.BigEndian.Uint32(m.Data); seq != uint32(i) {
				got <- fmt.Errorf("message %d arrived as number %d", seq, i)
				return
			}
		}
		got <- nil
	}()
	for i := range count {
		binary.BigEndian.PutUint32(msg, uint32(i))
		if err := a.Send(ctx, "b", msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("b after a's Shutdown: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close after Shutdown: %v", err)
	}
}

// TestShutdownBoundedByContext: a peer that stops reading holds a
// graceful leave up only until ctx ends; Shutdown then closes the node
// all the same and says why.
func TestShutdownBoundedByContext(t *testing.T) {
	leakcheck.Goroutines(t)
	cfg := testConfig("b")
	cfg.ReceiveBuffer = 1
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", cfg) // never calls Receive
	ctx := context.Background()
	if _, err := a.Connect(ctx, addr(t, b)); err != nil {
		t.Fatal(err)
	}
	// More than b's receive buffer and its link's windows hold.
	msg := make([]byte, 64<<10)
	for range 200 {
		if err := a.Send(ctx, "b", msg); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := a.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a peer that does not read = %v, want context.DeadlineExceeded", err)
	}
	if err := a.Send(ctx, "b", nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Shutdown: %v, want net.ErrClosed", err)
	}
}
