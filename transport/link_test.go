package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// fastConfig keeps timeouts short so failing handshakes end quickly.
var fastConfig = Config{HandshakeTimeout: 500 * time.Millisecond}

type linkResult struct {
	l   *Link
	err error
}

// pair runs a handshake between a dialer with hello d and an acceptor with
// hello a over loopback TCP and returns both results.
func pair(t *testing.T, d, a Hello, verifyD, verifyA func(Hello) error) (dial, acc linkResult) {
	t.Helper()
	return pairWith(t, fastConfig, d, a, verifyD, verifyA)
}

// pairWith is pair with both ends on cfg; the links close when t ends.
func pairWith(t testing.TB, cfg Config, d, a Hello, verifyD, verifyA func(Hello) error) (dial, acc linkResult) {
	t.Helper()
	return pairConfigs(t, cfg, cfg, d, a, verifyD, verifyA)
}

// pairConfigs is pairWith with the dialer on dcfg and the acceptor on
// acfg.
func pairConfigs(t testing.TB, dcfg, acfg Config, d, a Hello, verifyD, verifyA func(Hello) error) (dial, acc linkResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	accCh := make(chan linkResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accCh <- linkResult{err: err}
			return
		}
		l, err := Server(ctx, c, a, acfg, verifyA)
		if err != nil {
			c.Close()
		}
		accCh <- linkResult{l, err}
	}()
	l, err := Dial(ctx, ln.Addr().String(), d, dcfg, verifyD)
	dial = linkResult{l, err}
	acc = <-accCh
	for _, r := range []linkResult{dial, acc} {
		if r.l != nil {
			t.Cleanup(func() { r.l.Close() })
		}
	}
	return dial, acc
}

func TestHandshake(t *testing.T) {
	refuse := func(Hello) error { return errors.New("node is closing") }
	tests := []struct {
		name             string
		dialer, acceptor Hello
		verifyD, verifyA func(Hello) error
		want             error // on both sides; nil = link up
	}{
		{name: "ok", dialer: Hello{Cluster: "c", ID: "a"}, acceptor: Hello{Cluster: "c", ID: "b"}},
		{name: "wrong cluster", dialer: Hello{Cluster: "c", ID: "a"}, acceptor: Hello{Cluster: "d", ID: "b"}, want: ErrWrongCluster},
		{name: "wrong version", dialer: Hello{Version: 9, Cluster: "c", ID: "a"}, acceptor: Hello{Cluster: "c", ID: "b"}, want: ErrWrongVersion},
		// Version 1 framed the registry stream otherwise: it must never get a stream.
		{name: "version 1 dials", dialer: Hello{Version: 1, Cluster: "c", ID: "a"}, acceptor: Hello{Cluster: "c", ID: "b"}, want: ErrWrongVersion},
		{name: "version 1 accepts", dialer: Hello{Cluster: "c", ID: "a"}, acceptor: Hello{Version: 1, Cluster: "c", ID: "b"}, want: ErrWrongVersion},
		{name: "self", dialer: Hello{Cluster: "c", ID: "a"}, acceptor: Hello{Cluster: "c", ID: "a"}, want: ErrSelfLink},
		{name: "twins", dialer: Hello{Cluster: "c", ID: "a", Incarnation: 1}, acceptor: Hello{Cluster: "c", ID: "a", Incarnation: 2}, want: ErrDuplicateID},
		{name: "acceptor refuses", dialer: Hello{Cluster: "c", ID: "a"}, acceptor: Hello{Cluster: "c", ID: "b"}, verifyA: refuse, want: ErrRefused},
		{name: "dialer refuses", dialer: Hello{Cluster: "c", ID: "a"}, acceptor: Hello{Cluster: "c", ID: "b"}, verifyD: refuse, want: ErrRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, a := pair(t, tt.dialer, tt.acceptor, tt.verifyD, tt.verifyA)
			if tt.want == nil {
				if d.err != nil || a.err != nil {
					t.Fatalf("dialer: %v, acceptor: %v", d.err, a.err)
				}
				if d.l.Peer() != "b" || a.l.Peer() != "a" {
					t.Fatalf("peers = %q, %q", d.l.Peer(), a.l.Peer())
				}
				if d.l.ID() != a.l.ID() {
					t.Fatalf("link ids differ: %x, %x", d.l.ID(), a.l.ID())
				}
				if !d.l.Outbound() || a.l.Outbound() || a.l.Dialer().ID != "a" {
					t.Fatal("wrong direction")
				}
				return
			}
			for side, r := range map[string]linkResult{"dialer": d, "acceptor": a} {
				if !errors.Is(r.err, tt.want) {
					t.Errorf("%s: err = %v, want %v", side, r.err, tt.want)
				}
			}
		})
	}
}

