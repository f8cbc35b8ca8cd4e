package yamux

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/leakcheck"
)

// Tests of the chunked receive queue and of the Read's window update
// (recvqueue.go, Stream.sendWindowUpdate).

// pattern returns n bytes that differ with seed and offset.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seed*131 + i*7 + i>>9)
	}
	return b
}

// Streams written at once in writes of 1 byte to 300 KiB (frames that
// join a chunk's tail, fill one, or span several) and read meanwhile in
// reads of every size, some of them late, arrive whole and in order.
func TestReceiveQueueKeepsDataWhole(t *testing.T) {
	leakcheck.Goroutines(t)
	client, server := testPair(t, func(c *Config) { c.MaxStreamWindowSize = 1 << 20 })
	const streams, size = 8, 4 << 20
	write := func(i int, s *Stream) error {
		data := pattern(i, size)
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		for off := 0; off < size; {
			n := minInt(size-off, 1+rng.IntN(300<<10))
			if rng.IntN(2) == 0 {
				n = minInt(size-off, 1+rng.IntN(200))
			}
			if _, err := s.Write(data[off : off+n]); err != nil {
				return err
			}
			off += n
		}
		return nil
	}
	read := func(i int, s *Stream) error {
		rng := rand.New(rand.NewPCG(uint64(i), 2))
		var got bytes.Buffer
		buf := make([]byte, 200<<10)
		for {
			if rng.IntN(64) == 0 {
				time.Sleep(time.Millisecond) // let frames pile up
			}
			n, err := s.Read(buf[:1+rng.IntN(len(buf))])
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		// The stream's first byte names its writer: streams are
		// accepted in any order.
		if got.Len() == 0 {
			return errors.New("a stream got nothing")
		}
		for w := range streams {
			if got.Bytes()[0] == pattern(w, 1)[0] {
				if !bytes.Equal(got.Bytes(), pattern(w, size)) {
					return fmt.Errorf("stream %d: got %d bytes, not the %d written", w, got.Len(), size)
				}
				return nil
			}
		}
		return errors.New("a stream starts with no writer's byte")
	}
	done, errs := eachStream(client, server, streams, write, read)
	<-done
	for err := range errs {
		t.Error(err)
	}
}

// rawPeer is a session's peer that speaks yamux by hand over a pipe.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
}

// rawServer returns a server session and its raw peer (the client).
func rawServer(t *testing.T, conf func(*Config)) (*Session, rawPeer) {
	t.Helper()
	a, b := net.Pipe()
	cfg := DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	cfg.ConnectionWriteTimeout = 10 * time.Second
	if conf != nil {
		conf(cfg)
	}
	server, err := Server(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		server.Close()
		b.Close()
	})
	return server, rawPeer{t, b}
}

// frame writes a frame; the pipe makes it wait until the session reads it.
func (p rawPeer) frame(typ uint8, flags uint16, id, length uint32, body []byte) {
	p.t.Helper()
	hdr := header(make([]byte, headerSize))
	hdr.encode(typ, flags, id, length)
	if _, err := p.conn.Write(append(hdr, body...)); err != nil {
		p.t.Errorf("raw peer: %v", err)
	}
}

// accept accepts the stream the raw peer opened, reading the session's
// ACK for it.
func (p rawPeer) accept(server *Session) *Stream {
	p.t.Helper()
	got := make(chan *Stream, 1)
	go func() {
		s, err := server.AcceptStream()
		if err != nil {
			p.t.Error(err)
		}
		got <- s
	}()
	ack := header(make([]byte, headerSize))
	if _, err := io.ReadFull(p.conn, ack); err != nil {
		p.t.Fatal(err)
	}
	if ack.MsgType() != typeWindowUpdate || ack.Flags()&flagACK == 0 {
		p.t.Fatalf("raw peer got %v, not an ACK", ack)
	}
	s := <-got
	if s == nil {
		p.t.FailNow()
	}
	return s
}

// A Read with a deadline, on a stream whose frame body is half received,
// gets what was queued, then times out; once the body is in, the data is
// whole.
func TestReadDeadlineWhileBodyArrives(t *testing.T) {
	leakcheck.Goroutines(t)
	server, peer := rawServer(t, nil)
	const size, first = 200 << 10, 100 << 10
	data := pattern(1, size)
	sent := make(chan struct{})
	go func() {
		peer.frame(typeData, flagSYN, 1, size, data[:first])
		close(sent)
	}()
	s := peer.accept(server)
	<-sent // the receive loop waits in the body's second chunk

	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	got := make([]byte, size)
	n, err := io.ReadFull(s, got)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("read of a half-received body: %d bytes, %v; want a timeout", n, err)
	}
	if n == 0 || n > first || !bytes.Equal(got[:n], data[:n]) {
		t.Fatalf("read %d bytes of the %d sent, or not them", n, first)
	}

	go peer.conn.Write(data[first:])
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, got[n:]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the body read in two parts differs from the one sent")
	}
}

