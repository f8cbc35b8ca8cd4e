package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/natstest"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// waitRemotes waits until n lists every node of nodes as a member of
// another site.
func waitRemotes(t *testing.T, n *Node, nodes ...*Node) {
	t.Helper()
	var want []string
	for _, o := range nodes {
		want = append(want, o.Site()+"/"+o.ID())
	}
	slices.Sort(want)
	waitFor(t, n.ID()+" lists "+strings.Join(want, " "), 10*time.Second, func() bool {
		got := remoteIDs(n)
		return len(got) == len(want) && slices.Equal(got, want)
	})
}

// receiveN receives n messages on node within d, each as "from:data".
func receiveN(t *testing.T, node *Node, n int, d time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []string
	for range n {
		m, err := node.Receive(ctx)
		if err != nil {
			t.Fatalf("%s: %d of %d messages, then %v", node.ID(), len(out), n, err)
		}
		out = append(out, m.From+":"+string(m.Data))
	}
	return out
}

// nothingMore checks that node receives nothing within d.
func nothingMore(t *testing.T, node *Node, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if m, err := node.Receive(ctx); err == nil {
		t.Fatalf("%s received %q from %s: one too many", node.ID(), m.Data, m.From)
	}
}

// TestSitesMessages: Send, SendMany and Broadcast reach the members of
// other sites over NATS, and those of the sender's site over their
// links: each message once, in order, with its sender; a Broadcast goes
// once on NATS for all the members of a site.
func TestSitesMessages(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	tap := srv.Tap(t)
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 2, urls)
	b := site(t, "c", "b", 2, urls)
	c := site(t, "c", "c", 1, urls)
	waitRemotes(t, a[0], slices.Concat(b, c)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// One way, in order, once.
	const n = 2000
	go func() {
		for i := range n {
			if err := a[0].Send(ctx, "b-1", fmt.Appendf(nil, "m%d", i)); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	for i, m := range receiveN(t, b[1], n, 20*time.Second) {
		if want := fmt.Sprintf("a-0:m%d", i); m != want {
			t.Fatalf("b-1's message %d: %q, want %q", i, m, want)
		}
	}
	// And back.
	if err := b[1].Send(ctx, "a-0", []byte("back")); err != nil {
		t.Fatal(err)
	}
	if got := receiveN(t, a[0], 1, 5*time.Second); got[0] != "b-1:back" {
		t.Fatalf("a-0 got %q", got)
	}

	// Broadcast: the site's peer over its link, the other sites over
	// NATS, once each.
	waitRemotes(t, a[1], slices.Concat(b, c)...)
	if err := a[1].Broadcast(ctx, []byte("to all")); err != nil {
		t.Fatal(err)
	}
	for _, nd := range []*Node{a[0], b[0], b[1], c[0]} {
		if got := receiveN(t, nd, 1, 5*time.Second); got[0] != "a-1:to all" {
			t.Fatalf("%s got %q", nd.ID(), got)
		}
	}
	// SendMany, to a peer, members of two sites and a stranger: all but
	// the stranger have it, and the error names it.
	err := a[1].SendMany(ctx, []string{"a-0", "b-0", "b-1", "c-0", "nobody"}, []byte("many"))
	if !errors.Is(err, ErrUnknownPeer) || !strings.Contains(err.Error(), `"nobody"`) {
		t.Fatalf("SendMany: %v", err)
	}
	for _, nd := range []*Node{a[0], b[0], b[1], c[0]} {
		if got := receiveN(t, nd, 1, 5*time.Second); got[0] != "a-1:many" {
			t.Fatalf("%s got %q", nd.ID(), got)
		}
	}
	for _, nd := range slices.Concat(a, b, c) {
		nothingMore(t, nd, 50*time.Millisecond)
	}
	// Each went on NATS once for site b (its subject), not once per
	// member of b, unless a-1 had to publish something again.
	count := func(subject, text string) int {
		k := 0
		for _, m := range tap() {
			if strings.HasPrefix(m, subject+" ") && strings.Contains(m, text) {
				k++
			}
		}
		return k
	}
	t.Logf("a-1 published again %d times", a[1].remotes.resent.Load())
	if a[1].remotes.resent.Load() == 0 {
		for _, text := range []string{"to all", "many"} {
			if k := count("tallship.c.msg.b", text); k != 1 {
				t.Errorf("%q went %d times on site b's subject", text, k)
			}
			if k := count("tallship.c.n.b-0.msg", text) + count("tallship.c.n.b-1.msg", text); k != 0 {
				t.Errorf("%q went %d times to b's members one by one", text, k)
			}
		}
		if k := count("tallship.c.n.a-0.msg", "to all") + count("tallship.c.msg.a", "to all"); k != 0 {
			t.Errorf("%q went %d times on NATS to a's own site", "to all", k)
		}
	}
	// Streams are LAN-only.
	if _, err := a[0].OpenStream(ctx, "b-0", "x"); !errors.Is(err, ErrRemotePeer) || !strings.Contains(err.Error(), `"b-0"`) {
		t.Fatalf("OpenStream to a member of another site: %v", err)
	}
	if _, err := a[0].OpenStream(ctx, "nobody", "x"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("OpenStream to nobody: %v", err)
	}
}
