package transport

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/flynn/noise"

	"github.com/tallship-go/tallship/transport/tlsid"
)

// Hello flags: what protection the sender requires on the link.
// flagTLSID, always set with flagTLS, says that the sender binds node ids
// to certificates (secureTLS); a node of an earlier release sets flagTLS
// alone and is refused, with ErrAuth, before TLS starts.
//
// flagObserver is not about protection: it says the sender only observes
// (Config.Observer).
const (
	flagSecret   byte = 1 << 0
	flagTLS      byte = 1 << 1
	flagTLSID    byte = 1 << 2
	flagObserver byte = 1 << 3
)

// The cluster secret runs the Noise protocol NNpsk0 (Curve25519,
// ChaCha20-Poly1305, BLAKE2s) with a key derived from the secret, after the
// plain hellos and verdicts:
//
//	dialer                                acceptor
//	noise(psk, e)           ------------>
//	                        <------------ noise(e, ee) | refusal
//	sealed confirmation     ------------> | refusal
//
// The prologue is both hellos, so a hello changed in transit fails the
// handshake. Each side proves it knows the secret without revealing it; the
// fresh ephemeral keys make a recorded handshake useless to replay (the
// acceptor accepts only once it has opened the dialer's sealed
// confirmation, which needs the dialer's ephemeral private key). Everything
// after is sealed with ChaCha20-Poly1305 records.
var noiseSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// pskOf derives the 32-byte Noise pre-shared key from a cluster secret.
func pskOf(secret string) []byte {
	sum := sha256.Sum256(append([]byte("tallship cluster secret v1\x00"), secret...))
	return sum[:]
}

// Frame types of the secure phase.
const (
	secNoise   byte = 1
	secRefusal byte = 2
	secConfirm byte = 3
)

const maxSecFrame = 1024

func writeSecFrame(w io.Writer, typ byte, body []byte) error {
	b := make([]byte, 0, 3+len(body))
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	_, err := w.Write(append(b, body...))
	return err
}

func readSecFrame(r io.Reader) (byte, []byte, error) {
	var head [3]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint16(head[1:])
	if n > maxSecFrame || head[0] < secNoise || head[0] > secConfirm {
		return 0, nil, fmt.Errorf("%w: bad secure-phase frame", ErrBadHandshake)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return head[0], body, nil
}

var confirmation = []byte("tallship link confirmed")

// secure runs the Noise phase on conn and returns the sealed connection.
func secure(conn net.Conn, secret string, dialer bool, prologue []byte) (net.Conn, error) {
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           noiseSuite,
		Random:                rand.Reader,
		Pattern:               noise.HandshakeNN,
		Initiator:             dialer,
		Prologue:              prologue,
		PresharedKey:          pskOf(secret),
		PresharedKeyPlacement: 0,
	})
	if err != nil {
		return nil, err
	}
	refuse := func() error {
		writeSecFrame(conn, secRefusal, []byte("the proof does not match this node's cluster secret"))
		return fmt.Errorf("%w: the peer's proof does not match this node's cluster secret", ErrAuth)
	}
	peerRefused := func(body []byte) error {
		return &RefusalError{Err: ErrAuth, Reason: string(body)}
	}
	if dialer {
		msg, _, _, err := hs.WriteMessage(nil, nil)
		if err != nil {
			return nil, err
		}
		if err := writeSecFrame(conn, secNoise, msg); err != nil {
			return nil, err
		}
		typ, body, err := readSecFrame(conn)
		if err != nil {
			return nil, err
		}
		if typ == secRefusal {
			return nil, peerRefused(body)
		}
		if typ != secNoise {
			return nil, fmt.Errorf("%w: unexpected secure-phase frame %d", ErrBadHandshake, typ)
		}
		_, send, recv, err := hs.ReadMessage(nil, body)
		if err != nil || send == nil {
			return nil, refuse()
		}
		sealed, err := send.Encrypt(nil, nil, confirmation)
		if err != nil {
			return nil, err
		}
		if err := writeSecFrame(conn, secConfirm, sealed); err != nil {
			return nil, err
		}
		return newSealedConn(conn, send, recv), nil
	}
	typ, body, err := readSecFrame(conn)
	if err != nil {
		return nil, err
	}
	if typ != secNoise {
		return nil, fmt.Errorf("%w: unexpected secure-phase frame %d", ErrBadHandshake, typ)
	}
	if _, _, _, err := hs.ReadMessage(nil, body); err != nil {
		return nil, refuse()
	}
	msg, recv, send, err := hs.WriteMessage(nil, nil)
	if err != nil {
		return nil, err
	}
	if err := writeSecFrame(conn, secNoise, msg); err != nil {
		return nil, err
	}
	typ, body, err = readSecFrame(conn)
	if err != nil {
		return nil, err
	}
	switch typ {
	case secRefusal:
		return nil, peerRefused(body)
	case secConfirm:
	default:
		return nil, fmt.Errorf("%w: unexpected secure-phase frame %d", ErrBadHandshake, typ)
	}
	plain, err := recv.Decrypt(nil, nil, body)
	if err != nil || string(plain) != string(confirmation) {
		return nil, fmt.Errorf("%w: the dialer's confirmation does not open (a replayed handshake?)", ErrAuth)
	}
	return newSealedConn(conn, send, recv), nil
}

