package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/loopback"
)

// Tests of what links need of hashicorp/yamux, and of the work-arounds at
// the boundary (stream.go, streams.go, serve.go, config.go): each fails
// without its work-around.

// linkOver runs the handshake over the two ends of a connection, the
// dialer on dc and the acceptor on ac, both with cfg; the links close when
// t ends.
func linkOver(t *testing.T, cfg Config, dc, ac net.Conn) (d, a *Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	accepted := make(chan linkResult, 1)
	go func() {
		l, err := Server(ctx, ac, Hello{Cluster: "c", ID: "b"}, cfg, nil)
		accepted <- linkResult{l, err}
	}()
	d, err := Client(ctx, dc, Hello{Cluster: "c", ID: "a"}, cfg, nil)
	r := <-accepted
	if err != nil || r.err != nil {
		t.Fatalf("dialer: %v, acceptor: %v", err, r.err)
	}
	t.Cleanup(func() { d.Close(); r.l.Close() })
	return d, r.l
}

// acceptAll accepts n streams on l.
func acceptAll(t *testing.T, l *Link, n int) []*Stream {
	t.Helper()
	var out []*Stream
	for range n {
		s, err := l.AcceptStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// Streams written at once, with the window updates and pings this makes,
// arrive whole and in order, and pings are answered meanwhile: control
// frames are not starved by data writers.
func TestConcurrentWritesAndControlFrames(t *testing.T) {
	leakcheck.Goroutines(t)
	d, a := linkPair(t)
	const streams, size, chunk = 20, 256 << 10, 256
	var wg sync.WaitGroup
	errs := make(chan error, 2*streams)
	for i := range streams {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s, err := d.OpenStream(context.Background(), fmt.Sprint(i))
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			buf := bytes.Repeat([]byte{byte(i)}, size)
			for off := 0; off < size; off += chunk {
				if _, err := s.Write(buf[off : off+chunk]); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			s, err := a.AcceptStream(context.Background())
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			got, err := io.ReadAll(s)
			if err != nil {
				errs <- err
				return
			}
			if len(got) != size || bytes.Count(got, []byte{got[0]}) != size || s.Protocol() != fmt.Sprint(got[0]) {
				errs <- fmt.Errorf("stream %s got %d bytes, not %d of one value", s.Protocol(), len(got), size)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		case <-time.After(10 * time.Millisecond):
			if _, err := d.Ping(context.Background()); err != nil {
				t.Fatalf("ping during the writes: %v", err)
			}
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// An idle link served by Serve costs three goroutines per side: yamux's
// receive and send loops and the accepting goroutine. The liveness check
// runs on a timer.
func TestIdleLinkGoroutines(t *testing.T) {
	leakcheck.Goroutines(t)
	before := runtime.NumGoroutine()
	d, a := linkPair(t)
	var mu sync.Mutex
	var kept []*Stream
	keep := func(s *Stream, err error) {
		if err == nil {
			mu.Lock()
			kept = append(kept, s)
			mu.Unlock()
		}
	}
	d.Serve(keep, nil)
	a.Serve(keep, nil)
	for _, l := range []*Link{d, a} {
		s, err := l.OpenStream(context.Background(), "idle")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Each stream is handed to Serve's callback once the peer's receive
	// loop has taken its opening frame; the count is read after both.
	served := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(kept)
	}
	const perSide = 3
	deadline := time.Now().Add(5 * time.Second)
	for served() < 2 || runtime.NumGoroutine() > before+2*perSide {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines for an idle pair of links, want %d; %d streams served, want 2", runtime.NumGoroutine()-before, 2*perSide, served())
		}
		time.Sleep(5 * time.Millisecond) // polling against the deadline
	}
}

// closeGate is a connection whose Close waits until the gate opens, as a
// session's Close may wait on a busy machine between shutting down and
// closing its streams.
type closeGate struct {
	net.Conn
	gate chan struct{}
}

func (c closeGate) Close() error {
	<-c.gate
	return c.Conn.Close()
}

// A read blocked on a stream fails as soon as its session shuts down (here
// because the peer closed the link), not once yamux has closed its streams:
// yamux loops meanwhile (hashicorp/yamux#176). The session's shutdown is
// held in its connection's Close, before it closes its streams, for as
// long as the read is awaited.
func TestReadEndsWhenSessionShutsDown(t *testing.T) {
	// A stream this side has closed still reads what the peer sends until
	// the peer closes too: its reads must end as promptly.
	for _, closed := range []bool{false, true} {
		t.Run(fmt.Sprintf("closed=%v", closed), func(t *testing.T) {
			leakcheck.Goroutines(t)
			dc, ac := loopback.Pair(t)
			gate := make(chan struct{})
			var opened sync.Once
			defer opened.Do(func() { close(gate) })
			d, a := linkOver(t, fastConfig, closeGate{dc, gate}, ac)
			s, err := d.OpenStream(context.Background(), "blocked")
			if err != nil {
				t.Fatal(err)
			}
			if closed {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			read := make(chan error, 1)
			go func() {
				_, err := s.Read(make([]byte, 10))
				read <- err
			}()
			a.Close()
			select {
			case err := <-read:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("read on a shut-down link: %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a read blocked on a stream did not end when its link shut down")
			}
			opened.Do(func() { close(gate) })
			select {
			case <-d.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the link did not close once its connection could")
			}
		})
	}
}

// A frame that waits WriteTimeout for the connection makes yamux return
// ErrConnectionWriteTimeout and leave the frame queued; the link then
// closes, and the write reports net.ErrClosed, as for a dead peer.
func TestWriteTimeoutClosesLink(t *testing.T) {
	leakcheck.Goroutines(t)
	cfg := Config{KeepAliveInterval: time.Minute, WriteTimeout: 200 * time.Millisecond}
	dc, ac := loopback.Pair(t)
	fd := newFreezable(dc)
	d, _ := linkOver(t, cfg, fd, ac)
	s, err := d.OpenStream(context.Background(), "w")
	if err != nil {
		t.Fatal(err)
	}
	fd.freeze() // the connection takes nothing more
	if _, err := s.Write(make([]byte, 1024)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write to a connection that takes nothing: %v, want net.ErrClosed", err)
	}
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the link stayed up after a write timed out")
	}
}

// A peer slow to accept a stream costs that stream's opener some waiting,
// never the link: yamux's StreamOpenTimeout would close the whole session.
func TestSlowAcceptKeepsLink(t *testing.T) {
	leakcheck.Goroutines(t)
	cfg := Config{HandshakeTimeout: 200 * time.Millisecond}
	dc, ac := loopback.Pair(t)
	d, a := linkOver(t, cfg, dc, ac)
	s, err := d.OpenStream(context.Background(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// What is tested is that nothing happens for several times what a
	// stream-open timeout derived from HandshakeTimeout would be.
	select {
	case <-d.Done():
		t.Fatal("the link closed while its peer had not accepted a stream yet")
	case <-a.Done():
		t.Fatal("the link closed while this node had not accepted a stream yet")
	case <-time.After(8 * cfg.HandshakeTimeout):
	}
	as := acceptAll(t, a, 1)[0]
	got := make([]byte, 5)
	if _, err := io.ReadFull(as, got); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// While AcceptBacklog of this node's streams wait for the peer to accept
// them, OpenStream waits, until its context ends; nothing is reset, and
// once the peer accepts, opening works again.
func TestOpenStreamWaitsForBacklog(t *testing.T) {
	leakcheck.Goroutines(t)
	cfg := Config{AcceptBacklog: 4}
	dc, ac := loopback.Pair(t)
	d, a := linkOver(t, cfg, dc, ac)
	for i := range cfg.AcceptBacklog {
		s, err := d.OpenStream(context.Background(), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := d.OpenStream(ctx, "over"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("open beyond the peer's backlog: %v, want context.DeadlineExceeded", err)
	}
	got := make(chan string, 16)
	a.Serve(func(s *Stream, err error) {
		if err != nil {
			return // the stream whose open was abandoned, closed untagged
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(s, b); err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- fmt.Sprintf("%s=%d", s.Protocol(), b[0])
	}, nil)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := d.OpenStream(ctx, "after")
	if err != nil {
		t.Fatalf("open once the peer accepts: %v", err)
	}
	if _, err := s.Write([]byte{9}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"0=0": true, "1=1": true, "2=2": true, "3=3": true, "after=9": true}
	for len(want) > 0 {
		select {
		case g := <-got:
			if !want[g] {
				t.Fatalf("served %s", g)
			}
			delete(want, g)
		case <-time.After(5 * time.Second):
			t.Fatalf("streams not served: %v", want)
		}
	}
	if d.IsClosed() || a.IsClosed() {
		t.Fatal("the link closed")
	}
}

// WriteNoWait writes what the peer's window takes and returns at once
// when it is full; the rest, written later with Write, arrives after it,
// nothing lost or repeated.
func TestWriteNoWait(t *testing.T) {
	leakcheck.Goroutines(t)
	d, a := linkPair(t)
	s, err := d.OpenStream(context.Background(), "nowait")
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 4<<20) // beyond any window
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	start := time.Now()
	n, err := s.WriteNoWait(payload)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n >= len(payload) {
		t.Fatalf("WriteNoWait wrote %d of %d bytes to a peer not reading", n, len(payload))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("WriteNoWait took %v", d)
	}
	// The window is full now: nothing more goes without waiting.
	if m, err := s.WriteNoWait(payload[n:]); err != nil || m != 0 {
		t.Fatalf("second WriteNoWait: %d, %v, want 0, nil", m, err)
	}
	as := acceptAll(t, a, 1)[0]
	done := make(chan error, 1)
	go func() {
		_, err := s.Write(payload[n:])
		s.Close()
		done <- err
	}()
	got, err := io.ReadAll(as)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(payload))
	}
	// A write deadline set before stays in force after WriteNoWait.
	s2, err := d.OpenStream(context.Background(), "deadline")
	if err != nil {
		t.Fatal(err)
	}
	s2.SetWriteDeadline(time.Now().Add(time.Hour))
	if _, err := s2.WriteNoWait([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if dl := s2.deadline(&s2.writeDeadline); dl.IsZero() {
		t.Fatal("WriteNoWait cleared the write deadline")
	}
}

// A StreamWindow below yamux's initial window (which yamux's Config
// refuses) means yamux's initial window: the link still comes up.
func TestSmallStreamWindow(t *testing.T) {
	cfg := Config{StreamWindow: 1024}
	dc, ac := loopback.Pair(t)
	d, a := linkOver(t, cfg, dc, ac)
	s, err := d.OpenStream(context.Background(), "small")
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("w"), 300<<10)
	go func() { s.Write(payload); s.Close() }()
	got, err := io.ReadAll(acceptAll(t, a, 1)[0])
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
}

// Streams that held a burst let go of their receive buffers once it is
// read: yamux keeps them as large as the burst until Shrink.
func TestDrainedStreamsLetGoOfBuffers(t *testing.T) {
	leakcheck.Goroutines(t)
	cfg := Config{KeepAliveInterval: 50 * time.Millisecond}
	dc, ac := loopback.Pair(t)
	d, a := linkOver(t, cfg, dc, ac)
	// A burst a little under the window (1 MiB, less the protocol tag):
	// the writes end without the reader reading.
	const streams, burst = 16, 1<<20 - 64
	payload := make([]byte, burst)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	buf := make([]byte, burst)
	base := heap()
	var opened []*Stream
	for i := range streams {
		s, err := d.OpenStream(context.Background(), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		opened = append(opened, s)
	}
	accepted := acceptAll(t, a, streams)
	for _, s := range opened {
		if _, err := s.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	// The ping's answer comes after the peer's receive loop has taken
	// every frame before it: all the bursts wait in their buffers.
	if _, err := d.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	held := heap()
	if held < base+streams*burst/2 {
		t.Fatalf("only %d KiB held after %d bursts of %d KiB", (held-base)>>10, streams, burst>>10)
	}
	for _, s := range accepted {
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for h := heap(); h > base+4<<20; h = heap() {
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB still held by %d drained streams (%d KiB after the bursts)", (h-base)>>10, streams, (held-base)>>10)
		}
		time.Sleep(20 * time.Millisecond) // polling against the deadline
	}
	for _, s := range append(opened, accepted...) {
		s.Close()
	}
}

// A stream whose writing side is closed here (CloseWrite) leaves the
// link's set of streams at the next sweep once no read on it is under
// way, and a read that starts then puts it back, so that the link's close
// still ends that read: a long-lived link does not hold every stream it
// ever closed, however long yamux waits for the peer's close.
func TestClosedStreamsLeaveTheSet(t *testing.T) {
	dc, ac := loopback.Pair(t)
	d, a := linkOver(t, fastConfig, dc, ac)
	tracked := func() int {
		d.streams.mu.Lock()
		defer d.streams.mu.Unlock()
		return len(d.streams.m)
	}
	// Both sides close, the end is read: dropped at the sweep.
	s, err := d.OpenStream(context.Background(), "both")
	if err != nil {
		t.Fatal(err)
	}
	peer := acceptAll(t, a, 1)[0]
	s.CloseWrite()
	peer.Close()
	if _, err := io.ReadAll(s); err != nil {
		t.Fatal(err)
	}
	d.streams.shrink()
	if n := tracked(); n != 0 {
		t.Fatalf("%d streams tracked after both sides closed and the end was read, want 0", n)
	}
	// Closed here, the peer's side open: a read blocks on it.
	s, err = d.OpenStream(context.Background(), "unread")
	if err != nil {
		t.Fatal(err)
	}
	acceptAll(t, a, 1)
	s.CloseWrite()
	d.streams.shrink()
	if n := tracked(); n != 0 {
		t.Fatalf("%d streams tracked after CloseWrite with no read under way, want 0", n)
	}
	read := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 1))
		read <- err
	}()
	waitTracked := time.Now().Add(5 * time.Second)
	for s.reads.Load() == 0 || tracked() != 1 {
		if time.Now().After(waitTracked) {
			t.Fatalf("a read on a closed stream: %d tracked, want 1", tracked())
		}
		time.Sleep(time.Millisecond) // polling against the deadline
	}
	d.streams.shrink()
	if n := tracked(); n != 1 {
		t.Fatalf("%d streams tracked after a sweep while a read is under way, want 1", n)
	}
	d.Close()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("a read on a stream closed on both ends returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read blocked on a closed stream still blocks 5 s after the link closed")
	}
}

// A stream's writer closes it with data still unread: a reader that
// comes to it later than twice HandshakeTimeout (the bound yamux had to
// wait for the peer's close) still reads every byte, then io.EOF. On a
// lossy link the last window of a stream takes seconds to arrive, and
// the reset that bound sent cut it short.
func TestClosedStreamWaitsForSlowReader(t *testing.T) {
	dc, ac := loopback.Pair(t)
	d, a := linkOver(t, fastConfig, dc, ac)
	s, err := d.OpenStream(context.Background(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	peer := acceptAll(t, a, 1)[0]
	want := bytes.Repeat([]byte("tallship"), 16<<10) // 128 KiB: within the window
	if _, err := s.Write(want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	time.Sleep(3 * fastConfig.HandshakeTimeout) // the reader is slow to come
	got, err := io.ReadAll(peer)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d of %d bytes (equal %v), err %v", len(got), len(want), bytes.Equal(got, want), err)
	}
	peer.Close()
}
