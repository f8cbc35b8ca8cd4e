package transport

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tallship-go/tallship/internal/lag"
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
	closeOnce sync.Once
	accept    acceptor // see Serve
}

// Dial connects to addr, runs the handshake as the dialer and returns the
// link. local describes this node (its Nonce is filled in). verify, when
// not nil, sees the peer's hello and may refuse the link with an error.
func Dial(ctx context.Context, addr string, local Hello, cfg Config, verify func(Hello) error) (*Link, error) {
	cfg = cfg.withDefaults()
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, lag.Stretch(cfg.HandshakeTimeout))
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
	log := cfg.Logger.With("peer", remote.ID)
	yc := cfg.yamux(log)
	thinStream(conn)
	l.live = newLiveness(cfg, sealed, log)
	l.live.each = l.streams.shrink
	if cfg.OnSilent != nil {
		l.live.onSilent = func() { cfg.OnSilent(l) }
	}
	sc := newSessionConn(sealed, &l.streams, l.live)
	sc.opened, sc.closed = l.streamsOpened, l.sessionShut
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

// Observer reports whether the hello says its sender only observes (its
// Config.Observer): a node that links to read the cluster for a while,
// which its peers do not count as a member.
func (h Hello) Observer() bool { return h.Flags&flagObserver != 0 }

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

// Ping measures a round trip on the link. It fails when the peer does not
// answer within Config.WriteTimeout (an error whose Timeout is true), when
// the link closes (net.ErrClosed), or with ctx.Err() when ctx ends first;
// the ping itself then still waits for its answer in the background, at
// most WriteTimeout or until the link closes.
func (l *Link) Ping(ctx context.Context) (time.Duration, error) {
	type pong struct {
		rtt time.Duration
		err error
	}
	answer := make(chan pong, 1)
	go func() {
		d, err := l.sess.Ping()
		answer <- pong{d, err}
	}()
	select {
	case p := <-answer:
		if p.err != nil {
			return 0, l.streamErr(p.err)
		}
		return p.rtt, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// SetRelaxed puts the link in its relaxed mode (on) or back in its strict
// one. A relaxed link beats every Config.RelaxedInterval when quiet, and
// its peer is silent only after 3 × RelaxedInterval: for a link whose
// peer others watch closely (a large mesh watches each node through a few
// of its links, and tells the rest; see mesh). Both ends should agree:
// a strict end hears a relaxed one too seldom. Back in the strict mode,
// the peer gets one strict silence limit from now.
func (l *Link) SetRelaxed(on bool) { l.live.setRelaxed(on) }

// Vouch counts, for the link's liveness, as hearing from the peer now:
// another node confirmed that it lives (see Config.OnSilent). A link
// whose peer stays silent is found again one silence later.
func (l *Link) Vouch() { l.live.vouched.Store(int64(now())) }

// Silence is how long nothing has arrived from the peer on this link (a
// Vouch does not count: it is others' word).
func (l *Link) Silence() time.Duration { return now() - time.Duration(l.live.last.Load()) }

// Suspect reports whether nothing has arrived on the link (Silence) for
// as long as makes Config.OnSilent be told, in the link's mode.
func (l *Link) Suspect() bool {
	_, _, suspect := l.live.params()
	return l.Silence() >= suspect
}

// Err says why the link closed by itself: ErrSilent (nothing arrived from
// the peer for too long), ErrWriteBlocked (its connection took nothing
// more). Nil while the link is open, and when it closed for another reason
// (Close, or the connection's end: the peer closed it or it broke).
func (l *Link) Err() error {
	if err, ok := l.live.why.Load().(error); ok {
		return err
	}
	return nil
}

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
		return nil, l.streamErr(r.err)
	}
	s := &Stream{ys: r.s, protocol: protocol, link: l}
	hdr := make([]byte, 0, 1+len(protocol))
	hdr = append(hdr, byte(len(protocol)))
	hdr = append(hdr, protocol...)
	r.s.SetWriteDeadline(time.Now().Add(l.cfg.WriteTimeout))
	if _, err := r.s.Write(hdr); err != nil {
		r.s.Close()
		return nil, s.linkErr(err)
	}
	r.s.SetWriteDeadline(time.Time{})
	return l.track(s)
}

// AcceptStream waits for the next stream the peer opens and reads its
// protocol tag. It returns an error wrapping net.ErrClosed once the link
// has closed; a stream with a malformed tag is closed and the error
// returned, and the link stays up. Serve does the same without a
// goroutine waiting in AcceptStream; a link uses one or the other.
func (l *Link) AcceptStream(ctx context.Context) (*Stream, error) {
	s, err := l.sess.AcceptStreamWithContext(ctx)
	if err == nil {
		l.streamTaken()
	}
	if err != nil {
		if l.sess.IsClosed() {
			return nil, fmt.Errorf("transport: link closed (%v): %w", err, net.ErrClosed)
		}
		return nil, l.streamErr(err)
	}
	s.SetReadDeadline(time.Now().Add(lag.Stretch(l.cfg.HandshakeTimeout)))
	proto, err := readStreamHeader(s)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.SetReadDeadline(time.Time{})
	return l.track(&Stream{ys: s, protocol: proto, link: l})
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
