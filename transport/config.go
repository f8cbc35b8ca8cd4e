package transport

import (
	"crypto/tls"
	"io"
	"log/slog"
	"time"

	"github.com/tallship-go/tallship/internal/yamux"
)

// Config tunes links. The zero value is valid: every field documents what
// zero means.
type Config struct {
	// HandshakeTimeout bounds the whole handshake. Zero means 2 s.
	HandshakeTimeout time.Duration
	// KeepAliveInterval is how often an idle link is pinged. Zero means
	// 500 ms. A silent peer is declared dead within KeepAliveInterval +
	// WriteTimeout.
	KeepAliveInterval time.Duration
	// WriteTimeout bounds a stream write's wait for its turn on the
	// connection (behind other streams' writes) and the wait for a ping's
	// answer. Zero means 1 s. A write the connection itself holds up (the
	// peer reads nothing) ends when the link closes: at the latest
	// KeepAliveInterval + WriteTimeout after the peer fell silent.
	WriteTimeout time.Duration
	// StreamWindow is the yamux receive window per stream: how much a
	// stream buffers for a slow reader (only while data waits: the
	// buffers are pooled). Zero means 1 MiB: on loopback, one stream's
	// 32 KiB writes ran at 0.78 of raw TCP with 512 KiB, 0.89 with 1 MiB
	// (1 MiB writes: 0.95, 0.98); 2 MiB slowed 1 MiB writes to 0.75.
	StreamWindow uint32
	// AcceptBacklog bounds the streams opened by a peer and not yet
	// accepted. Zero means 256.
	AcceptBacklog int
	// Secret, when set, is the cluster secret: only peers that know it
	// can link, and everything after the handshake is sealed
	// (ChaCha20-Poly1305 under keys from a Noise NNpsk0 handshake). Both
	// ends must set the same secret.
	Secret string
	// TLS, when set, runs TLS on every link after the hellos, for meshes
	// with certificates: it must hold this node's certificate and the CAs
	// it trusts, and for mutual authentication ClientAuth set to
	// tls.RequireAndVerifyClientCert. Both ends must use TLS. Secret and
	// TLS exclude each other.
	TLS *tls.Config
	// Logger receives link-level log lines. Nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) flags() byte {
	var f byte
	if c.Secret != "" {
		f |= flagSecret
	}
	if c.TLS != nil {
		f |= flagTLS
	}
	return f
}

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
	if c.StreamWindow == 0 {
		c.StreamWindow = 1 << 20
	}
	if c.AcceptBacklog <= 0 {
		c.AcceptBacklog = 256
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) yamux() *yamux.Config {
	y := yamux.DefaultConfig()
	y.AcceptBacklog = c.AcceptBacklog
	y.EnableKeepAlive = false // liveness.go watches the link instead
	y.KeepAliveInterval = c.KeepAliveInterval
	y.ConnectionWriteTimeout = c.WriteTimeout
	y.MaxStreamWindowSize = c.StreamWindow
	y.StreamOpenTimeout = 2 * c.HandshakeTimeout
	y.StreamCloseTimeout = 2 * c.HandshakeTimeout
	y.LogOutput = io.Discard
	return y
}
