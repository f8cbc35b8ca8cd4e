package transport

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// freezable is a connection that can go silent: once frozen, its reads and
// writes block until it is closed, as with a peer whose host froze.
type freezable struct {
	net.Conn
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
	defer lb.Close()
	defer la.Close()

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
	// The bound is limit; the slack is for a loaded machine.
	if d := time.Since(start); d > limit+limit/2 {
		t.Fatalf("silent peer declared dead after %v, want about %v at most", d, limit)
	}
}
