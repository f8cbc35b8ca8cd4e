package sites

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/natstest"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

func TestMain(m *testing.M) { netns.Main(m) }

// logLines keeps the lines logged, each as "LEVEL message".
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.lines = append(l.lines, r.Level.String()+" "+r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logLines) WithGroup(string) slog.Handler            { return l }

// count returns how many lines contain s.
func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// config is a bus's Config for node of site on the servers at urls,
// with fast retries.
func config(node, site string, urls ...string) Config {
	return Config{URLs: urls, Cluster: "c", Site: site, Node: node, ReconnectWait: 20 * time.Millisecond,
		ReconnectWaitMax: 100 * time.Millisecond, PingInterval: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
}

// dial dials a bus that is closed when the test ends.
func dial(t *testing.T, cfg Config) *Bus {
	t.Helper()
	b, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// session waits for b's session.
func session(t *testing.T, b *Bus) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return s
}

// receive returns the next message of s within d, or nil.
func receive(s *Session, d time.Duration) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	msg, _ := s.Receive(ctx)
	return msg
}

// settle sends from a until b hears: both subscriptions are in place on
// the server (a subscription is sent as the connection starts, and may
// trail the first publish).
func settle(t *testing.T, a, b *Session, node string) {
	t.Helper()
	settleOn(t, func(m []byte) error { return a.Send(node, m) }, func(d time.Duration) []byte { return receive(b, d) })
}

