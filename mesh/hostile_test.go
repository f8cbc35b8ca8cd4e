package mesh

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/transport"
)

// TestHostileInputClosesOneConnection throws garbage at a node: each
// attack closes that one connection, and the node keeps serving its peer.
func TestHostileInputClosesOneConnection(t *testing.T) {
	leakcheck.Goroutines(t)
	victim := start(t, "c", testConfig("v"))
	friend := start(t, "c", testConfig("f"))
	ctx := context.Background()
	if _, err := friend.Connect(ctx, addr(t, victim)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link", 5*time.Second, func() bool { return settled(victim, friend) })
	stillServing := func(t *testing.T) {
		t.Helper()
		if err := victim.Send(ctx, "f", []byte("ok?")); err != nil {
			t.Fatalf("victim cannot send: %v", err)
		}
		if m := receive(t, friend); string(m.Data) != "ok?" {
			t.Fatalf("friend got %q", m.Data)
		}
	}
	wrongVersion := func() []byte {
		b := []byte("TSHP\x00\x63\x00\x00\x00\x04junk")
		return b
	}
	junk := make([]byte, 4096)
	rand.Read(junk)
	raw := []struct {
		name string
		send []byte
	}{
		{"random bytes", junk},
		{"truncated handshake", []byte("TSHP\x00\x01\x00\x00\x01\x00partial")},
		{"wrong version", wrongVersion()},
		{"silent connection", nil},
	}
	for _, tt := range raw {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr(t, victim))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tt.send != nil {
				c.Write(tt.send)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			_, err = io.Copy(io.Discard, c) // until the node closes it
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the node did not close the connection")
			}
			t.Logf("closed after %v", time.Since(start))
			stillServing(t)
		})
	}

	evil := func(t *testing.T) *transport.Link {
		t.Helper()
		l, err := transport.Dial(ctx, addr(t, victim), transport.Hello{Cluster: "c", ID: "evil"}, transport.Config{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	t.Run("oversized frame", func(t *testing.T) {
		l := evil(t)
		s, err := l.OpenStream(ctx, protoMessages)
		if err != nil {
			t.Fatal(err)
		}
		var hdr [wire.StreamHeaderLen]byte
		s.Write(hdr[:])
		frame := binary.AppendUvarint([]byte{wire.Message}, uint64(victim.cfg.MaxMessageSize+1))
		s.Write(frame)
		select {
		case <-l.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("link with an oversized frame stayed up")
		}
		stillServing(t)
	})
	t.Run("flood of stream opens", func(t *testing.T) {
		l := evil(t)
		ln, err := victim.Listen("sink")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		for i := 0; i < 3000; i++ {
			s, err := l.OpenStream(ctx, userPrefix+"sink")
			if err != nil {
				break // the node closed the link or refuses more
			}
			_ = s // left open on purpose
		}
		stillServing(t)
		// Refused streams stay until the peer closes them: past twice
		// MaxStreams of them, the flood costs the peer its link.
		waitFor(t, "the flooding peer's link closed", 5*time.Second, l.IsClosed)
	})
	t.Run("registry stream cut mid-frame", func(t *testing.T) {
		// A registry stream that fails while the link lives takes the
		// link with it: the peer would look linked with none of its
		// changes from then on.
		l := evil(t)
		s, err := l.OpenStream(ctx, protoRegistry)
		if err != nil {
			t.Fatal(err)
		}
		frame := binary.AppendUvarint([]byte{1}, 100) // a Hello of 100 bytes
		s.Write(append(frame, "ten bytes."...))
		s.Close()
		select {
		case <-l.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the link stayed up without its registry stream")
		}
		stillServing(t)
	})
	t.Run("registry stream from the acceptor side", func(t *testing.T) {
		l := evil(t)
		// evil dialed, so it may open the registry stream once; a second
		// one closes its link.
		for i := 0; i < 2; i++ {
			if _, err := l.OpenStream(ctx, protoRegistry); err != nil {
				break
			}
		}
		select {
		case <-l.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a second registry stream did not close the link")
		}
		stillServing(t)
	})
}

func TestHandshakeFloodIsBounded(t *testing.T) {
	leakcheck.Goroutines(t)
	cfg := testConfig("v")
	cfg.MaxHandshakes = 4
	victim := start(t, "c", cfg)
	var conns []net.Conn
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", addr(t, victim))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Beyond the bound, connections are dropped at once.
	dropped := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			dropped++
		}
	}
	if dropped < 40 {
		t.Fatalf("%d of 50 silent connections dropped at once, want ≥ 40", dropped)
	}
	friend := start(t, "c", testConfig("f"))
	waitFor(t, "handshakes free again", 5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := friend.Connect(ctx, addr(t, victim))
		return err == nil
	})
}