// Two runs of one id refuse each other on both ends, and the later one
// is told to yield, whichever dials.
func TestHandshakeTwins(t *testing.T) {
	earlier := Hello{Cluster: "c", ID: "x", Incarnation: 10}
	later := Hello{Cluster: "c", ID: "x", Incarnation: 20}
	for _, laterDials := range []bool{false, true} {
		d, a := pair(t, earlier, later, nil, nil)
		early, late := d, a
		if laterDials {
			d, a = pair(t, later, earlier, nil, nil)
			early, late = a, d
		}
		var te, tl *TwinError
		if !errors.As(early.err, &te) || te.Yield || te.ID != "x" || !errors.Is(early.err, ErrDuplicateID) {
			t.Errorf("later dials %v: earlier run's error = %v, want a TwinError that does not yield", laterDials, early.err)
		}
		if !errors.As(late.err, &tl) || !tl.Yield || !errors.Is(late.err, ErrDuplicateID) {
			t.Errorf("later dials %v: later run's error = %v, want a TwinError that yields", laterDials, late.err)
		}
	}
}

func TestHandshakeSilentPeerTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c) // reads, never answers
		}
	}()
	start := time.Now()
	_, err = Dial(context.Background(), ln.Addr().String(), Hello{Cluster: "c", ID: "a"}, fastConfig, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*fastConfig.HandshakeTimeout {
		t.Fatalf("took %v", d)
	}
}

// helloHead is the start of a hello frame of this version: magic, version.
func helloHead() []byte {
	return binary.BigEndian.AppendUint16([]byte("TSHP"), Version)
}

func TestHandshakeGarbage(t *testing.T) {
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		append(helloHead(), 0xff, 0xff, 0xff, 0xff), // huge length
		append(helloHead(), 0, 0, 0, 3, 1, 2, 3),    // truncated body
	} {
		a, b := net.Pipe()
		go func() { b.Write(junk); b.Close() }()
		_, err := Server(context.Background(), a, Hello{Cluster: "c", ID: "a"}, fastConfig, nil)
		a.Close()
		if !errors.Is(err, ErrBadHandshake) {
			t.Errorf("%q: err = %v, want ErrBadHandshake", junk, err)
		}
	}
}

func TestHandshakeCancel(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := Server(ctx, a, Hello{Cluster: "c", ID: "a"}, Config{HandshakeTimeout: time.Minute}, nil)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handshake ignored cancellation")
	}
}

func TestHelloRoundTrip(t *testing.T) {
	h := Hello{Version: Version, Cluster: string(bytes.Repeat([]byte("x"), 300)), ID: "node-1",
		Incarnation: 42, DialSeq: 7}
	h.Nonce[3] = 9
	b, err := h.marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseHello(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cluster != h.Cluster || got.ID != h.ID || got.Incarnation != 42 || got.DialSeq != 7 || got.Nonce != h.Nonce {
		t.Fatalf("got %+v", got)
	}
}

func TestPrefer(t *testing.T) {
	h := func(id string, inc int64, seq uint64) Hello { return Hello{ID: id, Incarnation: inc, DialSeq: seq} }
	tests := []struct {
		name string
		a, b Hello
		want bool // a wins
	}{
		{"lower dialer wins", h("0A0", 1, 1), h("00A", 1, 1), false},
		{"lower dialer wins, other order", h("00A", 1, 1), h("0A0", 1, 1), true},
		{"later run wins", h("a", 1, 9), h("a", 2, 1), false},
		{"later dial wins", h("a", 1, 3), h("a", 1, 2), true},
	}
	for _, tt := range tests {
		if got := preferFirst(tt.a, tt.b, 1, 2); got != tt.want {
			t.Errorf("%s: a wins = %v, want %v", tt.name, got, tt.want)
		}
		if got := preferFirst(tt.b, tt.a, 2, 1); got == tt.want {
			t.Errorf("%s (swapped): not symmetric", tt.name)
		}
	}
}

func TestPreferLaterRunOfPeer(t *testing.T) {
	// This node ("z") dialed the old run of peer "a"; the new run of "a"
	// dialed this node. The link to the new run wins, whoever dialed: the
	// old run is frozen or gone.
	old := &Link{local: Hello{ID: "z", Incarnation: 5}, remote: Hello{ID: "a", Incarnation: 1}, dialed: true, id: 1}
	newer := &Link{local: Hello{ID: "z", Incarnation: 5}, remote: Hello{ID: "a", Incarnation: 2, DialSeq: 1}, dialed: false, id: 2}
	if Prefer(old, newer) != newer || Prefer(newer, old) != newer {
		t.Fatal("kept the link to the earlier run")
	}
	// Same run of the peer: the lower dialer's link wins, as before.
	byZ := &Link{local: Hello{ID: "z"}, remote: Hello{ID: "a", Incarnation: 2}, dialed: true, id: 3}
	if Prefer(byZ, newer) != newer || Prefer(newer, byZ) != newer {
		t.Fatal("the link dialed by the lower id must win")
	}
}

func linkPair(t *testing.T) (*Link, *Link) {
	t.Helper()
	d, a := pair(t, Hello{Cluster: "c", ID: "a"}, Hello{Cluster: "c", ID: "b"}, nil, nil)
	if d.err != nil || a.err != nil {
		t.Fatalf("dialer: %v, acceptor: %v", d.err, a.err)
	}
	return d.l, a.l
}

func TestStreamCarriesProtocolAndData(t *testing.T) {
	d, a := linkPair(t)
	ctx := context.Background()
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		s, err := d.OpenStream(ctx, "bulk")
		if err != nil {
			return
		}
		s.Write(payload)
		s.Close()
	}()
	s, err := a.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Protocol() != "bulk" || s.RemoteAddr().String() != "a" || s.RemoteAddr().Network() != "tallship" {
		t.Fatalf("protocol %q from %v", s.Protocol(), s.RemoteAddr())
	}
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("payload corrupted: %d bytes", len(got))
	}
}

