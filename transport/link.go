package transport

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tallship-go/tallship/internal/yamux"
)

// Link is one authenticated, multiplexed connection to a peer: a yamux
// session whose streams are tagged with a protocol name.
type Link struct {
	conn   net.Conn
	sess   *yamux.Session
	local  Hello
	remote Hello
	dialed bool
	id     uint64
	cfg    Config

	streams   streamSet
	live      *liveness
	accept    acceptor
	closeOnce sync.Once
}

// Dial connects to addr, runs the handshake as the dialer and returns the
// link. local describes this node (its Nonce is filled in). verify, when
// not nil, sees the peer's hello and may refuse the link with an error.
func Dial(ctx context.Context, addr string, local Hello, cfg Config, verify func(Hello) error) (*Link, error) {
	cfg = cfg.withDefaults()
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	l, err := Client(ctx, conn, local, cfg, verify)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("link to %s: %w", addr, err)
	}
	return l, nil
}

// Client runs the handshake as the dialer on an established conn and
// returns the link. On error the caller still owns conn.
func Client(ctx context.Context, conn net.Conn, local Hello, cfg Config, verify func(Hello) error) (*Link, error) {
	return newLink(ctx, conn, local, cfg, verify, true)
}

// Server runs the handshake as the acceptor on conn and returns the link.
// On error the caller still owns conn.
func Server(ctx context.Context, conn net.Conn, local Hello, cfg Config, verify func(Hello) error) (*Link, error) {
	return newLink(ctx, conn, local, cfg, verify, false)
}

func newLink(ctx context.Context, conn net.Conn, local Hello, cfg Config, verify func(Hello) error, dialer bool) (*Link, error) {
	cfg = cfg.withDefaults()
	if cfg.Secret != "" && cfg.TLS != nil {
		return nil, fmt.Errorf("%w: set a cluster secret or TLS, not both", ErrAuth)
	}
	if local.Version == 0 {
		local.Version = Version
	}
	if _, err := rand.Read(local.Nonce[:]); err != nil {
		return nil, err
	}
	if !dialer {
		local.DialSeq = 0
	}
	local.Flags = cfg.flags()
	remote, sealed, err := handshake(ctx, conn, local, dialer, cfg, verify)
	if err != nil {
		return nil, err
	}
	l := &Link{conn: conn, local: local, remote: remote, dialed: dialer, cfg: cfg}
	nonce := remote.Nonce
	if dialer {
		nonce = local.Nonce
	}
	l.id = binary.BigEndian.Uint64(nonce[:8])
	yc := cfg.yamux()
	yc.LogOutput = nil
	log := cfg.Logger.With("peer", remote.ID)
	yc.Logger = yamuxLogger{log}
	yc.AcceptNotify = l.streamQueued
	l.live = newLiveness(cfg, sealed, log)
	sc := newSessionConn(sealed, &l.streams, l.live)
	sc.closed = l.sessionClosed
	if dialer {
		l.sess, err = yamux.Client(sc, yc)
	} else {
		l.sess, err = yamux.Server(sc, yc)
	}
	if err != nil {
		return nil, err
	}
	l.live.start(l.sess)
	return l, nil
}

// ID names the link; both ends agree on it.
func (l *Link) ID() uint64 { return l.id }

// Local is the hello this node sent.
func (l *Link) Local() Hello { return l.local }

// Remote is the hello the peer sent.
func (l *Link) Remote() Hello { return l.remote }

// Peer is the peer's node id.
func (l *Link) Peer() string { return l.remote.ID }

// Outbound reports whether this node dialed the link.
func (l *Link) Outbound() bool { return l.dialed }

// Dialer returns the hello of the side that dialed the link.
func (l *Link) Dialer() Hello {
	if l.dialed {
		return l.local
	}
	return l.remote
}

// RemoteAddr is the peer's network address.
func (l *Link) RemoteAddr() net.Addr { return l.conn.RemoteAddr() }

// LocalAddr is this end's network address.
func (l *Link) LocalAddr() net.Addr { return l.conn.LocalAddr() }

// Done is closed when the link has closed, for whatever reason.
func (l *Link) Done() <-chan struct{} { return l.sess.CloseChan() }

// Close closes the link and every stream on it. It is idempotent.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		l.live.stop()
		l.streams.abort()
		l.sess.Close()
	})
	return nil
}

// Ping measures a round trip on the link; it fails when the peer does not
// answer within Config.WriteTimeout.
func (l *Link) Ping() (time.Duration, error) { return l.sess.Ping() }

// IsClosed reports whether the link has closed.
func (l *Link) IsClosed() bool { return l.sess.IsClosed() }

// NumStreams is the number of open streams.
func (l *Link) NumStreams() int { return l.sess.NumStreams() }

const maxProtocolBytes = 255

