package transport

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tallship-go/tallship/internal/lag"
)

// Config tunes links. The zero value is valid: every field documents what
// zero means.
type Config struct {
	// HandshakeTimeout bounds the whole handshake. Zero means 2 s.
	HandshakeTimeout time.Duration
	// KeepAliveInterval is how often a quiet link beats (a 12-byte frame
	// its peer reads and drops). Zero means 500 ms. A silent peer is
	// declared dead within KeepAliveInterval + WriteTimeout, plus as much
	// as this process runs late (at most 3 times that: see internal/lag),
	// so that a machine too busy to read in time does not drop live
	// peers.
	KeepAliveInterval time.Duration
	// WriteTimeout bounds the wait for the connection to take a write
	// and for a frame's turn on it. Zero means 1 s. A link closes (its
	// peer is reported down; yamux has queued the frame and may still
	// send it, so the stream's bytes are no longer known) when its
	// connection has taken nothing for 4 × WriteTimeout (a peer that
	// stopped reading, a network that stopped carrying while the peer
	// still sends), or 12 × WriteTimeout while it still carries, slowly,
	// on a lossy network and the peer is heard, or when a frame waited
	// 12 × WriteTimeout for its turn (see lossPatience). Four times,
	// because on a busy machine a peer too slow to read, or a send loop
	// too slow to run, is mostly lateness, which is no reason to drop a
	// live peer; a silent peer is found sooner (KeepAliveInterval). The
	// bounds grow by as much as this process runs late.
	WriteTimeout time.Duration
	// StreamWindow is the yamux receive window per stream: how much a
	// stream buffers for a slow reader. Zero means 1 MiB; less than
	// 256 KiB (yamux's initial window) means 256 KiB. On loopback, with
	// hashicorp/yamux v0.1.2, side by side with a 1 MiB window, one
	// stream carried 0.78 as much with 256 KiB (1 MiB writes; 0.92–0.94
	// with 32 KiB writes), as much within noise with 512 KiB or 2 MiB, and
	// 0.79–0.85 as much with 4 MiB (32 KiB writes; docs/benchmarks.md).
	StreamWindow uint32
	// AcceptBacklog bounds the streams opened by a peer and not yet
	// accepted; the opener's OpenStream waits while that many of its own
	// are not (see Serve). Zero means DefaultAcceptBacklog.
	AcceptBacklog int
	// Secret, when set, is the cluster secret: only peers that know it
	// can link, and everything after the handshake is sealed
	// (ChaCha20-Poly1305 under keys from a Noise NNpsk0 handshake). Both
	// ends must set the same secret. The secret proves that a peer is a
	// member, not who it is: any holder of it may claim any node id.
	Secret string
	// TLS, when set, runs mutual TLS on every link after the hellos, for
	// meshes with certificates, and binds node ids to certificates. It
	// must hold this node's certificate, which must name this node's id
	// in a URI SAN tallship:node/<id> (package tlsid), and the CAs it
	// trusts (RootCAs for the peers it dials, ClientCAs for those that
	// dial it). The acceptor requires and verifies the dialer's
	// certificate whatever ClientAuth says; the dialer verifies the
	// acceptor's chain as crypto/tls does when ServerName is set (host
	// name included), else against RootCAs alone, the id standing for a
	// host name. Then each end checks that the peer's certificate names
	// the id its hello claims: one that does not, or names none, is
	// refused on both ends with ErrAuth, the reason saying what the
	// certificate names. Both ends must use TLS. Secret and TLS exclude
	// each other.
	TLS *tls.Config
	// RelaxedInterval is how often a relaxed link (Link.SetRelaxed)
	// beats; its peer is silent after 3 × RelaxedInterval. Zero means
	// 10 × KeepAliveInterval.
	RelaxedInterval time.Duration
	// OnSilent, when set, is called when nothing has arrived from a
	// link's peer for KeepAliveInterval + WriteTimeout/2 (plus the
	// process's lateness): half of WriteTimeout before the link closes for
	// it; and once more, halfway from there to the bound, if nothing has
	// arrived and nobody vouched by then. The caller may find out whether
	// the peer lives elsewhere (ask other peers) and call Link.Vouch to
	// keep the link. It must not block.
	OnSilent func(*Link)
	// Logger receives link-level log lines. Nil means slog.Default().
	Logger *slog.Logger
	// Observer marks this node's hellos: it only observes (see
	// Hello.Observer); the link is the same in every other way.
	Observer bool
}

func (c Config) flags() byte {
	var f byte
	if c.Secret != "" {
		f |= flagSecret
	}
	if c.TLS != nil {
		f |= flagTLS | flagTLSID
	}
	if c.Observer {
		f |= flagObserver
	}
	return f
}

// DefaultAcceptBacklog is Config.AcceptBacklog's default. yamux holds a
// channel of that many stream pointers for each link, as long as it lives:
// 256 (yamux's own default) was 2 KiB of every link side's heap, a
// fourteenth of an idle 100-node mesh's. Streams are accepted as they
// arrive (Serve), so the bound is met only by a burst of opens faster
// than the peer takes them, and then the opener waits (OpenStream).
const DefaultAcceptBacklog = 32