func TestLinkCloseEndsAccept(t *testing.T) {
	d, a := linkPair(t)
	d.Close()
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("peer did not notice close")
	}
	if _, err := a.AcceptStream(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("err = %v, want net.ErrClosed", err)
	}
}

func TestStreamIsConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		d, a := linkPair(t)
		ch := make(chan *Stream, 1)
		go func() {
			s, _ := a.AcceptStream(context.Background())
			ch <- s
		}()
		s1, err := d.OpenStream(context.Background(), "conn")
		if err != nil {
			return nil, nil, nil, err
		}
		s2 := <-ch
		return s1, s2, func() { d.Close(); a.Close() }, nil
	})
}

func FuzzParseHello(f *testing.F) {
	h := Hello{Version: Version, Cluster: "c", ID: "a", Incarnation: 1}
	b, _ := h.marshal()
	f.Add(b)
	f.Add(append(helloHead(), 0, 0, 0, 0))
	f.Add([]byte("TSHP\x00\x01\x00\x00\x00\x00")) // version 1: read, not parsed
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHello(b)
		if err != nil || h.Version != Version {
			return
		}
		again, err := h.marshal()
		if err != nil {
			t.Fatalf("decoded hello does not encode: %v", err)
		}
		if _, err := ParseHello(again); err != nil {
			t.Fatalf("re-encoded hello does not decode: %v", err)
		}
	})
}

// TestTwinVerdictNeedsTheSecret: with a cluster secret, the id a hello
// claims is judged only once the Noise phase has proven the peer a
// member. A dialer with the wrong secret that claims a node's own id (an
// earlier run, which the node would otherwise yield to) is refused for
// its secret, and the node sees no twin; with the right secret, twins are
// found as without one.
func TestTwinVerdictNeedsTheSecret(t *testing.T) {
	run := func(dialSecret string) (dial, acc error) {
		accCfg, dialCfg := fastConfig, fastConfig
		accCfg.Secret, dialCfg.Secret = "right", dialSecret
		d, a := pairConfigs(t, dialCfg, accCfg, Hello{Cluster: "c", ID: "x", Incarnation: 10}, Hello{Cluster: "c", ID: "x", Incarnation: 20}, nil, nil)
		return d.err, a.err
	}
	dial, acc := run("wrong")
	var twin *TwinError
	if !errors.Is(acc, ErrAuth) || errors.As(acc, &twin) || errors.Is(acc, ErrDuplicateID) {
		t.Errorf("the node, dialed with the wrong secret by a run claiming its id: %v; want ErrAuth, no twin", acc)
	}
	if !errors.Is(dial, ErrAuth) || errors.Is(dial, ErrDuplicateID) {
		t.Errorf("the dialer with the wrong secret: %v; want ErrAuth", dial)
	}
	dial, acc = run("right")
	var accTwin, dialTwin *TwinError
	if !errors.As(acc, &accTwin) || !accTwin.Yield || !errors.As(dial, &dialTwin) || dialTwin.Yield {
		t.Errorf("twins with the right secret: node (the later run) %v, dialer (the earlier) %v; want TwinErrors, the later yielding", acc, dial)
	}
}
