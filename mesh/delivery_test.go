package mesh

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
)

// killLink closes n's active link to the peer id, as a connection that
// breaks would; it returns the link's id, 0 when there was none.
func killLink(n *Node, id string) uint64 {
	n.mu.Lock()
	var l *link
	if p := n.peers[id]; p != nil {
		l = p.active
	}
	n.mu.Unlock()
	if l == nil {
		return 0
	}
	l.tl.Close()
	return l.tl.ID()
}

// unacked is how many messages n wrote to the peer id that it has not
// acknowledged.
func unacked(n *Node, id string) int {
	n.mu.Lock()
	p := n.peers[id]
	n.mu.Unlock()
	if p == nil {
		return 0
	}
	p.qmu.Lock()
	defer p.qmu.Unlock()
	return len(p.unacked)
}

// Links killed again and again, from either end, while messages flow both
// ways: every message Send accepted arrives exactly once, in order, and
// neither node sees the other go down.
func TestDeliveryAcrossLinkKills(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	linkPair(t, a, b)
	evA, evB := a.Events(ctx), b.Events(ctx)

	const total, kills = 10000, 100
	send := func(from *Node, to string) error {
		for i := range total {
			var msg [8]byte
			binary.BigEndian.PutUint64(msg[:], uint64(i))
			if err := from.Send(ctx, to, msg[:]); err != nil {
				return err
			}
		}
		return nil
	}
	var got atomic.Int64 // messages b received
	// The killer holds the gate to stop both receivers, so that the link
	// it kills holds messages not yet read (lost with it).
	var gate sync.RWMutex
	recv := func(n *Node) error {
		for want := range uint64(total) {
			if n == b {
				got.Store(int64(want))
			}
			gate.RLock()
			m, err := n.Receive(ctx)
			gate.RUnlock()
			if err != nil {
				return err
			}
			if got := binary.BigEndian.Uint64(m.Data); got != want {
				return fmt.Errorf("%s: got message %d, want %d", n.ID(), got, want)
			}
		}
		return nil
	}
	errs := make(chan error, 4)
	go func() { errs <- send(a, "b") }()
	go func() { errs <- send(b, "a") }()
	go func() { errs <- recv(a) }()
	go func() { errs <- recv(b) }()
	// A kill each time b has received another hundredth of the messages:
	// all of them while messages flow.
	killed, last := 0, uint64(0)
	for k := 0; killed < kills && ctx.Err() == nil; k++ {
		waitFor(t, "messages to flow", 10*time.Second, func() bool { return got.Load() >= int64(killed*total/kills) })
		waitFor(t, "a new link", 10*time.Second, func() bool {
			la, lb := activeLink(a, "b"), activeLink(b, "a")
			return la != 0 && la != last && la == lb
		})
		from, to := a, "b"
		if k%2 == 1 {
			from, to = b, "a"
		}
		gate.Lock()
		if got.Load() < total-total/kills {
			waitFor(t, "messages unacknowledged", 10*time.Second, func() bool { return unacked(a, "b") > 0 })
		}
		if id := killLink(from, to); id != 0 {
			killed, last = killed+1, id
		}
		gate.Unlock()
	}
	for range 4 {
		if err := <-errs; err != nil {
			for _, n := range []*Node{a, b} {
				t.Log(n.ID(), deliveryState(n))
			}
			t.Fatal(err)
		}
	}
	t.Logf("%d links killed during %d messages each way", killed, total)
	for _, ev := range []<-chan Event{evA, evB} {
		select {
		case e := <-ev:
			if e.Kind == PeerDown || e.Kind == PeerUp {
				t.Fatalf("%v of %s (%v) while the link was only made again", e.Kind, e.Peer, e.Err)
			}
		default:
		}
	}
}

// A peer that closes without a goodbye is down at once, not after the
// silent-peer bound: its address refuses the redial. Its PeerDown says how
// many messages it did not acknowledge.
func TestPeerGoneCountsUndelivered(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	cfg := testConfig("b")
	cfg.ReceiveBuffer = 10
	b := start(t, "c", cfg)
	ctx := context.Background()
	linkPair(t, a, b)
	// b never calls Receive: it takes 10 messages and no more.
	for i := range 50 {
		if err := a.Send(ctx, "b", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "10 acknowledged", 5*time.Second, func() bool {
		a.mu.Lock()
		p := a.peers["b"]
		a.mu.Unlock()
		p.qmu.Lock()
		defer p.qmu.Unlock()
		return p.acked == 10
	})
	ev := a.Events(ctx)
	b.Close()
	e := nextEvent(t, ev, PeerDown)
	if e.Peer != "b" || !errors.Is(e.Err, syscall.ECONNREFUSED) {
		t.Fatalf("PeerDown of %s with %v, want b's, refused", e.Peer, e.Err)
	}
	if e.Undelivered != 40 {
		t.Fatalf("PeerDown counts %d undelivered, want 40", e.Undelivered)
	}
}

// deliveryState describes n's delivery to and from each peer, for a
// failing test.
func deliveryState(n *Node) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := ""
	for _, p := range n.peers {
		p.qmu.Lock()
		p.in.mu.Lock()
		out += fmt.Sprintf("[%s active=%v queue=%d unacked=%d acked=%d writing=%v pending=%v turn=%v ready=%v out=%v | rNext=%d rAcked=%d]",
			p.id, p.active != nil, len(p.queue), len(p.unacked), p.acked, p.writing, p.pending, p.turn, p.ready, p.out != nil, p.in.next, p.in.acked)
		p.in.mu.Unlock()
		p.qmu.Unlock()
	}
	return out
}