// lossPatience is how many times the liveness check's bound on a blocked
// write (writeLimit) a write may block while the connection still carries,
// slowly (the kernel resends what a lossy network dropped, or the peer
// acknowledges data now and then) and the peer is heard, and a frame may
// wait for its turn in the send loop (frameWait). TCP backs its resends
// off (0.2, 0.4, 0.8, 1.6, 3.2 s while more than three segments are in
// flight): at 10% frame loss a run of four losses of one segment held a
// stream's write for over 4 s now and then, and closing the link for it
// lost every stream it carried (TestLANFrameLoss). A frame queued behind
// such a write waits as long. A peer that stopped reading (a zero window:
// TCP probes it, it resends nothing) and a network that carries nothing
// more (the peer unheard) still close the link at the bound.
const lossPatience = 3

// writeLimit is how long a write to the connection may block before the
// liveness check closes the link, lateness aside: (1 + lag.MaxStretch) ×
// WriteTimeout.
func (c Config) writeLimit() time.Duration { return (1 + lag.MaxStretch) * c.WriteTimeout }

// frameWait is how long a frame may wait for its turn in yamux's send
// loop (its ConnectionWriteTimeout): lossPatience × writeLimit.
func (c Config) frameWait() time.Duration { return lossPatience * c.writeLimit() }

// withDefaults returns a copy of c with zero fields filled.
func (c Config) withDefaults() Config {
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 2 * time.Second
	}
	if c.KeepAliveInterval <= 0 {
		c.KeepAliveInterval = 500 * time.Millisecond
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = time.Second
	}
	if c.RelaxedInterval <= 0 {
		c.RelaxedInterval = 10 * c.KeepAliveInterval
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = 1 << 20
	}
	c.StreamWindow = max(c.StreamWindow, 256<<10)
	if c.AcceptBacklog <= 0 {
		c.AcceptBacklog = DefaultAcceptBacklog
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// yamux is the session configuration of a link: hashicorp/yamux as it
// is, tuned only through its Config.
//
//   - Its keepalive is off: liveness.go watches the link instead (yamux's
//     closes the session when one ping goes unanswered, however busy the
//     link is).
//   - ConnectionWriteTimeout, the longest a frame may wait for the
//     session's send loop, is frameWait: the connection not taking writes
//     is found by the liveness check (a write blocked for writeLimit and
//     the lag, lossPatience times that while the connection still carries
//     and the peer is heard), and the wait for the send loop on a
//     machine behind by seconds is that machine's lateness, not the
//     peer's. When it runs out, yamux returns ErrConnectionWriteTimeout
//     with the frame still queued; the link then closes (Stream.linkErr),
//     as for a dead peer.
//   - StreamOpenTimeout is 0: yamux would otherwise close the whole
//     session when the peer is slow to accept one stream. OpenStream
//     takes a context instead, and a peer that never accepts costs only
//     that stream.
//   - StreamCloseTimeout bounds how long a half-closed stream waits for
//     the peer's close before it is reset: streamCloseTimeout.
func (c Config) yamux(log *slog.Logger) *yamux.Config {
	y := yamux.DefaultConfig()
	y.AcceptBacklog = c.AcceptBacklog
	y.EnableKeepAlive = false
	y.KeepAliveInterval = c.KeepAliveInterval
	y.ConnectionWriteTimeout = c.frameWait()
	y.MaxStreamWindowSize = c.StreamWindow
	y.StreamOpenTimeout = 0
	y.StreamCloseTimeout = streamCloseTimeout
	y.LogOutput = nil
	y.Logger = yamuxLogger{log}
	return y
}

// streamCloseTimeout is how long a stream closed on this side waits for
// the peer's close before yamux resets it. The peer closes once it has
// read to the end, and the reset ends that read, whatever data is still
// on its way: on a lossy link a window of data written before the close
// takes seconds to arrive, and a bound of seconds (it was twice
// HandshakeTimeout) cut a 7 MB stream's last 80 to 475 KB at 10% frame
// loss. A link whose peer is silent that long is long gone (see
// liveness). The bound guards against a peer that never closes, and ends
// the writes of a peer that goes on writing to a stream closed here
// (yamux has no reset of its own to send at Close, as TCP does): those
// wait that long, unless they have deadlines. A peer that floods a link
// with streams it never closes loses the link (see mesh's MaxStreams).
const streamCloseTimeout = time.Minute

// yamuxLogger sends yamux's log lines to slog at Debug.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any)                 { y.l.Debug(fmt.Sprint(v...)) }
func (y yamuxLogger) Printf(format string, v ...any) { y.l.Debug(fmt.Sprintf(format, v...)) }
func (y yamuxLogger) Println(v ...any)               { y.l.Debug(fmt.Sprint(v...)) }
