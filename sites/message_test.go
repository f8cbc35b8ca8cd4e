package sites

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/natstest"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// receiveMessage returns b's next message within d, or nil.
func receiveMessage(b *Bus, d time.Duration) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	msg, _ := b.ReceiveMessage(ctx)
	return msg
}

// settleMessages sends from a to node (of bus b) until b hears: the
// messages' subscriptions are in place on the server.
func settleMessages(t *testing.T, a *Session, b *Bus, node string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := a.SendMessage(node, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if msg := receiveMessage(b, 20*time.Millisecond); string(msg) == "ping" {
			for receiveMessage(b, 20*time.Millisecond) != nil { // the other pings
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no message got through")
		}
	}
}

// TestBusMessages: the mesh's messages go to one node or to every node
// of a site, apart from the registry's; one sender's, to the node and to
// its site, come in the order sent; with a secret they are sealed, and a
// node with another secret hears none of them.
func TestBusMessages(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	spy, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	seen := make(chan *nats.Msg, 1000)
	if _, err := spy.ChanSubscribe(">", seen); err != nil {
		t.Fatal(err)
	}
	spy.Flush()
	sealed := func(c Config) Config { c.Secret = "s3cret"; return c }
	ab := dial(t, sealed(config("a", "sa", srv.URL())))
	bb := dial(t, sealed(config("b", "sb", srv.URL())))
	cb := dial(t, sealed(config("c", "sb", srv.URL())))
	other := config("o", "sb", srv.URL())
	other.Secret = "another"
	ob := dial(t, other)
	a := session(t, ab)
	settleMessages(t, a, bb, "b")
	settleMessages(t, a, cb, "c")

	// Interleaved to b alone and to site sb: b has them all in order, c
	// those to the site.
	for i := range 200 {
		msg := fmt.Appendf(nil, "m%d", i)
		if i%3 == 0 {
			err = a.PublishMessage("sb", msg)
		} else {
			err = a.SendMessage("b", msg)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		if got := receiveMessage(bb, 5*time.Second); string(got) != fmt.Sprintf("m%d", i) {
			t.Fatalf("b's message %d: %q", i, got)
		}
	}
	for i := 0; i < 200; i += 3 {
		if got := receiveMessage(cb, 5*time.Second); string(got) != fmt.Sprintf("m%d", i) {
			t.Fatalf("c's message %d: %q", i, got)
		}
	}
	if got := receiveMessage(ob, 100*time.Millisecond); got != nil {
		t.Fatalf("a node with another secret heard %q", got)
	}
	// Not the registry's: its Receive has none of them.
	if got := receive(session(t, bb), 50*time.Millisecond); got != nil {
		t.Fatalf("the registry read %q", got)
	}
	for len(seen) > 0 {
		if m := <-seen; bytes.Contains(m.Data, []byte("m1")) || bytes.Contains(m.Data, []byte("ping")) {
			t.Fatalf("the spy read %q on %s", m.Data, m.Subject)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := bb.ReceiveMessage(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReceiveMessage with a done ctx: %v", err)
	}
	bb.Close()
	if _, err := bb.ReceiveMessage(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReceiveMessage after Close: %v", err)
	}
}

// TestBusMessageInboxBounded: the mesh's messages that wait to be read
// are bounded in bytes; beyond it they are dropped, said at most once a
// second, and the bus goes on.
func TestBusMessageInboxBounded(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	old := messageInboxBytes
	t.Cleanup(func() { messageInboxBytes = old }) // after the buses close
	messageInboxBytes = 1 << 20
	srv := natstest.Start(t, natstest.Options{})
	logs := &logLines{}
	cfg := config("b", "sb", srv.URL())
	cfg.Logger = slog.New(logs)
	bb := dial(t, cfg)
	a := session(t, dial(t, config("a", "sa", srv.URL())))
	settleMessages(t, a, bb, "b")
	big := make([]byte, 100<<10)
	for i := range 30 { // 3 MB, unread
		big[0] = byte(i)
		if err := a.SendMessage("b", big); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "drops said", func() bool { return logs.count("WARN sites: NATS message dropped") == 1 })
	bb.msgs.mu.Lock()
	held := bb.msgs.bytes
	bb.msgs.mu.Unlock()
	if held > messageInboxBytes {
		t.Fatalf("%d bytes wait, bound %d", held, messageInboxBytes)
	}
	for i := range 10 {
		if msg := receiveMessage(bb, time.Second); len(msg) != len(big) || msg[0] != byte(i) {
			t.Fatalf("message %d: %d bytes", i, len(msg))
		}
	}
}