// sealedConn seals every write into ChaCha20-Poly1305 records:
// length[2] ciphertext[length]. A record that does not open fails the
// read, and the link with it.
type sealedConn struct {
	net.Conn
	wmu  sync.Mutex
	send *noise.CipherState
	wbuf []byte

	rmu   sync.Mutex
	recv  *noise.CipherState
	rbuf  []byte // ciphertext buffer
	plain []byte // opened bytes not yet read
	rerr  error
}

const (
	maxRecord    = 65535
	maxPlainText = maxRecord - 16 // Poly1305 tag
)

func newSealedConn(c net.Conn, send, recv *noise.CipherState) *sealedConn {
	return &sealedConn{Conn: c, send: send, recv: recv}
}

func (c *sealedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxPlainText)]
		buf := append(c.wbuf[:0], 0, 0)
		buf, err := c.send.Encrypt(buf, nil, chunk)
		if err != nil {
			return written, err
		}
		binary.BigEndian.PutUint16(buf, uint16(len(buf)-2))
		c.wbuf = buf
		if _, err := c.Conn.Write(buf); err != nil {
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

func (c *sealedConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.plain) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		var head [2]byte
		if _, err := io.ReadFull(c.Conn, head[:]); err != nil {
			return 0, err
		}
		n := int(binary.BigEndian.Uint16(head[:]))
		if cap(c.rbuf) < n {
			c.rbuf = make([]byte, n)
		}
		ct := c.rbuf[:n]
		if _, err := io.ReadFull(c.Conn, ct); err != nil {
			return 0, unexpectedEOF(err)
		}
		plain, err := c.recv.Decrypt(ct[:0], nil, ct)
		if err != nil {
			c.rerr = fmt.Errorf("%w: a sealed record does not open", ErrAuth)
			return 0, c.rerr
		}
		c.plain = plain
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// secureTLS runs TLS on conn with cfg, as the client when dialer is
// true, and binds the peer's node id (peerID, from its hello) to its
// certificate:
//
//	dialer                              acceptor
//	TLS handshake (mutual: each end verifies the other's chain)
//	verdict (inside TLS)  ------------>
//	                      <------------ verdict (inside TLS)
//
// Each end checks that the peer's certificate names peerID (tlsid), then
// runs checkID on the id now proven (a twin of this node, the caller's
// verify), and says what it found in a verdict (the hello's verdict
// format: 5 with the reason when the certificate does not name the id),
// then reads the peer's: a refusal on either end fails both with its
// sentinel, and TLS 1.3's client, whose handshake ends before the server
// has checked its certificate, learns of a refusal before it uses the
// link.
func secureTLS(ctx context.Context, conn net.Conn, cfg *tls.Config, dialer bool, peerID string, checkID func() error) (net.Conn, error) {
	cfg = tlsConfigFor(cfg, dialer)
	var tc *tls.Conn
	if dialer {
		tc = tls.Client(conn, cfg)
	} else {
		tc = tls.Server(conn, cfg)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("%w: tls: %w", ErrAuth, err)
	}
	mine := checkPeerID(tc.ConnectionState().PeerCertificates, peerID)
	if mine == nil {
		mine = checkID()
	}
	if _, err := tc.Write(appendVerdict(nil, mine)); err != nil && mine == nil {
		return nil, tlsErr(err)
	}
	if mine != nil {
		return nil, mine
	}
	if err := readVerdict(tc); err != nil {
		if isRefusal(err) {
			return nil, err
		}
		return nil, tlsErr(err)
	}
	return tc, nil
}

// tlsErr wraps an error of the TLS connection: an alert from the peer
// (its TLS refused this node's certificate; crypto/tls reports it as a
// *net.OpError of Op "remote error") is ErrAuth.
func tlsErr(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return fmt.Errorf("%w: tls: %w", ErrAuth, err)
	}
	return err
}

// checkPeerID returns nil when the peer's certificate (the first of
// certs) names the node id its hello claims, else an error wrapping
// ErrAuth.
func checkPeerID(certs []*x509.Certificate, id string) error {
	if len(certs) == 0 {
		return fmt.Errorf("%w: the peer presented no certificate, so its node id %q is not proven", ErrAuth, id)
	}
	if err := tlsid.Check(certs[0], id); err != nil {
		return fmt.Errorf("%w: the peer's hello claims node id %q: %w", ErrAuth, id, err)
	}
	return nil
}

// tlsConfigFor returns the TLS configuration one end of a link runs:
// cfg, with what binding ids needs. The acceptor requires and verifies
// the dialer's certificate (against ClientCAs) whatever cfg.ClientAuth
// says. The dialer, when cfg names no ServerName, verifies the
// acceptor's chain against RootCAs (nil: the system's) with no host
// name: the node id its certificate names stands for one.
func tlsConfigFor(cfg *tls.Config, dialer bool) *tls.Config {
	switch {
	case !dialer && cfg.ClientAuth != tls.RequireAndVerifyClientCert:
		cfg = cfg.Clone()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	case dialer && cfg.ServerName == "" && !cfg.InsecureSkipVerify:
		cfg = cfg.Clone()
		cfg.InsecureSkipVerify = true // verified below, without a host name
		roots, now, next := cfg.RootCAs, cfg.Time, cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the peer presented no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if now != nil {
				opts.CurrentTime = now()
			}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return err
			}
			if next != nil {
				return next(cs)
			}
			return nil
		}
	}
	return cfg
}
