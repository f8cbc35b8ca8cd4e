package transport

import (
	"context"
	"encoding/binary"
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

// An idle link served by Serve holds no goroutine for it: one runs while
// a stream the peer opened waits to be accepted (leakcheck: none is left
// when the link closes).
func TestServeHoldsNoGoroutineIdle(t *testing.T) {
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
		for runtime.NumGoroutine() > before {
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

// TestServeTakesStreamsOpenedBeforeIt: streams the peer opened before
// Serve was called, and in a burst after, are all handed on, in order.
func TestServeTakesStreamsOpenedBeforeIt(t *testing.T) {
	leakcheck.Goroutines(t)
	d, a := linkPair(t)
	ctx := context.Background()
	open := func(i int) {
		s, err := d.OpenStream(ctx, fmt.Sprintf("p%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	for i := range 3 {
		open(i)
	}
	opened := func() int {
		a.accept.mu.Lock()
		defer a.accept.mu.Unlock()
		return a.accept.opened
	}
	for deadline := time.Now().Add(5 * time.Second); opened() < 3; time.Sleep(time.Millisecond) { // polling against the deadline
		if time.Now().After(deadline) {
			t.Fatal("a did not see d open 3 streams")
		}
	}
	got, _ := serveInto(t, a)
	for i := 3; i < 40; i++ {
		open(i)
	}
	for i := range 40 {
		if s := next(t, got); s.err != nil || s.proto != fmt.Sprintf("p%d", i) {
			t.Fatalf("stream %d: %+v", i, s)
		}
	}
}

// TestFrameScanCountsOpenedStreams: the scan follows yamux's frames
// however the reads cut them, and counts the data and window update
// frames that carry SYN, not a body's bytes that look like one.
func TestFrameScanCountsOpenedStreams(t *testing.T) {
	header := func(typ byte, flags uint16, stream, length uint32) []byte {
		h := make([]byte, yamuxHeaderSize)
		h[1] = typ
		binary.BigEndian.PutUint16(h[2:], flags)
		binary.BigEndian.PutUint32(h[4:], stream)
		binary.BigEndian.PutUint32(h[8:], length)
		return h
	}
	fake := header(yamuxTypeWindowUpdate, yamuxFlagSYN, 9, 0) // inside a body: not a frame
	var b []byte
	b = append(b, header(yamuxTypeWindowUpdate, yamuxFlagSYN, 1, 0)...)         // opens 1
	b = append(b, header(yamuxTypeData, 0, 1, uint32(len(fake)+3))...)          // a body
	b = append(b, append(fake, 1, 2, 3)...)                                     //
	b = append(b, header(2, 2, 0, 7)...)                                        // a ping: no body
	b = append(b, header(yamuxTypeData, yamuxFlagSYN, 3, 5)...)                 // opens 3, with a body
	b = append(b, 0, 0, 0, 0, 0)                                                //
	b = append(b, header(yamuxTypeWindowUpdate, 2 /* ACK */, 2, 1024)...)       // not an open
	b = append(b, header(yamuxTypeWindowUpdate, yamuxFlagSYN|2, 5, 256<<10)...) // opens 5
	for _, cut := range []int{1, 2, 5, 11, 12, 13, len(b)} {
		var f frameScan
		n := 0
		for p := b; len(p) > 0; {
			k := min(cut, len(p))
			n += f.scan(p[:k])
			p = p[k:]
		}
		if n != 3 {
			t.Errorf("read %d bytes at a time: %d streams opened, want 3", cut, n)
		}
	}
}
