package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/natstest"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/registry"
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
	// Whatever goes again (to one member, when one did not acknowledge
	// in time) goes in envelopes to that member; the first publication
	// is once on the site's subject, and nothing goes on NATS to a's own
	// site.
	resent := a[1].remotes.resent.Load()
	t.Logf("a-1 published again %d times", resent)
	for _, text := range []string{"to all", "many"} {
		if k := count("tallship.c.msg.b", text); k != 1 && (resent == 0 || k == 0) {
			t.Errorf("%q went %d times on site b's subject", text, k)
		}
		if k := count("tallship.c.n.b-0.msg", text) + count("tallship.c.n.b-1.msg", text); k != 0 && resent == 0 {
			t.Errorf("%q went %d times to b's members one by one", text, k)
		}
	}
	if k := count("tallship.c.n.a-0.msg", "to all") + count("tallship.c.msg.a", "to all"); k != 0 {
		t.Errorf("%q went %d times on NATS to a's own site", "to all", k)
	}
	// Streams are LAN-only.
	if _, err := a[0].OpenStream(ctx, "b-0", "x"); !errors.Is(err, ErrRemotePeer) || !strings.Contains(err.Error(), `"b-0"`) {
		t.Fatalf("OpenStream to a member of another site: %v", err)
	}
	if _, err := a[0].OpenStream(ctx, "nobody", "x"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("OpenStream to nobody: %v", err)
	}
}

// collector receives every message of node in the background, until the
// test ends.
type collector struct {
	mu   sync.Mutex
	got  []string
	more chan struct{}
}

func collect(t *testing.T, node *Node) *collector {
	t.Helper()
	c := &collector{more: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := node.Receive(ctx)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.got = append(c.got, m.From+":"+string(m.Data))
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// wait waits until c has n messages, and returns them.
func (c *collector) wait(t *testing.T, n int, d time.Duration) []string {
	t.Helper()
	timeout := time.After(d)
	for {
		c.mu.Lock()
		got := slices.Clone(c.got)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.more:
		case <-timeout:
			t.Fatalf("%d of %d messages after %v", len(got), n, d)
		}
	}
}

// checkRun checks that got is from's messages m0, m1, … m(n-1), once
// each and in order.
func checkRun(t *testing.T, got []string, from string, n int) {
	t.Helper()
	checkRunFrom(t, got, from, 0, n)
}

// checkRunFrom is checkRun of from's messages m[first] to m[first+n-1].
func checkRunFrom(t *testing.T, got []string, from string, first, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if want := fmt.Sprintf("%s:m%d", from, first+i); m != want {
			t.Fatalf("message %d is %q, want %q (all: %q)", i, m, want, got)
		}
	}
}

// behindProxy starts one node of site a on srv and one of site b on srv
// through a proxy (b's options opts), and waits until each lists the
// other as a member.
func behindProxy(t *testing.T, srv *natstest.Server, opts ...func(*Config)) (a, b *Node, p *proxy) {
	t.Helper()
	p = newProxy(t, strings.TrimPrefix(srv.URL(), "nats://"))
	as := site(t, "c", "a", 1, []string{srv.URL()})
	bs := site(t, "c", "b", 1, []string{"nats://" + p.ln.Addr().String()}, opts...)
	waitRemotes(t, as[0], bs...)
	waitRemotes(t, bs[0], as...)
	return as[0], bs[0], p
}

// sendRun sends from's messages m[from] to m[to-1] to id.
func sendRun(t *testing.T, n *Node, id string, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := from; i < to; i++ {
		if err := n.Send(ctx, id, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatalf("send m%d: %v", i, err)
		}
	}
}

// noRemoteDown checks that ch holds no RemoteDown event.
func noRemoteDown(t *testing.T, ch <-chan Event) {
	t.Helper()
	for {
		select {
		case ev := <-ch:
			if ev.Kind == RemoteDown {
				t.Fatalf("%s went down: %v", ev.Peer, ev.Err)
			}
		default:
			return
		}
	}
}

