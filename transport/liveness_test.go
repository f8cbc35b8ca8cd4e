package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/loopback"
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
	// The bound is limit, plus what this process ran late (internal/lag);
	// the slack is for a loaded machine.
	if d, late := time.Since(start), lag.Current(); d > limit+limit/2+late {
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
	lag.Process.Observe(at-2*limit, at) // as if a check had run 600 ms late
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
	la, lb := linkOn(t, a, fb, cfg, cfg)
	fb.link = lb
	return la, fb
}

// linkOn links a client over dc, configured by dcfg, to a server over
// ac, configured by acfg; both close when the test ends.
func linkOn(t *testing.T, dc, ac net.Conn, dcfg, acfg Config) (d, a *Link) {
	t.Helper()
	ctx := context.Background()
	acc := make(chan *Link, 1)
	go func() {
		l, err := Server(ctx, ac, Hello{Cluster: "c", ID: "b"}, acfg, nil)
		if err != nil {
			t.Error(err)
		}
		acc <- l
	}()
	d, err := Client(ctx, dc, Hello{Cluster: "c", ID: "a"}, dcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	a = <-acc
	if a == nil {
		t.FailNow()
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d, a
}

// TestIdleLinkBeats: on an idle link each side beats about once per
// interval, and the link stays up; when only one side sends, only the
// other beats, and its beats keep it audible.
func TestIdleLinkBeats(t *testing.T) {
	cfg := Config{KeepAliveInterval: 50 * time.Millisecond, WriteTimeout: 100 * time.Millisecond}
	la, fb := frozenPair(t, cfg)
	lb := fb.link
	idle := 40 * cfg.KeepAliveInterval
	time.Sleep(idle)
	if la.IsClosed() || lb.IsClosed() {
		t.Fatal("an idle link with a live peer was closed")
	}
	dialer, acceptor := la.live.beats.Load(), lb.live.beats.Load()
	t.Logf("idle for %v: the dialer beat %d times, the acceptor %d", idle, dialer, acceptor)
	for _, n := range []int64{dialer, acceptor} {
		if n < 10 || n > 41 {
			t.Errorf("idle link: the sides beat %d and %d times in %v, want each about once per %v", dialer, acceptor, idle, cfg.KeepAliveInterval)
		}
	}

	// Only the acceptor sends: the acceptor, writing all along, does not
	// beat; the dialer, hearing traffic but writing nothing, does.
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
	dialer, acceptor = la.live.beats.Load(), lb.live.beats.Load()
	for end := time.Now().Add(idle); time.Now().Before(end); {
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatalf("one-way traffic: %v", err)
		}
		time.Sleep(cfg.KeepAliveInterval / 5)
	}
	if la.IsClosed() || lb.IsClosed() {
		t.Fatal("a link carrying traffic one way was closed")
	}
	if n := lb.live.beats.Load() - acceptor; n > 2 {
		t.Errorf("the acceptor, writing every %v, beat %d times", cfg.KeepAliveInterval/5, n)
	}
	if la.live.beats.Load()-dialer < 10 {
		t.Error("the dialer, writing nothing, did not keep beating")
	}
}

// writeStall is a connection whose writes, once stalled, block until it
// closes, while its reads go on: the far end has stopped reading (its
// receive window is full) but still sends.
//
// Released, its writes go through again, as on a lossy network once TCP's
// resend gets through.
type writeStall struct {
	net.Conn
	stalled, released, closed   chan struct{}
	stallOnce, releaser, closer sync.Once
}

func newWriteStall(c net.Conn) *writeStall {
	return &writeStall{Conn: c, stalled: make(chan struct{}), released: make(chan struct{}), closed: make(chan struct{})}
}

func (w *writeStall) stall()   { w.stallOnce.Do(func() { close(w.stalled) }) }
func (w *writeStall) release() { w.releaser.Do(func() { close(w.released) }) }

func (w *writeStall) Write(p []byte) (int, error) {
	select {
	case <-w.stalled:
		select {
		case <-w.closed:
			return 0, net.ErrClosed
		case <-w.released:
		}
	default:
	}
	return w.Conn.Write(p)
}

func (w *writeStall) Close() error {
	w.closer.Do(func() { close(w.closed) })
	return w.Conn.Close()
}

// stalledLink links over a connection whose dialer side stalls on demand
// (writeStall). The acceptor, which never notices anything (its timers are
// a minute), writes to the dialer every 20 ms all along, so the dialer's
// peer is never silent. It returns the dialer's link.
func stalledLink(t *testing.T, cfg Config) (*Link, *writeStall) {
	t.Helper()
	patient := Config{KeepAliveInterval: time.Minute, WriteTimeout: time.Minute}
	dc, ac := loopback.Pair(t)
	ws := newWriteStall(dc)
	ctx := context.Background()
	d, a := linkOn(t, ws, ac, cfg, patient)
	ps, err := a.OpenStream(ctx, "chatter")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := d.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, ds)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := ps.Write([]byte("still here")); err != nil {
					return
				}
			}
		}
	}()
	return d, ws
}

// blockedWrite stalls ws under d and writes on a stream of d until the
// link closes (10 s at most): the write must fail with net.ErrClosed. It
// returns how long the link took to close.
func blockedWrite(t *testing.T, d *Link, ws *writeStall) time.Duration {
	t.Helper()
	s, err := d.OpenStream(context.Background(), "w")
	if err != nil {
		t.Fatal(err)
	}
	ws.stall()
	start := time.Now()
	if _, err := s.Write(make([]byte, 1024)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write to a connection that takes nothing: %v, want net.ErrClosed", err)
	}
	select {
	case <-d.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the link stayed up with its connection taking nothing for 10 s")
	}
	return time.Since(start)
}