// OpenStream opens a stream tagged with protocol.
func (l *Link) OpenStream(ctx context.Context, protocol string) (*Stream, error) {
	if len(protocol) == 0 || len(protocol) > maxProtocolBytes {
		return nil, fmt.Errorf("%w: protocol name of %d bytes (1 to %d)", ErrBadStream, len(protocol), maxProtocolBytes)
	}
	type result struct {
		s   *yamux.Stream
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := l.sess.OpenStream()
		ch <- result{s, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, closedErr(r.err)
	}
	hdr := make([]byte, 0, 1+len(protocol))
	hdr = append(hdr, byte(len(protocol)))
	hdr = append(hdr, protocol...)
	r.s.SetWriteDeadline(time.Now().Add(l.cfg.WriteTimeout))
	if _, err := r.s.Write(hdr); err != nil {
		r.s.Close()
		return nil, closedErr(err)
	}
	r.s.SetWriteDeadline(time.Time{})
	return l.track(&Stream{Stream: r.s, protocol: protocol, link: l})
}

// AcceptStream waits for the next stream the peer opens and reads its
// protocol tag. It returns an error wrapping net.ErrClosed once the link
// has closed; a stream with a malformed tag is closed and the error
// returned, and the link stays up. Serve does the same without a
// goroutine waiting in AcceptStream; a link uses one or the other.
func (l *Link) AcceptStream(ctx context.Context) (*Stream, error) {
	s, err := l.sess.AcceptStreamWithContext(ctx)
	if err != nil {
		if l.sess.IsClosed() {
			return nil, fmt.Errorf("transport: link closed (%v): %w", err, net.ErrClosed)
		}
		return nil, closedErr(err)
	}
	s.SetReadDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	proto, err := readStreamHeader(s)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.SetReadDeadline(time.Time{})
	return l.track(&Stream{Stream: s, protocol: proto, link: l})
}

// readStreamHeader reads a stream's protocol tag: length[1] name[length].
func readStreamHeader(r io.Reader) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadStream, err)
	}
	if n[0] == 0 {
		return "", fmt.Errorf("%w: empty protocol name", ErrBadStream)
	}
	proto := make([]byte, n[0])
	if _, err := io.ReadFull(r, proto); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadStream, err)
	}
	return string(proto), nil
}

// closedErr makes a yamux shutdown error unwrap to net.ErrClosed.
func closedErr(err error) error {
	if err == yamux.ErrSessionShutdown || err == yamux.ErrStreamClosed || err == io.EOF {
		return fmt.Errorf("transport: link closed: %w", net.ErrClosed)
	}
	return err
}

// Stream is one tagged stream of a link. It is a net.Conn whose
// RemoteAddr names the peer.
type Stream struct {
	*yamux.Stream
	protocol string
	link     *Link

	readDeadline, writeDeadline atomic.Value // time.Time
}

// Read reads from the stream; a deadline already past fails at once with
// a net.Error whose Timeout is true.
func (s *Stream) Read(b []byte) (int, error) {
	if past(&s.readDeadline) {
		return 0, s.linkErr(&timeoutError{op: "read"})
	}
	n, err := s.Stream.Read(b)
	return n, s.linkErr(err)
}

// Write writes to the stream; a deadline already past fails at once with
// a net.Error whose Timeout is true.
func (s *Stream) Write(b []byte) (int, error) {
	if past(&s.writeDeadline) {
		return 0, s.linkErr(&timeoutError{op: "write"})
	}
	n, err := s.Stream.Write(b)
	return n, s.linkErr(err)
}

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.readDeadline.Store(t)
	if s.link.streams.isAborted() {
		t = abortedDeadline
	}
	return s.Stream.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.writeDeadline.Store(t)
	if s.link.streams.isAborted() {
		t = abortedDeadline
	}
	return s.Stream.SetWriteDeadline(t)
}

func past(d *atomic.Value) bool {
	t, _ := d.Load().(time.Time)
	return !t.IsZero() && !time.Now().Before(t)
}

// Protocol is the stream's tag.
func (s *Stream) Protocol() string { return s.protocol }

// Link is the link the stream runs on.
func (s *Stream) Link() *Link { return s.link }

// RemoteAddr names the peer: its Network is "tallship", its String the
// peer's node id.
func (s *Stream) RemoteAddr() net.Addr {
	return PeerAddr{ID: s.link.remote.ID, Addr: s.link.conn.RemoteAddr()}
}

// LocalAddr names this node.
func (s *Stream) LocalAddr() net.Addr {
	return PeerAddr{ID: s.link.local.ID, Addr: s.link.conn.LocalAddr()}
}

// PeerAddr is the address of one end of a stream: a node id, and the
// network address its link runs over.
type PeerAddr struct {
	ID   string
	Addr net.Addr
}

// Network returns "tallship".
func (a PeerAddr) Network() string { return "tallship" }

// String returns the node id.
func (a PeerAddr) String() string { return a.ID }

// yamuxLogger sends yamux's log lines to slog at Debug.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any)                 { y.l.Debug(fmt.Sprint(v...)) }
func (y yamuxLogger) Printf(format string, v ...any) { y.l.Debug(fmt.Sprintf(format, v...)) }
func (y yamuxLogger) Println(v ...any)               { y.l.Debug(fmt.Sprint(v...)) }