// TestSitesMessagesOutage: messages cross sites once and in order
// across a NATS outage: those sent while NATS is out arrive once it is
// back, and those NATS lost when it went go again.
func TestSitesMessagesOutage(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	long := func(c *Config) { c.Heartbeat, c.Lifetime = 200*time.Millisecond, 10*time.Second } // members outlive the outage
	a := site(t, "c", "a", 1, urls, long)
	b := site(t, "c", "b", 1, urls, long)
	waitRemotes(t, a[0], b...)
	waitRemotes(t, b[0], a...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := a[0].Events(ctx)
	got := collect(t, b[0])

	sendRun(t, a[0], "b-0", 0, 500)
	srv.Stop()
	nextEvent(t, events, NATSDown)
	sendRun(t, a[0], "b-0", 500, 1000) // queued while NATS is out
	srv.Restart()
	nextEvent(t, events, NATSUp)
	sendRun(t, a[0], "b-0", 1000, 1500)
	checkRun(t, got.wait(t, 1500, 20*time.Second), "a-0", 1500)
	nothingMore(t, b[0], 100*time.Millisecond)
	checkRun(t, got.wait(t, 1500, time.Second), "a-0", 1500)
	noRemoteDown(t, events)
	t.Logf("a-0 published again %d times", a[0].remotes.resent.Load())
}

// TestSitesMessagesReceiverReconnects: the receiver's connection to NATS
// breaks while the sender's does not: what NATS could not deliver
// meanwhile goes again when no acknowledgement comes, once and in order.
func TestSitesMessagesReceiverReconnects(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	long := func(c *Config) { c.Heartbeat, c.Lifetime = 200*time.Millisecond, 10*time.Second }
	a := site(t, "c", "a", 1, []string{srv.URL()}, long)
	p := newProxy(t, strings.TrimPrefix(srv.URL(), "nats://"))
	b := site(t, "c", "b", 1, []string{"nats://" + p.ln.Addr().String()}, long)
	waitRemotes(t, a[0], b...)
	waitRemotes(t, b[0], a...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := a[0].Events(ctx)
	evB := b[0].Events(ctx)
	got := collect(t, b[0])

	sendRun(t, a[0], "b-0", 0, 300)
	got.wait(t, 300, 10*time.Second)
	resent := a[0].remotes.resent.Load()
	p.cut() // b's connection breaks; it connects again through p
	sendRun(t, a[0], "b-0", 300, 600)
	nextEvent(t, evB, NATSDown)
	sendRun(t, a[0], "b-0", 600, 900)
	nextEvent(t, evB, NATSUp)
	sendRun(t, a[0], "b-0", 900, 1200)
	checkRun(t, got.wait(t, 1200, 20*time.Second), "a-0", 1200)
	nothingMore(t, b[0], 100*time.Millisecond)
	noRemoteDown(t, events)
	if a[0].remotes.resent.Load() == resent {
		t.Error("a-0 published nothing again: NATS lost nothing while b was away?")
	}
}

// remoteUnacked is how many messages n holds for member id that it did
// not acknowledge.
func remoteUnacked(n *Node, id string) int {
	s := n.remotes
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.byID[id]; r != nil {
		return countMessages(r.unacked)
	}
	return -1
}

// TestSitesMessagesMemberGoes: a member of another site that goes silent
// (killed, or cut off from NATS) is RemoteDown after its lifetime, with
// the messages it did not acknowledge counted; one that leaves
// (Shutdown) has what was queued for it delivered first, and is
// RemoteDown at once with nothing undelivered.
func TestSitesMessagesMemberGoes(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	a := site(t, "c", "a", 1, []string{srv.URL()})
	p := newProxy(t, strings.TrimPrefix(srv.URL(), "nats://"))
	short := func(c *Config) { c.Heartbeat, c.Lifetime = 100*time.Millisecond, 600*time.Millisecond }
	b := site(t, "c", "b", 1, []string{"nats://" + p.ln.Addr().String()}, short)
	c := site(t, "c", "c", 1, []string{srv.URL()})
	waitRemotes(t, a[0], slices.Concat(b, c)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events := a[0].Events(ctx)

	sendRun(t, a[0], "b-0", 0, 3)
	receiveN(t, b[0], 3, 5*time.Second)
	waitFor(t, "b-0 acknowledged", 5*time.Second, func() bool { return remoteUnacked(a[0], "b-0") == 0 })
	p.stall() // b-0 is silent from now on, as if killed
	at := time.Now()
	sendRun(t, a[0], "b-0", 3, 8)
	ev := nextEvent(t, events, RemoteDown)
	d := time.Since(at)
	if ev.Peer != "b-0" || ev.Site != "b" || ev.Undelivered != 5 || ev.Err == nil {
		t.Fatalf("RemoteDown %+v (err %v)", ev, ev.Err)
	}
	t.Logf("silent member down after %v (lifetime 600 ms), %d messages undelivered: %v", d, ev.Undelivered, ev.Err)
	if err := a[0].Send(ctx, "b-0", []byte("late")); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Send to the member gone: %v", err)
	}
	if slices.Contains(remoteIDs(a[0]), "b/b-0") {
		t.Fatal("a-0 still lists b-0")
	}

	// c-0 sends, then leaves: a-0 has every message (Shutdown waits for
	// its acknowledgements), then c-0's RemoteDown, without error.
	got := collect(t, a[0])
	sendRun(t, c[0], "a-0", 0, 200)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := c[0].Shutdown(sctx)
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	checkRun(t, got.wait(t, 200, 5*time.Second), "c-0", 200)
	for ev := nextEvent(t, events, RemoteDown); ev.Peer != "c-0" || ev.Err != nil || ev.Undelivered != 0; ev = nextEvent(t, events, RemoteDown) {
		if ev.Peer == "c-0" {
			t.Fatalf("c-0's RemoteDown: %+v", ev)
		}
	}
}

// TestSitesMessagesSecret: with a cluster secret, a NATS user reads no
// message, and what it publishes or publishes again (a replay of what it
// recorded) delivers nothing; a node with another secret, or of another
// cluster, neither hears the cluster's messages nor reaches its members.
func TestSitesMessagesSecret(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	tap := srv.Tap(t)
	urls := []string{srv.URL()}
	secret := func(s string) func(*Config) { return func(c *Config) { c.Secret = s } }
	logs := []*warnLog{{}, {}}
	logTo := func(l *warnLog) func(*Config) { return func(c *Config) { c.Logger = slog.New(l) } }
	a := site(t, "c", "a", 1, urls, secret("one"), logTo(logs[0]))
	b := site(t, "c", "b", 1, urls, secret("one"), logTo(logs[1]))
	x := site(t, "c", "x", 1, urls, secret("two"))
	z := site(t, "d", "z", 1, urls, secret("one"))
	waitRemotes(t, a[0], b...)
	waitRemotes(t, b[0], a...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if err := a[0].Broadcast(ctx, []byte("the secret text")); err != nil {
		t.Fatal(err)
	}
	if got := receiveN(t, b[0], 1, 5*time.Second); got[0] != "a-0:the secret text" {
		t.Fatalf("b-0 got %q", got)
	}
	for _, n := range []*Node{x[0], z[0]} {
		if len(n.Remotes()) != 0 {
			t.Fatalf("%s lists %v", n.ID(), n.Remotes())
		}
		if err := n.Send(ctx, "b-0", []byte("intruder")); !errors.Is(err, ErrUnknownPeer) {
			t.Fatalf("%s's Send to b-0: %v", n.ID(), err)
		}
		if err := n.Broadcast(ctx, []byte("intruder")); !errors.Is(err, ErrNoPeers) {
			t.Fatalf("%s's Broadcast: %v", n.ID(), err)
		}
		nothingMore(t, n, 50*time.Millisecond)
	}
	seen := tap()
	for _, m := range seen {
		if strings.Contains(m, "secret text") {
			t.Fatalf("a NATS user read %q", m)
		}
	}
	// A NATS user publishes everything it saw again, and garbage on the
	// same subjects.
	spy, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	messages := 0
	for _, m := range seen {
		subject, data, _ := strings.Cut(m, " ")
		spy.Publish(subject, []byte(data))
		spy.Publish(subject, []byte("garbage"))
		if strings.HasSuffix(subject, ".msg") || strings.Contains(subject, ".msg.") {
			messages++
		}
	}
	if messages == 0 {
		t.Fatal("the tap saw no message on the messages' subjects")
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := a[0].Send(ctx, "b-0", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	if got := receiveN(t, b[0], 1, 5*time.Second); got[0] != "a-0:marker" {
		t.Fatalf("b-0 got %q after the replays, not the marker", got)
	}
	nothingMore(t, b[0], 50*time.Millisecond)
	// A node's own messages published again are no node of its id: once
	// each has a record of the other's registered after the replays (the
	// registry reads its subject in order), neither said so.
	for _, pair := range [][2]*Node{{a[0], b[0]}, {b[0], a[0]}} {
		rec, err := pair[0].Register(Service{Role: "after@1.0.0"})
		if err != nil {
			t.Fatal(err)
		}
		waitSeen(t, rec.ID, true, 5*time.Second, pair[1])
	}
	for i, l := range logs {
		for _, line := range l.all() {
			if strings.Contains(line, "this node's id") {
				t.Fatalf("%s after the replays: %s", []string{"a-0", "b-0"}[i], line)
			}
		}
	}
}

// TestSitesMessagesHostile: without a secret, a NATS user can publish on
// a node's subject: malformed envelopes are dropped (said at Warn at
// most once a second), and well-formed ones from a member that repeat or
// skip its messages deliver nothing and cost at most one acknowledgement
// an ackDelay; the node goes on.
func TestSitesMessagesHostile(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	tap := srv.Tap(t)
	urls := []string{srv.URL()}
	logs := &warnLog{}
	a := site(t, "c", "a", 1, urls)
	b := site(t, "c", "b", 1, urls, func(c *Config) { c.Logger = slog.New(logs) })
	waitRemotes(t, a[0], b...)
	waitRemotes(t, b[0], a...)
	sendRun(t, a[0], "b-0", 0, 10)
	checkRun(t, receiveN(t, b[0], 10, 5*time.Second), "a-0", 10)
	waitFor(t, "b-0 acknowledged", 5*time.Second, func() bool { return remoteUnacked(a[0], "b-0") == 0 })

	spy, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	as := a[0].remotes
	as.mu.Lock()
	epoch := as.byID["b-0"].epoch
	as.mu.Unlock()
	key := wire.NodeKey("b-0", b[0].remotes.run)
	forged := func(seq uint64, part, parts int, frames ...[]byte) []byte {
		e := wire.Envelope{Site: []byte("a"), Node: []byte("a-0"), Run: as.run,
			To: []wire.Addressee{{Key: key, Epoch: epoch, Base: 0, Seq: seq}}, Part: part, Parts: parts}
		msg := wire.AppendEnvelopeHeader(nil, &e)
		for _, f := range frames {
			msg = append(msg, f...)
		}
		return msg
	}
	msg := wire.Frame(wire.Message, []byte("forged"))
	hostile := [][]byte{
		[]byte("garbage"),
		{wire.EnvelopeVersion},
		forged(0, 0, 1, msg),    // had it
		forged(1000, 0, 1, msg), // a gap
		forged(10, 0, 1, msg[:3]),
		forged(10, 0, 1, wire.Frame(wire.Goodbye, nil)),
		forged(10, 1, 2, msg), // a part without the first
	}
	bSubj := "tallship.c.n.b-0.msg"
	before := len(tap())
	start := time.Now()
	for range 200 {
		for _, h := range hostile {
			spy.Publish(bSubj, h)
		}
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b-0 read the flood", 10*time.Second, func() bool { return b[0].remotes.dropped.Load() >= 200*4 })
	// The real thing still goes through, after the flood.
	sendRun(t, a[0], "b-0", 10, 11)
	if got := receiveN(t, b[0], 1, 5*time.Second); got[0] != "a-0:m10" {
		t.Fatalf("after the flood b-0 got %q", got)
	}
	d := time.Since(start)
	nothingMore(t, b[0], 50*time.Millisecond)
	acks := 0
	for _, m := range tap()[before:] {
		if strings.HasPrefix(m, "tallship.c.n.a-0.msg ") {
			acks++
		}
	}
	if bound := int(d/ackDelay) + 3; acks > bound {
		t.Errorf("b-0 published %d envelopes to a-0 for a flood of %v (bound %d)", acks, d, bound)
	}
	warns := 0
	for _, l := range logs.all() {
		if strings.HasPrefix(l, "message from another site dropped") {
			warns++
		}
	}
	if warns == 0 || warns > int(d/time.Second)+1 {
		t.Errorf("%d warnings for %v of hostile envelopes", warns, d)
	}
	t.Logf("%d envelopes dropped, %d warnings, %d envelopes to a-0, in %v", b[0].remotes.dropped.Load(), warns, acks, d)
}

// TestSitesMessagesLinkedByHand: a member of another site linked by hand
// is a peer: messages go over the link, a Broadcast reaches it once
// (not over the link and NATS both), and it is a member of another site
// no longer (RemoteDown).
func TestSitesMessagesLinkedByHand(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 1, urls)
	x := site(t, "c", "x", 1, urls)
	waitRemotes(t, a[0], x...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := a[0].Events(ctx)
	if _, err := x[0].Connect(ctx, addr(t, a[0])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "linked", 10*time.Second, func() bool { return len(a[0].Peers()) == 1 })
	if err := a[0].Broadcast(ctx, []byte("once")); err != nil {
		t.Fatal(err)
	}
	if got := receiveN(t, x[0], 1, 5*time.Second); got[0] != "a-0:once" {
		t.Fatalf("x-0 got %q", got)
	}
	ev := nextEvent(t, events, RemoteDown)
	if ev.Peer != "x-0" || ev.Err == nil || !strings.Contains(ev.Err.Error(), "links") {
		t.Fatalf("RemoteDown %+v", ev)
	}
	if len(a[0].Remotes()) != 0 {
		t.Fatalf("a-0 lists %v", a[0].Remotes())
	}
	nothingMore(t, x[0], 100*time.Millisecond)
	sendRun(t, a[0], "x-0", 0, 100)
	checkRun(t, receiveN(t, x[0], 100, 5*time.Second), "a-0", 100)
}

// TestSitesMessagesQueueBound: what is queued for a member of another
// site and not acknowledged is bounded by SendQueueBytes: Send waits for
// room, until its ctx ends, or until the member goes (ErrUnknownPeer);
// RemoteDown counts every message accepted.
func TestSitesMessagesQueueBound(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	small := func(c *Config) { c.MaxMessageSize, c.SendQueueBytes = 1024, 4096 }
	a := site(t, "c", "a", 1, []string{srv.URL()}, small)
	p := newProxy(t, strings.TrimPrefix(srv.URL(), "nats://"))
	short := func(c *Config) { c.Heartbeat, c.Lifetime = 100*time.Millisecond, 600*time.Millisecond }
	b := site(t, "c", "b", 1, []string{"nats://" + p.ln.Addr().String()}, short)
	waitRemotes(t, a[0], b...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := a[0].Events(ctx)
	p.stall() // nothing is acknowledged from now on

	msg := make([]byte, 64) // a frame of 66 bytes
	sent := 0
	for {
		sctx, scancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := a[0].Send(sctx, "b-0", msg)
		scancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent++
	}
	if want := 4096 / 66; sent != want {
		t.Fatalf("%d messages queued before Send waited, want %d", sent, want)
	}
	// A Send waiting for room ends when the member goes.
	blocked := make(chan error, 1)
	go func() { blocked <- a[0].Send(ctx, "b-0", msg) }()
	ev := nextEvent(t, events, RemoteDown)
	if ev.Peer != "b-0" || ev.Undelivered != sent {
		t.Fatalf("RemoteDown %+v, want %d undelivered", ev, sent)
	}
	if err := <-blocked; !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("the waiting Send returned %v", err)
	}
}

// TestSitesMessagesLarge: messages larger than a NATS message go in
// parts and arrive whole, in order with the small ones, to one member
// and to a site.
func TestSitesMessagesLarge(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{MaxPayload: 64 << 10})
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 1, urls)
	b := site(t, "c", "b", 2, urls)
	waitRemotes(t, a[0], b...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	big := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	sizes := []int{200 << 10, 1, 64 << 10, 1 << 20, 5}
	for i, n := range sizes {
		if err := a[0].Send(ctx, "b-0", big(n, byte('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := a[0].Broadcast(ctx, big(300<<10, 'z')); err != nil {
		t.Fatal(err)
	}
	for _, nd := range b {
		want := [][]byte{big(300<<10, 'z')}
		if nd == b[0] {
			want = nil
			for i, n := range sizes {
				want = append(want, big(n, byte('a'+i)))
			}
			want = append(want, big(300<<10, 'z'))
		}
		for i, w := range want {
			m, err := nd.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if m.From != "a-0" || !bytes.Equal(m.Data, w) {
				t.Fatalf("%s's message %d: %d bytes from %s, want %d", nd.ID(), i, len(m.Data), m.From, len(w))
			}
		}
		nothingMore(t, nd, 50*time.Millisecond)
	}
}

// TestSitesMessagesObserver: a member of another site that only
// observes is marked in its RemoteUp, is not listed by Remotes nor
// reached by Broadcast, and can be sent to, and send.
func TestSitesMessagesObserver(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 1, urls)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := a[0].Events(ctx)
	o := site(t, "c", "o", 1, urls, func(c *Config) { c.Observer = true })
	if ev := nextEvent(t, events, RemoteUp); ev.Peer != "o-0" || ev.Site != "o" || !ev.Observer {
		t.Fatalf("RemoteUp %+v", ev)
	}
	if len(a[0].Remotes()) != 0 {
		t.Fatalf("a-0 lists %v", a[0].Remotes())
	}
	if err := a[0].Broadcast(ctx, []byte("to members")); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("Broadcast with an observer alone: %v", err)
	}
	waitRemotes(t, o[0], a...)
	if err := o[0].Send(ctx, "a-0", []byte("from an observer")); err != nil {
		t.Fatal(err)
	}
	if got := receiveN(t, a[0], 1, 5*time.Second); got[0] != "o-0:from an observer" {
		t.Fatalf("a-0 got %q", got)
	}
	if err := a[0].Send(ctx, "o-0", []byte("to an observer")); err != nil {
		t.Fatal(err)
	}
	if got := receiveN(t, o[0], 1, 5*time.Second); got[0] != "a-0:to an observer" {
		t.Fatalf("o-0 got %q", got)
	}
	nothingMore(t, o[0], 50*time.Millisecond)
}

// x-0, of site x, linked by hand to a-0 alone: a-0 reaches it over that
// link, and a-1, of a-0's LAN but with no link to x-0, still over NATS.
// x-0's records reach a-1 through a-0 as well, which made a-1 take x-0
// for reached over links and drop it as a member: Send then said
// ErrUnknownPeer and Broadcast skipped it.
func TestSitesMessagesHandLinkToOne(t *testing.T) {
	netns.Require(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	// Addresses nobody listens at: the peer exchange cannot link a-1 and
	// x-0 (as across networks, the reason to link by hand).
	unreachable := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}
	a := site(t, "c", "a", 1, urls)
	cfg := testConfig("a-1")
	cfg.Site, cfg.NATS.URLs, cfg.Advertise = "a", urls, unreachable
	a1 := start(t, "c", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := a1.Connect(ctx, addr(t, a[0])); err != nil {
		t.Fatal(err)
	}
	xc := testConfig("x-0")
	xc.Site, xc.NATS.URLs, xc.Advertise = "x", urls, unreachable
	x := start(t, "c", xc)
	waitRemotes(t, a1, x)
	rec, err := x.Register(Service{Role: "svc@1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	waitSeen(t, rec.ID, true, 5*time.Second, a1)
	if _, err := x.Connect(ctx, addr(t, a[0])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a-0 reaching x-0 over its link alone", 5*time.Second, func() bool {
		return !slices.Contains(remoteIDs(a[0]), "x-0")
	})
	// Each message crosses while a-1's registry hears x-0 over NATS and
	// through a-0, for several of x-0's Beats.
	for end := time.Now().Add(10 * LocalConfig().Heartbeat); time.Now().Before(end); {
		if err := a1.Send(ctx, "x-0", []byte("hi")); err != nil {
			t.Fatalf("a-1 to x-0: %v (a-1's peers %v, remotes %v)", err, peerIDs(a1), remoteIDs(a1))
		}
		if m := receive(t, x); m.From != "a-1" || string(m.Data) != "hi" {
			t.Fatalf("x-0 got %q from %s", m.Data, m.From)
		}
	}
	if slices.Contains(peerIDs(a1), "x-0") {
		t.Fatal("a-1 linked x-0: the test no longer shows the path over NATS")
	}
}

// An acknowledgement a member sent to an earlier run of this node,
// replayed by a NATS user (or late), acknowledges nothing of this run:
// the new run's epochs start elsewhere. Before, each run numbered its
// streams 1, 2, …, and the replay dropped the new run's messages as
// delivered (RemoteDown then counted none undelivered).
func TestSitesMessagesAckOfEarlierRun(t *testing.T) {
	netns.Require(t)
	srv := natstest.Start(t, natstest.Options{})
	tap := srv.Tap(t)
	secret := func(c *Config) { c.Secret = "one" }
	p := newProxy(t, strings.TrimPrefix(srv.URL(), "nats://"))
	a := site(t, "c", "a", 1, []string{"nats://" + p.ln.Addr().String()}, secret)
	b := site(t, "c", "b", 1, []string{srv.URL()}, secret)
	waitRemotes(t, a[0], b...)
	waitRemotes(t, b[0], a...)
	sendRun(t, b[0], "a-0", 0, 5)
	receiveN(t, a[0], 5, 5*time.Second)
	waitFor(t, "a-0 acknowledged", 5*time.Second, func() bool { return remoteUnacked(b[0], "a-0") == 0 })
	recorded := tap()

	b[0].Close()
	b2 := site(t, "c", "b", 1, []string{srv.URL()}, secret)
	waitRemotes(t, a[0], b2...)
	waitRemotes(t, b2[0], a...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := b2[0].Events(ctx)
	p.stall() // a-0 hears nothing more: it acknowledges nothing of the new run
	sendRun(t, b2[0], "a-0", 0, 3)
	spy, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	for _, m := range recorded {
		subject, data, _ := strings.Cut(m, " ")
		if strings.Contains(subject, ".n.") && strings.HasSuffix(subject, ".msg") {
			spy.Publish(subject, []byte(data)) // sealed, as recorded
		}
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events, RemoteDown); ev.Peer != "a-0" || ev.Undelivered != 3 {
		t.Errorf("RemoteDown of %s counts %d undelivered, want a-0's 3: the replay acknowledged the new run's messages", ev.Peer, ev.Undelivered)
	}
}

// withSpy starts a NATS server, one node of site a (options aOpts) and one
// of site b on it, has a-0's messages m0 to m2 reach b-0, and returns
// them with a NATS connection of no node's (a spy, to publish forged
// envelopes), closed at the test's end.
func withSpy(t *testing.T, aOpts ...func(*Config)) (a, b []*Node, spy *nats.Conn) {
	t.Helper()
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	a = site(t, "c", "a", 1, urls, aOpts...)
	b = site(t, "c", "b", 1, urls)
	waitRemotes(t, a[0], b...)
	waitRemotes(t, b[0], a...)
	sendRun(t, a[0], "b-0", 0, 3)
	checkRun(t, receiveN(t, b[0], 3, 5*time.Second), "a-0", 3)
	spy, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(spy.Close)
	return a, b, spy
}

// The first parts of a frame that never comes whole (forged, or left by
// a resend) are let go once delivery passes it: they held their share of
// the parts' budget until the member went, and forged ones could block
// every large message to the node.
func TestSitesMessagesPartsPassedAreDropped(t *testing.T) {
	a, b, spy := withSpy(t)
	as := a[0].remotes
	as.mu.Lock()
	epoch := as.byID["b-0"].epoch
	as.mu.Unlock()
	// The first of two parts of a frame numbered 3, the next one b-0
	// expects of a-0.
	e := wire.Envelope{Site: []byte("a"), Node: []byte("a-0"), Run: as.run,
		To: []wire.Addressee{{Key: wire.NodeKey("b-0", b[0].remotes.run), Epoch: epoch, Seq: 3}}, Part: 0, Parts: 2}
	part := append(wire.AppendEnvelopeHeader(nil, &e), make([]byte, 64<<10)...)
	if err := spy.Publish("tallship.c.n.b-0.msg", part); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	bs := b[0].remotes
	held := func() int {
		bs.mu.Lock()
		defer bs.mu.Unlock()
		return bs.partBytes
	}
	waitFor(t, "b-0 holding the part", 5*time.Second, func() bool { return held() > 0 })
	if got := held(); got < 2*64<<10 {
		t.Errorf("b-0 counts %d bytes held for a frame of 2 parts of 64 KiB: less than the room it makes", got)
	}
	sendRun(t, a[0], "b-0", 3, 4) // the real frame 3, whole
	checkRunFrom(t, receiveN(t, b[0], 1, 5*time.Second), "a-0", 3, 1)
	waitFor(t, "the passed part let go", 5*time.Second, func() bool { return held() == 0 })
}

// A member restarted (same id, a new run) while messages to it were in
// flight: RemoteDown says it restarted and counts them undelivered, and
// the new run gets none of them, only what is sent to it after.
func TestSitesMessagesMemberRestarts(t *testing.T) {
	netns.Require(t)
	srv := natstest.Start(t, natstest.Options{})
	a, b, p := behindProxy(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := a.Events(ctx)
	sendRun(t, a, "b-0", 0, 2)
	checkRun(t, receiveN(t, b, 2, 5*time.Second), "a-0", 2)
	waitFor(t, "b-0 acknowledged", 5*time.Second, func() bool { return remoteUnacked(a, "b-0") == 0 })
	p.stall() // b-0 hears nothing more, and says nothing more
	sendRun(t, a, "b-0", 2, 5)
	b.Close()
	b2 := site(t, "c", "b", 1, []string{srv.URL()})
	ev := nextEvent(t, events, RemoteDown)
	if ev.Peer != "b-0" || !strings.Contains(fmt.Sprint(ev.Err), "restarted") || ev.Undelivered != 3 {
		t.Fatalf("RemoteDown of %s (%v), %d undelivered; want b-0 restarted, 3 undelivered", ev.Peer, ev.Err, ev.Undelivered)
	}
	waitRemotes(t, a, b2...)
	sendRun(t, a, "b-0", 5, 6)
	checkRunFrom(t, receiveN(t, b2[0], 1, 5*time.Second), "a-0", 5, 1) // none of the old run's
	nothingMore(t, b2[0], 100*time.Millisecond)
}

// On a path slower than the first resend timer (250 ms), as across a
// WAN, a member's round trip is measured and bursts after the first go
// once: a fixed timer published every burst twice there.
func TestSitesMessagesSlowPathGoesOnce(t *testing.T) {
	netns.Require(t)
	srv := natstest.Start(t, natstest.Options{})
	a, b, p := behindProxy(t, srv, func(c *Config) {
		c.Lifetime = 5 * time.Second // Beats are slow too: not silent meanwhile
	})
	p.setDelay(150 * time.Millisecond) // b-0's round trip to NATS: 300 ms
	burst := func(from int) {
		t.Helper()
		sendRun(t, a, "b-0", from, from+5)
		checkRunFrom(t, receiveN(t, b, 5, 10*time.Second), "a-0", from, 5)
		waitFor(t, "b-0 acknowledged", 10*time.Second, func() bool { return remoteUnacked(a, "b-0") == 0 })
	}
	burst(0) // the first goes again: the round trip is not known yet
	resent := a.remotes.resent.Load()
	burst(5)
	burst(10)
	if again := a.remotes.resent.Load() - resent; again != 0 {
		t.Errorf("bursts after the first went again %d times on a 300 ms path", again)
	}
	nothingMore(t, b, 50*time.Millisecond)
}

// A closed node lists no member of another site: it reaches none.
func TestSitesRemotesEmptyAfterClose(t *testing.T) {
	netns.Require(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 1, urls)
	b := site(t, "c", "b", 1, urls)
	waitRemotes(t, a[0], b...)
	a[0].Close()
	if got := a[0].Remotes(); len(got) != 0 {
		t.Fatalf("a closed node lists %v", got)
	}
}

// A member dropped as silent on one side only, and back on the same run:
// b-0 hears nothing of a-0 for longer than a-0's Lifetime (RemoteDown,
// then RemoteUp when it hears it again), while a-0 keeps b-0 (its
// Lifetime is long) and publishes again what b-0 had not acknowledged.
// b-0 takes up a-0's stream where it was: every message once, in order.
func TestSitesMessagesMemberBackOnSameRun(t *testing.T) {
	netns.Require(t)
	srv := natstest.Start(t, natstest.Options{})
	a, b, p := behindProxy(t, srv, func(c *Config) {
		c.Lifetime = 10 * time.Second // a-0 keeps b-0 through the stall
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events := b.Events(ctx)
	sendRun(t, a, "b-0", 0, 5)
	checkRun(t, receiveN(t, b, 5, 5*time.Second), "a-0", 5)
	p.stall() // b-0 hears nothing, and says nothing: not even its acknowledgements
	sendRun(t, a, "b-0", 5, 10)
	if ev := nextEvent(t, events, RemoteDown); ev.Peer != "a-0" {
		t.Fatalf("RemoteDown of %s, want a-0", ev.Peer)
	}
	p.resume()
	if ev := nextEvent(t, events, RemoteUp); ev.Peer != "a-0" {
		t.Fatalf("RemoteUp of %s, want a-0", ev.Peer)
	}
	sendRun(t, a, "b-0", 10, 15)
	checkRunFrom(t, receiveN(t, b, 10, 10*time.Second), "a-0", 5, 10)
	nothingMore(t, b, 500*time.Millisecond)
}

// TestSitesMessagesForgedEpoch: an envelope forged in a-0's name with a
// later epoch than a-0's made b-0 drop everything a-0 published after it,
// until one of them restarted, while a-0 published it again every few
// seconds. Now b-0's acknowledgement names the epoch it follows, a-0
// starts a later one, and its messages arrive once and in order; a-0
// says so at Warn.
func TestSitesMessagesForgedEpoch(t *testing.T) {
	logs := &warnLog{}
	a, b, spy := withSpy(t, func(c *Config) { c.Logger = slog.New(logs) })
	as := a[0].remotes
	key := wire.NodeKey("b-0", b[0].remotes.run)
	next := 3
	// Later by little, and later by a quarter of the epochs' circle.
	for i, ahead := range []uint64{1000, 1 << 62} {
		as.mu.Lock()
		epoch := as.byID["b-0"].epoch
		as.mu.Unlock()
		e := wire.Envelope{Site: []byte("a"), Node: []byte("a-0"), Run: as.run,
			To: []wire.Addressee{{Key: key, Epoch: epoch + ahead, Base: 0, Seq: 0}}, Parts: 1}
		forged := append(wire.AppendEnvelopeHeader(nil, &e), wire.Frame(wire.Message, []byte("forged"))...)
		if err := spy.Publish("tallship.c.n.b-0.msg", forged); err != nil {
			t.Fatal(err)
		}
		if got := receiveN(t, b[0], 1, 5*time.Second); got[0] != "a-0:forged" {
			t.Fatalf("b-0 got %q, want the forged message", got)
		}
		sendRun(t, a[0], "b-0", next, next+3)
		checkRunFrom(t, receiveN(t, b[0], 3, 10*time.Second), "a-0", next, 3)
		next += 3
		nothingMore(t, b[0], 100*time.Millisecond)
		if got := as.forged.Load(); got != uint64(i+1) {
			t.Errorf("a-0 started a later epoch %d times, want %d", got, i+1)
		}
	}
	warned := 0
	for _, l := range logs.all() {
		if strings.Contains(l, "never used") {
			warned++
		}
	}
	if warned != 2 {
		t.Errorf("a-0 warned %d times of an epoch it never used, want 2: %q", warned, logs.all())
	}
}

// TestSitesMessagesLeaverAcknowledges: a member that leaves (Shutdown)
// right after it received messages publishes its acknowledgements of
// them before its leaving Beat: their sender's RemoteDown counts none
// undelivered. Before, the acknowledgement waited ackDelay and the Beat
// went first.
func TestSitesMessagesLeaverAcknowledges(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 1, urls)
	b := site(t, "c", "b", 1, urls)
	waitRemotes(t, a[0], b...)
	waitRemotes(t, b[0], a...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := a[0].Events(ctx)
	sendRun(t, a[0], "b-0", 0, 5)
	checkRun(t, receiveN(t, b[0], 5, 5*time.Second), "a-0", 5)
	if err := b[0].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events, RemoteDown); ev.Peer != "b-0" || ev.Err != nil || ev.Undelivered != 0 {
		t.Fatalf("RemoteDown %+v (err %v), want b-0's, none undelivered", ev, ev.Err)
	}
}

// TestSitesMessagesLeaverSilent: a member the registry says left, that
// never acknowledges what it had, is RemoteDown within leaveLinger with
// those messages counted, and is no member meanwhile: Send to it fails,
// Remotes does not list it.
func TestSitesMessagesLeaverSilent(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	a, b, p := behindProxy(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := a.Events(ctx)
	p.stall() // b-0 hears nothing, and acknowledges nothing
	sendRun(t, a, "b-0", 0, 3)
	waitFor(t, "a-0 published", 5*time.Second, func() bool {
		a.remotes.mu.Lock()
		defer a.remotes.mu.Unlock()
		r := a.remotes.byID["b-0"]
		return r != nil && r.pub == 3
	})
	at := time.Now()
	a.remotes.registryEvent(registry.Event{Kind: registry.RemoteDown, Peer: "b-0", Inc: b.remotes.run}) // as its leaving Beat does
	if err := a.Send(ctx, "b-0", []byte("late")); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Send to a member that left: %v", err)
	}
	if slices.Contains(remoteIDs(a), "b/b-0") {
		t.Fatal("a-0 lists b-0 after it left")
	}
	ev := nextEvent(t, events, RemoteDown)
	if d := time.Since(at); ev.Peer != "b-0" || ev.Err != nil || ev.Undelivered != 3 || d < leaveLinger || d > leaveLinger+time.Second {
		t.Fatalf("RemoteDown %+v (err %v) after %v, want b-0's with 3 undelivered after about %v", ev, ev.Err, d, leaveLinger)
	}
}

// TestEnvelopeBounds: whatever NATS's max_payload, an envelope to as
// many members as the writer puts in one fits in a NATS message with
// room for frames. Before, the writer could address 256 members in an
// envelope whose header alone was larger than a NATS message (with
// max_payload below about 10 KB): it never went, and was tried again
// forever.
func TestEnvelopeBounds(t *testing.T) {
	w := &writer{s: &remoteSet{n: &Node{id: "a-0", cfg: Config{Site: "lab"}}}}
	for _, most := range []int{1 << 20, 64 << 10, 8 << 10, 5000, 600} {
		w.size(most)
		header := wire.EnvelopeHeaderMax("lab", "a-0", w.shared)
		if header > most/2 || w.limit < 1 || header+w.limit > most {
			t.Errorf("NATS messages of %d bytes: %d addressees (header up to %d bytes), frames up to %d", most, w.shared, header, w.limit)
		}
		if most >= 1<<20 && w.shared != maxSiteAddressees {
			t.Errorf("NATS messages of %d bytes: %d addressees, want %d", most, w.shared, maxSiteAddressees)
		}
	}
}
