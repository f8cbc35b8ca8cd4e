// Copyright (c) 2014 HashiCorp, Inc.
// SPDX-License-Identifier: MPL-2.0

package yamux

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/leakcheck"
	"github.com/tallship-go/tallship/internal/loopback"
)

// Tests of what tallship changed (see doc.go). The upstream suite was run
// on this copy when it was made; it is not kept here.

func testPair(t *testing.T, conf func(*Config)) (client, server *Session) {
	t.Helper()
	cc, sc := loopback.Pair(t)
	cfg := DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	cfg.ConnectionWriteTimeout = 5 * time.Second
	if conf != nil {
		conf(cfg)
	}
	var err error
	client, err = Client(cc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	server, err = Server(sc, cfg.Clone())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// Streams written at once, with the window updates and pings this makes,
// arrive whole and in order, and pings are answered meanwhile: control
// frames are not starved by data writers taking turns.
func TestConcurrentWritesAndControlFrames(t *testing.T) {
	leakcheck.Goroutines(t)
	client, server := testPair(t, nil)
	const streams, size, chunk = 50, 512 << 10, 256
	write := func(i int, s *Stream) error {
		buf := bytes.Repeat([]byte{byte(i)}, size)
		for off := 0; off < size; off += chunk {
			if _, err := s.Write(buf[off : off+chunk]); err != nil {
				return err
			}
		}
		return nil
	}
	read := func(_ int, s *Stream) error {
		got, err := io.ReadAll(s)
		if err != nil {
			return err
		}
		if len(got) != size || bytes.Count(got, got[:1]) != size {
			return fmt.Errorf("stream got %d bytes, not %d of one value", len(got), size)
		}
		return nil
	}
	done, errs := eachStream(client, server, streams, write, read)
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		case <-time.After(10 * time.Millisecond):
			if _, err := client.Ping(); err != nil {
				t.Fatalf("ping during the writes: %v", err)
			}
		}
	}
	for err := range errs {
		t.Error(err)
	}
}

// eachStream opens n streams from client and accepts n on server, and
// runs write on the i'th opened and read on the i'th accepted (streams
// are accepted in any order), all at once, each closing its stream when
// done. done is closed once all have returned; errs, closed then too,
// holds their errors.
func eachStream(client, server *Session, n int, write, read func(i int, s *Stream) error) (done chan struct{}, errs chan error) {
	var wg sync.WaitGroup
	errs = make(chan error, 2*n)
	run := func(i int, open func() (*Stream, error), f func(int, *Stream) error) {
		defer wg.Done()
		s, err := open()
		if err != nil {
			errs <- err
			return
		}
		defer s.Close()
		if err := f(i, s); err != nil {
			errs <- err
		}
	}
	for i := range n {
		wg.Add(2)
		go run(i, client.OpenStream, write)
		go run(i, server.AcceptStream, read)
	}
	done = make(chan struct{})
	go func() {
		wg.Wait()
		close(errs)
		close(done)
	}()
	return done, errs
}

// An idle session runs one goroutine: its receive loop.
func TestIdleSessionRunsOnlyItsReceiveLoop(t *testing.T) {
	leakcheck.Goroutines(t)
	before := runtime.NumGoroutine()
	client, server := testPair(t, nil)
	s, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("x"))
	a, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	a.Read(make([]byte, 1))
	client.Ping()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 { // one receive loop per side
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines for an idle pair of sessions, want 2", runtime.NumGoroutine()-before)
		}
		time.Sleep(5 * time.Millisecond) // polling against the deadline
	}
}

// AcceptNotify is called once for each stream queued for Accept.
func TestAcceptNotify(t *testing.T) {
	leakcheck.Goroutines(t)
	var notified atomic.Int32
	client, server := testPair(t, func(c *Config) {
		c.AcceptNotify = func() { notified.Add(1) }
	})
	for range 4 {
		s, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for notified.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d notifications for 4 streams", notified.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling against the deadline
	}
	for range 4 {
		if _, err := server.AcceptStream(); err != nil {
			t.Fatal(err)
		}
	}
	if n := notified.Load(); n != 4 {
		t.Fatalf("%d notifications for 4 streams", n)
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

// A read blocked on a stream fails as soon as its session shuts down, not
// once the session has closed its streams: upstream loops meanwhile
// (hashicorp/yamux#176). Here the session's Close is held in its
// connection's Close, before it closes its streams, for as long as the
// test lasts.
func TestReadEndsWhenSessionShutsDown(t *testing.T) {
	leakcheck.Goroutines(t)
	a, b := net.Pipe()
	gate := make(chan struct{})
	cfg := DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	client, err := Client(closeGate{a, gate}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	server, err := Server(b, cfg.Clone())
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	s, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		read <- err
	}()
	closed := make(chan struct{})
	go func() { client.Close(); close(closed) }()
	defer func() { close(gate); <-closed }()
	select {
	case err := <-read:
		if err != ErrSessionShutdown {
			t.Errorf("read on a shut-down session: %v, want %v", err, ErrSessionShutdown)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read blocked on a stream did not end when its session shut down")
	}
}