// TestBlockedWriteClosesLink: a link whose connection takes no more
// writes closes within 4 × WriteTimeout and a check, although its peer is
// far from silent, and the blocked write reports net.ErrClosed.
func TestBlockedWriteClosesLink(t *testing.T) {
	leakcheck.Goroutines(t)
	cfg := Config{KeepAliveInterval: 100 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}
	d, ws := stalledLink(t, cfg)
	if took, bound := blockedWrite(t, d, ws), (1+lag.MaxStretch)*cfg.WriteTimeout+cfg.KeepAliveInterval; took > bound+bound/2+lag.Current() {
		t.Fatalf("link closed %v after its connection stopped taking writes, want about %v", took, bound)
	}
}

// TestLossyWriteWaits: a write blocked while the connection still
// carries, slowly (the kernel resends what a lossy network dropped, or the
// peer acknowledges data now and then: both stood in for here), the peer
// heard all along, keeps the link past the blocked-write bound: once it
// goes through, the link carries on. A write that stays blocked closes the
// link at lossPatience times the bound.
func TestLossyWriteWaits(t *testing.T) {
	t.Cleanup(func() { sendStateOf = sendState }) // after the leak check
	leakcheck.Goroutines(t)
	cfg := Config{KeepAliveInterval: 100 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}
	bound := (1 + lag.MaxStretch) * cfg.WriteTimeout
	ctx := context.Background()
	resent := func(net.Conn) (uint64, bool, bool) { return 0, true, true }
	var acked atomic.Uint64
	acking := func(net.Conn) (uint64, bool, bool) { return acked.Add(100), false, true }

	for _, c := range []struct {
		name  string
		state func(net.Conn) (uint64, bool, bool)
	}{{"resent, goes through", resent}, {"acknowledged slowly, goes through", acking}} {
		t.Run(c.name, func(t *testing.T) {
			sendStateOf = c.state
			d, ws := stalledLink(t, cfg)
			s, err := d.OpenStream(ctx, "w")
			if err != nil {
				t.Fatal(err)
			}
			ws.stall()
			wrote := make(chan error, 1)
			go func() {
				_, err := s.Write(make([]byte, 1024))
				wrote <- err
			}()
			deadline := time.Now().Add(10 * time.Second)
			for d.live.lossy.Load() < 2 { // two checks past the bound
				if time.Now().After(deadline) {
					t.Fatal("the check never let the blocked write go on past its bound")
				}
				time.Sleep(5 * time.Millisecond) // polling against the deadline
			}
			select {
			case <-d.Done():
				t.Fatalf("the link closed while the connection carried (%v)", d.Err())
			default:
			}
			ws.release()
			if err := <-wrote; err != nil {
				t.Fatalf("the write, once the network carried it: %v", err)
			}
			if _, err := d.Ping(ctx); err != nil {
				t.Fatalf("a ping after the lossy spell: %v", err)
			}
		})
	}

	t.Run("never goes through", func(t *testing.T) {
		sendStateOf = resent
		d, ws := stalledLink(t, cfg)
		took, patience := blockedWrite(t, d, ws), lossPatience*bound
		if took < patience-cfg.KeepAliveInterval || took > patience+patience/2+lag.Current() {
			t.Fatalf("link closed %v after its connection stopped taking writes, want about %v", took, patience)
		}
		if !errors.Is(d.Err(), ErrWriteBlocked) {
			t.Fatalf("link's error %v, want ErrWriteBlocked", d.Err())
		}
	})
}

// TestOnSilentTwice: a peer gone silent is reported to OnSilent when it
// has been silent for KeepAliveInterval + WriteTimeout/2, and once more
// halfway from there to the bound when nobody vouched (a lossy network
// may lose the first question or its answer); then the link closes at
// the bound. A vouch starts the silence again, and with it the rounds.
func TestOnSilentTwice(t *testing.T) {
	cfg := Config{KeepAliveInterval: 100 * time.Millisecond, WriteTimeout: 400 * time.Millisecond}
	var mu sync.Mutex
	var calls []time.Duration // silence of the peer at each call
	vouch := 0                // calls still to answer with a vouch
	cfg.OnSilent = func(l *Link) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, l.Silence())
		if vouch > 0 {
			vouch--
			l.Vouch()
		}
	}
	pcfg := Config{KeepAliveInterval: time.Minute, WriteTimeout: time.Minute} // the frozen end notices nothing
	a, b := net.Pipe()
	fb := newFreezable(b)
	la, _ := linkOn(t, a, fb, cfg, pcfg)
	mu.Lock()
	vouch = 1
	mu.Unlock()
	fb.freeze()
	limit := cfg.KeepAliveInterval + cfg.WriteTimeout
	select {
	case <-la.Done():
	case <-time.After(20 * limit):
		t.Fatalf("silent peer not declared dead after %v", 20*limit)
	}
	mu.Lock()
	defer mu.Unlock()
	// Vouched at the first call; then two calls, the second halfway.
	suspect := cfg.KeepAliveInterval + cfg.WriteTimeout/2
	again := suspect + (limit-suspect)/2
	if len(calls) != 3 {
		t.Fatalf("OnSilent called %d times (at silences %v), want 3: once vouched, then twice", len(calls), calls)
	}
	slack := limit/4 + lag.Current()
	// Silence counts from the last read; the vouch at the first call
	// counts as hearing from the peer then.
	v := calls[0]
	for i, want := range []time.Duration{suspect, v + suspect, v + again} {
		if got := calls[i]; got < want || got > want+slack {
			t.Errorf("call %d at a silence of %v, want %v to %v", i+1, got, want, want+slack)
		}
	}
	if !errors.Is(la.Err(), ErrSilent) {
		t.Errorf("link's error %v, want ErrSilent", la.Err())
	}
}
