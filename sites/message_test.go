package sites

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

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
	settleOn(t, func(m []byte) error { return a.SendMessage(node, m) }, func(d time.Duration) []byte { return receiveMessage(b, d) })
}

// TestBusMessages: the mesh's messages go to one node or to every node
// of a site, apart from the registry's; one sender's, to the node and to
// its site, come in the order sent; with a secret they are sealed, and a
// node with another secret hears none of them.
func TestBusMessages(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	tap := srv.Tap(t)
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
	var err error
	for i := range 200 {
		msg := fmt.Appendf(nil, "plaintext-%d", i)
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
		if got := receiveMessage(bb, 5*time.Second); string(got) != fmt.Sprintf("plaintext-%d", i) {
			t.Fatalf("b's message %d: %q", i, got)
		}
	}
	for i := 0; i < 200; i += 3 {
		if got := receiveMessage(cb, 5*time.Second); string(got) != fmt.Sprintf("plaintext-%d", i) {
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
	seen := tap()
	if len(seen) == 0 {
		t.Fatal("the tap saw nothing")
	}
	for _, m := range seen {
		if strings.Contains(m, "plaintext") || strings.Contains(m, "ping") {
			t.Fatalf("a NATS user read %q", m)
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
