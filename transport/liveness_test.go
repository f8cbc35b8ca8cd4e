package transport

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// freezable is a connection that can go silent: once frozen, its reads and
// writes block until it is closed, as with a peer whose host froze.
type freezable struct {
	net.Conn
	link   *Link // the server's link over it (frozenPair)
	once   sync.Once
	frozen chan struct{}
	closed chan struct{}
	close  sync.Once
}

func newFreezable(c net.Conn) *freezable {
	return &freezable{Conn: c, frozen: make(chan struct{}), closed: make(chan struct{})}
}

func (f *freezable) freeze() { f.once.Do(func() { close(f.frozen) }) }

func (f *freezable) wait() error {
	select {
	case <-f.frozen:
		<-f.closed
		return net.ErrClosed
	default:
		return nil
	}
}

func (f *freezable) Read(p []byte) (int, error) {
	if err := f.wait(); err != nil {
		return 0, err
	}
	return f.Conn.Read(p)
}

func (f *freezable) Write(p []byte) (int, error) {
	if err := f.wait(); err != nil {
		return 0, err
	}
	return f.Conn.Write(p)
}

func (f *freezable) Close() error {
	f.close.Do(func() { close(f.closed) })
	return f.Conn.Close()
}

// TestLivenessSilentPeer runs in real time: yamux pools its timers, and a
// timer made in a synctest bubble must not be reused outside it.
func TestLivenessSilentPeer(t *testing.T) {
	cfg := Config{KeepAliveInterval: 100 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}
	la, fb := frozenPair(t, cfg)
	lb := fb.link

	// An idle link with a live peer stays up: pings are answered.
	time.Sleep(20 * cfg.KeepAliveInterval)
	if la.IsClosed() || lb.IsClosed() {
		t.Fatal("an idle link with a live peer was closed")
	}

	// A frozen peer is declared dead within KeepAliveInterval +
	// WriteTimeout of the last thing it sent.
	start := time.Now()
	fb.freeze()
	limit := cfg.KeepAliveInterval + cfg.WriteTimeout
	select {
	case <-la.Done():
	case <-time.After(10 * limit):
		t.Fatalf("silent peer not declared dead after %v", 10*limit)
	}
	// The bound is limit, plus what this process ran late (lagGauge);
	// the slack is for a loaded machine.
	if d, late := time.Since(start), lag.get(now()); d > limit+limit/2+late {
		t.Fatalf("silent peer declared dead after %v, want about %v at most (running late by %v)", d, limit, late)
	}
}

// TestLivenessAllowsLag: while this process runs late, a peer silent for
// the limit is not declared dead (its pings and this process's reads wait
// as long); it still is once the silence outlasts the lateness too.
func TestLivenessAllowsLag(t *testing.T) {
	cfg := Config{KeepAliveInterval: 100 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}
	limit := cfg.KeepAliveInterval + cfg.WriteTimeout
	la, fb := frozenPair(t, cfg)
	at := now()
	lag.observe(at-2*limit, at) // as if a check had run 600 ms late
	fb.freeze()
	start := time.Now()
	select {
	case <-la.Done():
		t.Fatalf("peer declared dead after %v of silence while the process ran %v late", time.Since(start), 2*limit)
	case <-time.After(limit + limit/2):
	}
	select {
	case <-la.Done():
	case <-time.After(10 * limit):
		t.Fatalf("silent peer not declared dead after %v", 10*limit)
	}
}

// frozenPair links a client to a server over a pipe whose server end can
// be frozen.
func frozenPair(t *testing.T, cfg Config) (*Link, *freezable) {
	t.Helper()
	a, b := net.Pipe()
	fb := newFreezable(b)
	ctx := context.Background()
	acc := make(chan *Link, 1)
	go func() {
		l, err := Server(ctx, fb, Hello{Cluster: "c", ID: "b"}, cfg, nil)
		if err != nil {
			t.Error(err)
		}
		acc <- l
	}()
	la, err := Client(ctx, a, Hello{Cluster: "c", ID: "a"}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	lb := <-acc
	if lb == nil {
		t.FailNow()
	}
	fb.link = lb
	t.Cleanup(func() { la.Close(); lb.Close() })
	return la, fb
}

func TestLagGauge(t *testing.T) {
	var g lagGauge
	g.observe(0, 10*time.Millisecond)
	g.observe(500*time.Millisecond, 503*time.Millisecond)
	if got := g.get(600 * time.Millisecond); got != 10*time.Millisecond {
		t.Fatalf("lag in the first window: %v, want 10ms", got)
	}
	g.observe(1100*time.Millisecond, 1105*time.Millisecond)
	if got := g.get(1500 * time.Millisecond); got != 10*time.Millisecond {
		t.Fatalf("lag in the second window: %v, want the first's 10ms", got)
	}
	if got := g.get(2100 * time.Millisecond); got != 5*time.Millisecond {
		t.Fatalf("lag in the third window: %v, want the second's 5ms", got)
	}
	if got := g.get(5 * time.Second); got != 0 {
		t.Fatalf("lag after quiet windows: %v, want 0", got)
	}
	g.observe(6*time.Second, 5*time.Second) // early: no lag
	if got := g.get(6 * time.Second); got != 0 {
		t.Fatalf("lag after an early run: %v, want 0", got)
	}
}

// TestIdleLinkPingsOneWay: on an idle link the dialer's side pings and the
// acceptor's only answers (one ping and one answer per interval, not two
// of each); when only the acceptor sends, it pings itself and the link
// stays up.
func TestIdleLinkPingsOneWay(t *testing.T) {
	cfg := Config{KeepAliveInterval: 50 * time.Millisecond, WriteTimeout: 100 * time.Millisecond}
	la, fb := frozenPair(t, cfg)
	lb := fb.link
	time.Sleep(40 * cfg.KeepAliveInterval)
	if la.IsClosed() || lb.IsClosed() {
		t.Fatal("an idle link with a live peer was closed")
	}
	dialer, acceptor := la.live.pings.Load(), lb.live.pings.Load()
	t.Logf("idle for %v: the dialer pinged %d times, the acceptor %d", 40*cfg.KeepAliveInterval, dialer, acceptor)
	if dialer < 10 || acceptor > dialer/10 {
		t.Errorf("idle link: the dialer pinged %d times, the acceptor %d; want the dialer alone", dialer, acceptor)
	}

	// Only the acceptor sends: the dialer hears traffic and does not
	// ping; the acceptor's pings keep the dialer audible.
	ctx := context.Background()
	go func() {
		s, err := la.AcceptStream(ctx)
		if err == nil {
			io.Copy(io.Discard, s)
		}
	}()
	s, err := lb.OpenStream(ctx, "t/one-way")
	if err != nil {
		t.Fatal(err)
	}
	before := lb.live.pings.Load()
	for end := time.Now().Add(40 * cfg.KeepAliveInterval); time.Now().Before(end); {
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatalf("one-way traffic: %v", err)
		}
		time.Sleep(cfg.KeepAliveInterval / 5)
	}
	if la.IsClosed() || lb.IsClosed() {
		t.Fatal("a link carrying traffic one way was closed")
	}
	if lb.live.pings.Load() == before {
		t.Error("the acceptor, hearing nothing, never pinged")
	}
}