// settleOn sends a ping until read reads it back, then reads what other
// pings came.
func settleOn(t *testing.T, send func([]byte) error, read func(time.Duration) []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := send([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if msg := read(20 * time.Millisecond); string(msg) == "ping" {
			for read(20*time.Millisecond) != nil {
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no message got through")
		}
	}
}

// TestBusPublishAndSend: what a node publishes reaches the others and
// not itself; what it sends reaches one node.
func TestBusPublishAndSend(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	a := session(t, dial(t, config("a", "sa", srv.URL())))
	b := session(t, dial(t, config("b", "sb", srv.URL())))
	c := session(t, dial(t, config("c", "sb", srv.URL())))
	settle(t, a, b, "b")
	settle(t, a, c, "c")

	if err := a.Publish([]byte("to all")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Session{b, c} {
		if msg := receive(s, 5*time.Second); string(msg) != "to all" {
			t.Fatalf("got %q", msg)
		}
	}
	if msg := receive(a, 100*time.Millisecond); msg != nil {
		t.Fatalf("the publisher heard itself: %q", msg)
	}
	if err := b.Send("c", []byte("to c")); err != nil {
		t.Fatal(err)
	}
	if msg := receive(c, 5*time.Second); string(msg) != "to c" {
		t.Fatalf("c got %q", msg)
	}
	if msg := receive(a, 100*time.Millisecond); msg != nil {
		t.Fatalf("a heard what was sent to c: %q", msg)
	}
	if a.MaxMessage() < 512<<10 {
		t.Fatalf("MaxMessage %d", a.MaxMessage())
	}
}

// TestBusSecret: with a secret, what goes over NATS is sealed (a NATS
// user who subscribes to everything reads nothing of it, nor the
// cluster's name); a node with another secret hears nothing; a message
// that is not sealed with the secret is dropped and logged.
func TestBusSecret(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	spy, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	seen := make(chan *nats.Msg, 100)
	if _, err := spy.ChanSubscribe(">", seen); err != nil {
		t.Fatal(err)
	}
	spy.Flush()

	logs := &logLines{}
	ca, cb := config("a", "sa", srv.URL()), config("b", "sb", srv.URL())
	ca.Secret, cb.Secret = "s3cret", "s3cret"
	cb.Logger = slog.New(logs)
	co := config("o", "so", srv.URL())
	co.Secret = "another"
	a, b, o := session(t, dial(t, ca)), session(t, dial(t, cb)), session(t, dial(t, co))
	settle(t, a, b, "b")

	if err := a.Publish([]byte("the plain text")); err != nil {
		t.Fatal(err)
	}
	if msg := receive(b, 5*time.Second); string(msg) != "the plain text" {
		t.Fatalf("b got %q", msg)
	}
	if msg := receive(o, 200*time.Millisecond); msg != nil {
		t.Fatalf("a node with another secret heard %q", msg)
	}
	var subject string
	for len(seen) > 0 {
		m := <-seen
		if bytes.Contains(m.Data, []byte("plain")) || strings.Contains(m.Subject, ".c.") || strings.HasSuffix(m.Subject, ".sa") {
			t.Fatalf("the spy read %q on %s", m.Data, m.Subject)
		}
		subject = m.Subject
	}
	if subject == "" {
		t.Fatal("the spy saw nothing")
	}
	// A NATS user without the secret publishes on the cluster's subject:
	// dropped, said, and the bus goes on.
	if err := spy.Publish(subject, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	spy.Flush()
	if err := a.Publish([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if msg := receive(b, 5*time.Second); string(msg) != "after" {
		t.Fatalf("b got %q", msg)
	}
	if logs.count("dropped") != 1 {
		t.Fatalf("logs:\n%s", logs)
	}
}

// TestBusDialErrors: a URL that does not parse and refused credentials
// fail Dial with a clear error; an unreachable server does not (the
// node's LAN works without it): it is said once, and the bus connects
// when the server comes.
func TestBusDialErrors(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	if _, err := Dial(context.Background(), config("a", "s", "nats://[::1")); !errors.Is(err, ErrConfig) {
		t.Errorf("bad URL: %v", err)
	}
	cfg := config("a", "s", "nats://127.0.0.1:1")
	cfg.CredsFile = "/nonexistent/nats.creds"
	if _, err := Dial(context.Background(), cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "nats.creds") {
		t.Errorf("missing creds file: %v", err)
	}

	srv := natstest.Start(t, natstest.Options{User: "u", Password: "right"})
	cfg = config("a", "s", srv.URL())
	cfg.User, cfg.Password = "u", "wrong"
	_, err := Dial(context.Background(), cfg)
	if !errors.Is(err, ErrRefused) || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("wrong password: %v", err)
	}
	cfg.Password = "right"
	session(t, dial(t, cfg))

	// Nothing listens: Dial returns, says so once, and connects later.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logs := &logLines{}
	cfg = config("b", "s", "nats://"+addr)
	cfg.Logger = slog.New(logs)
	b := dial(t, cfg)
	waitFor(t, "five retries", func() bool { return logs.count("DEBUG sites: cannot reach NATS") >= 5 })
	if n := logs.count("WARN sites: cannot reach NATS"); n != 1 {
		t.Fatalf("said %d times at Warn:\n%s", n, logs)
	}
	if b.Connected() {
		t.Fatal("connected to nothing")
	}
	natstest.StartAt(t, natstest.Options{}, addr)
	session(t, b)
	waitFor(t, "said it is back", func() bool { return logs.count("INFO sites: NATS is back") == 1 })
}

// TestBusOutage: when the server goes, the session ends (said once);
// when it comes back, a new session begins (said once).
func TestBusOutage(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	logs := &logLines{}
	cfg := config("a", "s", srv.URL())
	cfg.Logger = slog.New(logs)
	b := dial(t, cfg)
	s := session(t, b)
	srv.Stop()
	if _, err := s.Receive(context.Background()); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("Receive: %v", err)
	}
	if err := s.Publish([]byte("x")); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("Publish: %v", err)
	}
	waitFor(t, "five retries", func() bool { return logs.count("DEBUG sites: cannot reach NATS") >= 5 })
	srv.Restart()
	s2 := session(t, b)
	if s2 == s {
		t.Fatal("the same session after an outage")
	}
	waitFor(t, "said it is back", func() bool { return logs.count("INFO sites: NATS is back") == 1 })
	if n := logs.count("WARN"); n != 1 {
		t.Fatalf("the outage said %d times at Warn:\n%s", n, logs)
	}
	b.Close()
	if _, err := b.Next(context.Background()); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// TestNames: subject tokens are the names when plain, hashed when not,
// keyed with a secret; sealing binds a payload to its subject.
func TestNames(t *testing.T) {
	n, _ := newNames("my-cluster", "")
	if got := n.siteRegistry("lab"); got != "tallship.my-cluster.reg.lab" {
		t.Errorf("siteRegistry = %q", got)
	}
	if got := n.siteRegistry("lab.east"); !strings.HasPrefix(got, "tallship.my-cluster.reg.h-") {
		t.Errorf("a dotted site = %q", got)
	}
	if got := n.nodeRegistry("a b>*"); strings.ContainsAny(strings.TrimPrefix(got, "tallship.my-cluster.n."), " >*") {
		t.Errorf("node subject = %q", got)
	}
	k1, _ := newNames("my-cluster", "one")
	k2, _ := newNames("my-cluster", "two")
	if k1.root == k2.root || strings.Contains(k1.root, "my-cluster") {
		t.Errorf("roots %q %q", k1.root, k2.root)
	}
	sealed, err := k1.seal("subj.a", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := k1.open("subj.a", sealed); err != nil || string(msg) != "hello" {
		t.Errorf("open = %q, %v", msg, err)
	}
	if _, err := k1.open("subj.b", sealed); err == nil {
		t.Error("opened on another subject")
	}
	if _, err := k2.open("subj.a", sealed); err == nil {
		t.Error("opened with another secret")
	}
	if _, err := k1.open("subj.a", sealed[:10]); err == nil {
		t.Error("opened a short payload")
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBusRedactsCredentials: the NATS credentials of a URL never show in
// what the bus logs, tells OnChange, or returns.
func TestBusRedactsCredentials(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{User: "u", Password: "right"})
	host := strings.TrimPrefix(srv.URL(), "nats://")
	logs := &logText{}
	var mu sync.Mutex
	var told []string
	cfg := config("a", "s", "nats://u:hunter2@"+host)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, err := Dial(context.Background(), cfg)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Dial's error shows the password: %v", err)
	}
	if _, err := Dial(context.Background(), config("a", "s", "nats://u:hunter2@[::1")); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("a bad URL: %v", err)
	}

	// No server to reach: said, and told, with the URLs hidden.
	cfg = config("b", "s", "nats://u:pw@127.0.0.1:1", "nats://tok3n@127.0.0.1:1")
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.OnChange = func(_ bool, err error) {
		if err != nil {
			mu.Lock()
			told = append(told, err.Error())
			mu.Unlock()
		}
	}
	dial(t, cfg)
	waitFor(t, "the outage told", func() bool { mu.Lock(); defer mu.Unlock(); return len(told) >= 1 })
	mu.Lock()
	all := strings.Join(told, "\n")
	mu.Unlock()
	for _, secret := range []string{"hunter2", ":pw@", "tok3n"} {
		if strings.Contains(all, secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("%q shows:\n%s\n%s", secret, all, logs)
		}
	}

	// A token in the URL of the server connected to: hidden in the log
	// line that names it, and by ConnectedURL.
	guarded := natstest.Start(t, natstest.Options{Token: "t0ken"})
	host = strings.TrimPrefix(guarded.URL(), "nats://")
	cfg = config("c", "s", "nats://t0ken@"+host)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := dial(t, cfg)
	session(t, c)
	if got, want := c.ConnectedURL(), "nats://xxxxx@"+host; got != want {
		t.Errorf("ConnectedURL = %q, want %q", got, want)
	}
	waitFor(t, "the connection said", func() bool { return strings.Contains(logs.String(), "connected to NATS") })
	if strings.Contains(logs.String(), "t0ken") {
		t.Errorf("the connection's log line, without the token:\n%s", logs)
	}
}

// logText is a log's text, safe for concurrent writes.
type logText struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logText) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logText) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBusNameHidesNode: with a secret, the name the node gives the NATS
// server (shown in its monitoring) does not tell the node's id.
func TestBusNameHidesNode(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	cfg := config("secret-node-7", "sa", srv.URL())
	cfg.Secret = "s3cret"
	session(t, dial(t, cfg))
	names := srv.ClientNames()
	if len(names) != 1 || strings.Contains(names[0], "secret-node-7") {
		t.Fatalf("the server knows the client as %q", names)
	}
}

// TestBusInboxBounded: what waits to be read, the registry's and the
// mesh's messages each, is bounded in bytes, not in messages: beyond it
// messages are dropped (said), and what was kept is read in order.
func TestBusInboxBounded(t *testing.T) {
	netns.Require(t)
	for _, tc := range []struct {
		name  string
		bound *int
		inbox func(*Bus) *inbox
		send  func(a *Session, msg []byte) error
		read  func(b *Bus, d time.Duration) []byte
	}{
		{"registry", &inboxBytes, func(b *Bus) *inbox { return b.in },
			func(a *Session, msg []byte) error { return a.Publish(msg) },
			func(b *Bus, d time.Duration) []byte { return receive(session(t, b), d) }},
		{"messages", &messageInboxBytes, func(b *Bus) *inbox { return b.msgs },
			func(a *Session, msg []byte) error { return a.SendMessage("b", msg) },
			func(b *Bus, d time.Duration) []byte { return receiveMessage(b, d) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Goroutines(t)
			old := *tc.bound
			t.Cleanup(func() { *tc.bound = old }) // after the buses close
			*tc.bound = 1 << 20
			srv := natstest.Start(t, natstest.Options{})
			logs := &logLines{}
			cb := config("b", "sb", srv.URL())
			cb.Logger = slog.New(logs)
			a, b := session(t, dial(t, config("a", "sa", srv.URL()))), dial(t, cb)
			settleOn(t, func(m []byte) error { return tc.send(a, m) }, func(d time.Duration) []byte { return tc.read(b, d) })
			big := make([]byte, 100<<10)
			for i := range 30 { // 3 MB, unread
				big[0] = byte(i)
				if err := tc.send(a, big); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "drops said", func() bool { return logs.count("WARN sites: NATS message dropped") == 1 })
			in := tc.inbox(b)
			in.mu.Lock()
			held := in.bytes
			in.mu.Unlock()
			if held > *tc.bound {
				t.Fatalf("%d bytes wait, bound %d", held, *tc.bound)
			}
			// Unread, 10 are held (1 MiB): the other 20 are counted dropped.
			waitFor(t, "20 drops counted", func() bool { return b.Stats().Dropped == 20 })
			for i := range 10 {
				if msg := tc.read(b, time.Second); len(msg) != len(big) || msg[0] != byte(i) {
					t.Fatalf("message %d: %d bytes, first %v", i, len(msg), msg[:min(len(msg), 1)])
				}
			}
		})
	}
}

// TestBusServerStopsReading: a server that stops reading fails a write
// within two pings: Publish does not block the registry's writer (and
// the node's Close) for nats.go's minute.
func TestBusServerStopsReading(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	var conns sync.WaitGroup
	defer conns.Wait()
	defer close(stop)
	conns.Add(1)
	go func() { // one NATS server that answers the handshake, then reads nothing
		defer conns.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`INFO {"server_id":"frozen","version":"2.10.0","proto":1,"max_payload":1048576,"headers":true}` + "\r\n"))
		buf := make([]byte, 4096)
		deadline := time.Now().Add(5 * time.Second)
		var got []byte
		for !bytes.Contains(got, []byte("PING\r\n")) && time.Now().Before(deadline) {
			c.SetReadDeadline(deadline)
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			got = append(got, buf[:n]...)
		}
		c.Write([]byte("PONG\r\n"))
		<-stop // and never reads again
	}()
	cfg := config("a", "sa", "nats://"+ln.Addr().String())
	cfg.PingInterval = 300 * time.Millisecond
	b := dial(t, cfg)
	s := session(t, b)
	big := make([]byte, 256<<10)
	done := make(chan error, 1)
	go func() {
		for {
			if err := s.Publish(big); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish still blocked 10 s after the server stopped reading")
	}
	start := time.Now()
	b.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

// Empty messages, which anyone allowed on a node's subject can publish,
// count against the inbox's bound too: unread, a few are held and the
// rest dropped, not all of them held (they counted nothing before).
func TestBusInboxBoundsEmptyMessages(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	old := messageInboxBytes
	t.Cleanup(func() { messageInboxBytes = old }) // after the bus closes
	messageInboxBytes = 64 << 10
	srv := natstest.Start(t, natstest.Options{})
	b := dial(t, config("b", "sb", srv.URL()))
	// NATS sends b's subscriptions without waiting for the server: a
	// round trip on b's connection makes sure the server has them before
	// the spy publishes (in the mesh, a peer learns of b from what b
	// publishes after them, on the same connection).
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	spy, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	const n = 2000
	for range n {
		if err := spy.Publish(b.names.nodeMessages("b"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	held := func() int {
		b.msgs.mu.Lock()
		defer b.msgs.mu.Unlock()
		return len(b.msgs.q) - b.msgs.head
	}
	waitFor(t, "every message held or dropped", func() bool { return held()+int(b.msgs.droppedCount()) == n })
	if h, most := held(), messageInboxBytes/msgOverhead; h > most {
		t.Fatalf("%d empty messages held, at most %d fit the bound", h, most)
	}
}