// TestShutdownRightAfterSendWarnsOfNothing: a node that sends and shuts
// down at once (its peer's acknowledgement would come ackDelay later)
// learns in the goodbye's answer that the peer has the messages: it
// warns of no message undelivered, and the peer receives them all.
func TestShutdownRightAfterSendWarnsOfNothing(t *testing.T) {
	leakcheck.Goroutines(t)
	warns := &warnLog{}
	cfg := testConfig("a")
	cfg.Logger = slog.New(warns)
	a := start(t, "c", cfg)
	b := start(t, "c", testConfig("b"))
	ctx := context.Background()
	linkPair(t, a, b)
	for round := range 20 {
		if err := a.Send(ctx, "b", []byte{byte(round)}); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if w := warns.all(); len(w) > 0 {
		t.Errorf("a warned on its Shutdown: %q", w)
	}
	for round := range 20 {
		m, err := b.Receive(sctx)
		if err != nil || len(m.Data) != 1 || m.Data[0] != byte(round) {
			t.Fatalf("b's message %d: %v %v", round, m.Data, err)
		}
	}
}

// warnLog is a slog.Handler that keeps the messages of Warn and above.
type warnLog struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnLog) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool { msg += " " + a.String(); return true })
	w.msgs = append(w.msgs, msg)
	return nil
}
func (w *warnLog) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnLog) WithGroup(string) slog.Handler      { return w }
func (w *warnLog) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// TestGoodbyeIsPeerDownAtOnce: a peer that reads a node's goodbye shows
// the node down, its records freed, at once, and not once the node has
// said goodbye to every peer and closed its links: here the node still
// waits to write what it sent to a peer whose link has stalled.
func TestGoodbyeIsPeerDownAtOnce(t *testing.T) {
	leakcheck.Goroutines(t)
	patient := func(id string) Config {
		c := testConfig(id)
		c.KeepAliveInterval, c.WriteTimeout = time.Minute, time.Minute // the stalled link stays up
		return c
	}
	a := start(t, "c", patient("a"))
	b := start(t, "c", patient("b"))
	d := start(t, "c", patient("d"))
	ctx := context.Background()
	linkPair(t, a, b)
	px := newProxy(t, addr(t, d))
	if _, err := b.Connect(ctx, px.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	rec, err := b.Register(Service{Role: "web@1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see b's record", 5*time.Second, func() bool {
		rs, _ := a.Services("web")
		return len(rs) == 1 && rs[0].ID == rec.ID
	})
	ev := a.Events(ctx)

	px.stall()
	for range 20 { // 2 MB: past the 1 MiB yamux writes before the peer answers
		if err := b.Send(ctx, "d", make([]byte, 100<<10)); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Shutdown(sctx) }()
	e := nextEvent(t, ev, PeerDown)
	if e.Peer != "b" || e.Err != nil {
		t.Fatalf("a's PeerDown: %+v, want b's, with no error (a goodbye)", e)
	}
	waitFor(t, "a to free b's record", 5*time.Second, func() bool {
		rs, _ := a.Services("web")
		return len(rs) == 0
	})
	select {
	case err := <-done:
		t.Fatalf("b's Shutdown returned (%v) before a showed b gone; the test shows nothing", err)
	default:
	}
	px.resume()
	if err := <-done; err != nil {
		t.Fatalf("b's Shutdown: %v", err)
	}
}

// A write to a peer's message stream that fails while the link lives (the
// stream reset or closed alone) closes the link: the mesh makes it again,
// and what the peer had not received arrives once, in order. Left up, the link showed the peer linked while nothing more
// reached it. The failure is made here by closing this node's end of the
// stream under the writer.
func TestFailedWriteMakesTheLinkAgain(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	linkPair(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Send(ctx, "b", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, b); string(m.Data) != "0" {
		t.Fatalf("b got %q, want 0", m.Data)
	}
	a.mu.Lock()
	l := a.peers["b"].active
	a.mu.Unlock()
	l.out.Close()
	for i := 1; i <= 3; i++ {
		if err := a.Send(ctx, "b", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		m, err := b.Receive(ctx)
		if err != nil {
			t.Fatalf("message %d: %v (a's link to b: %d, was %d)", i, err, activeLink(a, "b"), l.tl.ID())
		}
		if string(m.Data) != strconv.Itoa(i) {
			t.Fatalf("b got %q, want %d", m.Data, i)
		}
	}
	if activeLink(a, "b") == l.tl.ID() {
		t.Fatal("the link whose stream failed is still a's link to b")
	}
}