// A connection lost in the middle of a frame's body ends the session: a
// Read gets a prefix of the body, then fails, and nothing is left running.
func TestSessionShutdownMidFrame(t *testing.T) {
	leakcheck.Goroutines(t)
	server, peer := rawServer(t, nil)
	const size, first = 200 << 10, 100 << 10
	data := pattern(2, size)
	sent := make(chan struct{})
	go func() {
		peer.frame(typeData, flagSYN, 1, size, data[:first])
		close(sent)
	}()
	s := peer.accept(server)
	<-sent
	peer.conn.Close()

	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(s)
	if errors.Is(err, ErrTimeout) {
		t.Fatal("a read on a session whose connection was lost timed out")
	}
	if len(got) > first || !bytes.Equal(got, data[:len(got)]) {
		t.Fatalf("read %d bytes of the %d sent, or not them", len(got), first)
	}
	select {
	case <-server.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not shut down")
	}
}

// A data frame larger than the stream's receive window ends the session
// (a protocol error), before its body is read.
func TestFrameBeyondWindowEndsSession(t *testing.T) {
	leakcheck.Goroutines(t)
	server, peer := rawServer(t, nil)
	go peer.frame(typeData, flagSYN, 1, initialStreamWindow+1, nil)
	go io.Copy(io.Discard, peer.conn) // the go away
	select {
	case <-server.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatal("a frame beyond the window did not end the session")
	}
}

// A Read that frees half the window returns without waiting for its
// window update to be written: here the peer reads nothing, so the write
// waits until the session closes.
func TestReadDoesNotWaitForWindowUpdate(t *testing.T) {
	leakcheck.Goroutines(t)
	server, peer := rawServer(t, nil)
	data := pattern(3, int(initialStreamWindow))
	go peer.frame(typeData, flagSYN, 1, initialStreamWindow, data)
	s := peer.accept(server)
	got := make([]byte, initialStreamWindow)
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(s, got)
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second): // ConnectionWriteTimeout is 10 s
		t.Fatal("a Read waited for its window update to be written")
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read other bytes than those sent")
	}
	// The updates go out once the peer reads (one for each half window
	// freed, at least).
	upd := header(make([]byte, headerSize))
	peer.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for back := uint32(0); back < initialStreamWindow/2; back += upd.Length() {
		if _, err := io.ReadFull(peer.conn, upd); err != nil {
			t.Fatalf("window given back: %d of %d; %v", back, initialStreamWindow, err)
		}
		if upd.MsgType() != typeWindowUpdate || upd.StreamID() != 1 {
			t.Fatalf("peer got %v, not a window update", upd)
		}
	}
}

// Chunks come from pools of their size class and go back to them.
func TestChunkSizes(t *testing.T) {
	for _, c := range []struct{ n, size int }{
		{1, 1 << 10}, {1 << 10, 1 << 10}, {1<<10 + 1, 2 << 10},
		{32 << 10, 32 << 10}, {64 << 10, 64 << 10}, {1 << 20, 64 << 10},
	} {
		p := getChunk(c.n)
		if len(*p) != c.size {
			t.Errorf("getChunk(%d): %d bytes, want %d", c.n, len(*p), c.size)
		}
		putChunk(p)
	}
}

// A Read whose window update finds the control queue full (the connection
// has taken nothing for a while) still gets the update out: given back
// instead, as the queue-or-give-back code did, the window stayed shut,
// since the Read drained the stream and no later Read came to send it,
// and the writer, out of window, waited for good.
func TestWindowUpdateWaitsWhenTheQueueIsFull(t *testing.T) {
	leakcheck.Goroutines(t)
	client, server := testPair(t, nil)
	window := int(client.config.MaxStreamWindowSize)
	cs, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.Write(make([]byte, window)); err != nil { // all the window
		t.Fatal(err)
	}
	ss, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()

	// The server's connection takes nothing: its write turn is held, and
	// the control queue is full.
	server.writeSem <- struct{}{}
	for range maxQueuedNoWait {
		var hdr header = make([]byte, headerSize)
		hdr.encode(typeWindowUpdate, 0, ss.id, 0)
		if err := server.queue(&sendReady{Hdr: hdr}, false); err != nil {
			t.Fatal(err)
		}
	}
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(ss, make([]byte, window))
		read <- err
	}()
	// Until the Read has met the full queue: it has queued its update
	// beyond the bound and waits, or (given the window back) returned.
	var readErr error
	readDone := false
	for !readDone {
		select {
		case readErr = <-read:
			readDone = true
			continue
		case <-time.After(time.Millisecond):
		}
		server.ctrlLock.Lock()
		waiting := len(server.ctrl) > maxQueuedNoWait
		server.ctrlLock.Unlock()
		if waiting {
			break
		}
	}
	<-server.writeSem
	server.flush()
	if !readDone {
		readErr = <-read
	}
	if readErr != nil {
		t.Fatal(readErr)
	}
	// The writer has its window back: more goes through.
	wrote := make(chan error, 1)
	go func() {
		_, err := cs.Write(make([]byte, window))
		wrote <- err
	}()
	got := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(ss, make([]byte, window))
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never got its window back")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}
