package transport

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
)

// served is what a Serve handler saw: a protocol, or an error.
type served struct {
	proto string
	err   error
}

func serveInto(t *testing.T, l *Link) (<-chan served, <-chan struct{}) {
	t.Helper()
	got := make(chan served, 100)
	closed := make(chan struct{})
	var calls atomic.Int32
	l.Serve(func(s *Stream, err error) {
		if err != nil {
			got <- served{err: err}
			return
		}
		got <- served{proto: s.Protocol()}
		s.Close()
	}, func() {
		if calls.Add(1) > 1 {
			t.Error("closed called twice")
			return
		}
		close(closed)
	})
	return got, closed
}

func next(t *testing.T, ch <-chan served) served {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no stream served within 5 s")
		return served{}
	}
}

func TestServeHandsStreamsInOrder(t *testing.T) {
	leakcheck.Goroutines(t)
	d, a := linkPair(t)
	got, _ := serveInto(t, a)
	ctx := context.Background()
	for i := range 20 {
		if i == 10 {
			// A stream whose tag is empty: refused, the link stays up.
			ys, err := d.sess.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			ys.Write([]byte{0})
			defer ys.Close()
		}
		s, err := d.OpenStream(ctx, fmt.Sprintf("p%d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	for i := range 20 {
		if i == 10 {
			if s := next(t, got); !errors.Is(s.err, ErrBadStream) {
				t.Fatalf("stream with an empty tag: %+v, want ErrBadStream", s)
			}
		}
		if s := next(t, got); s.err != nil || s.proto != fmt.Sprintf("p%d", i) {
			t.Fatalf("stream %d: %+v", i, s)
		}
	}
	if a.IsClosed() {
		t.Fatal("a bad stream closed the link")
	}
}

// An idle link served by Serve holds one goroutine for it, which ends
// when the link closes (leakcheck).
func TestServeHoldsOneGoroutine(t *testing.T) {
	leakcheck.Goroutines(t)
	d, a := linkPair(t)
	before := runtime.NumGoroutine()
	got, closed := serveInto(t, a)
	for round := range 3 {
		s, err := d.OpenStream(context.Background(), "x")
		if err != nil {
			t.Fatal(err)
		}
		if r := next(t, got); r.proto != "x" {
			t.Fatalf("round %d: %+v", round, r)
		}
		s.Close()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before+1 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d goroutines while idle, %d before Serve", round, runtime.NumGoroutine(), before)
			}
			time.Sleep(5 * time.Millisecond) // polling against the deadline
		}
	}
	a.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("closed not called after the link closed")
	}
}

func TestServeReportsClose(t *testing.T) {
	tests := []struct {
		name  string
		close func(d, a *Link)
		late  bool // Serve only after the link closed
	}{
		{name: "own close", close: func(d, a *Link) { a.Close() }},
		{name: "peer close", close: func(d, a *Link) { d.Close() }},
		{name: "closed before Serve", close: func(d, a *Link) { a.Close() }, late: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakcheck.Goroutines(t)
			d, a := linkPair(t)
			var closed <-chan struct{}
			if tt.late {
				tt.close(d, a)
				_, closed = serveInto(t, a)
			} else {
				_, closed = serveInto(t, a)
				tt.close(d, a)
			}
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("closed not called within 5 s of the link's close")
			}
			if !a.IsClosed() {
				t.Fatal("closed called on an open link")
			}
		})
	}
}
