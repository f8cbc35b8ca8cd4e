package transport

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
)

// Verdict codes, sent by each side after it has read the other's hello.
const (
	verdictOK byte = iota
	verdictWrongVersion
	verdictWrongCluster
	verdictSelf
	verdictRefused
	verdictAuth
	verdictDuplicate
)

const maxReasonBytes = 512

// verdictError maps a verdict code to the sentinel it stands for.
func verdictError(code byte) error {
	switch code {
	case verdictWrongVersion:
		return ErrWrongVersion
	case verdictWrongCluster:
		return ErrWrongCluster
	case verdictSelf:
		return ErrSelfLink
	case verdictAuth:
		return ErrAuth
	case verdictDuplicate:
		return ErrDuplicateID
	}
	return ErrRefused
}

func verdictCode(err error) byte {
	switch {
	case err == nil:
		return verdictOK
	case errors.Is(err, ErrWrongVersion):
		return verdictWrongVersion
	case errors.Is(err, ErrWrongCluster):
		return verdictWrongCluster
	case errors.Is(err, ErrSelfLink):
		return verdictSelf
	case errors.Is(err, ErrAuth):
		return verdictAuth
	case errors.Is(err, ErrDuplicateID):
		return verdictDuplicate
	}
	return verdictRefused
}

// appendVerdict appends a verdict: code[1] length[u16] reason[length].
// Like the hello, it is read byte-exact from the raw connection, so it
// keeps its own framing (see Hello.marshal).
func appendVerdict(b []byte, err error) []byte {
	b = append(b, verdictCode(err))
	reason := ""
	if err != nil {
		reason = err.Error()
	}
	if len(reason) > maxReasonBytes {
		reason = reason[:maxReasonBytes]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(reason)))
	return append(b, reason...)
}

// readVerdict reads the other side's verdict: nil when it accepted the
// link, else an error wrapping the matching sentinel with its reason.
func readVerdict(r io.Reader) error {
	var head [3]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint16(head[1:])
	if n > maxReasonBytes {
		return fmt.Errorf("%w: verdict reason of %d bytes", ErrBadHandshake, n)
	}
	reason := make([]byte, n)
	if _, err := io.ReadFull(r, reason); err != nil {
		return err
	}
	if head[0] == verdictOK {
		return nil
	}
	if head[0] > verdictDuplicate {
		return fmt.Errorf("%w: unknown verdict %d", ErrBadHandshake, head[0])
	}
	return &RefusalError{Err: verdictError(head[0]), Reason: string(reason)}
}

// RefusalError is the peer's refusal of a link: Err is the sentinel the
// peer's verdict stands for (errors.Is works through it), Reason the
// peer's words.
type RefusalError struct {
	Err    error
	Reason string
}

func (e *RefusalError) Error() string {
	return fmt.Sprintf("%v (refused by peer: %s)", e.Err, e.Reason)
}

func (e *RefusalError) Unwrap() error { return e.Err }

// check is what each side verifies of the other's hello before the
// secure phase: all of it, checkID included, unless there is a secure
// phase: with node ids bound to certificates (flagTLSID) the checks of the
// claimed id wait until TLS has proven it (secureTLS), and with a cluster
// secret until the Noise phase has proven the peer a member (protect). A
// peer that merely claims an id gets no verdict on it: one that does not
// know the secret could otherwise make a node (or the run it names) give
// up its id.
func check(local, remote *Hello, verify func(Hello) error) error {
	if remote.Version != local.Version {
		return fmt.Errorf("%w: peer speaks version %d, this node %d", ErrWrongVersion, remote.Version, local.Version)
	}
	if subtle.ConstantTimeCompare([]byte(remote.Cluster), []byte(local.Cluster)) != 1 {
		return fmt.Errorf("%w: peer is in cluster %q, this node in %q", ErrWrongCluster, remote.Cluster, local.Cluster)
	}
	if remote.ID == "" {
		return fmt.Errorf("%w: empty node id", ErrBadHandshake)
	}
	if remote.ID == local.ID && remote.Incarnation == local.Incarnation {
		return fmt.Errorf("%w: peer has this node's id %q", ErrSelfLink, local.ID)
	}
	if mine, theirs := local.Flags&flagSecret, remote.Flags&flagSecret; mine != theirs {
		if mine != 0 {
			return fmt.Errorf("%w: this node requires a cluster secret and the peer has none", ErrAuth)
		}
		return fmt.Errorf("%w: the peer requires a cluster secret and this node has none", ErrAuth)
	}
	if mine, theirs := local.Flags&flagTLS, remote.Flags&flagTLS; mine != theirs {
		if mine != 0 {
			return fmt.Errorf("%w: this node requires TLS and the peer does not use it", ErrAuth)
		}
		return fmt.Errorf("%w: the peer requires TLS and this node does not use it", ErrAuth)
	}
	if mine, theirs := local.Flags&flagTLSID, remote.Flags&flagTLSID; mine != theirs {
		return fmt.Errorf("%w: the peer does not bind node ids to TLS certificates (an earlier release)", ErrAuth)
	}
	if local.Flags&(flagTLSID|flagSecret) != 0 {
		return nil
	}
	return checkID(local, remote, verify)
}

// checkID is what each side verifies of the id the other's hello claims:
// that it is not another run of this node's own id (TwinError), and the
// caller's verify.
func checkID(local, remote *Hello, verify func(Hello) error) error {
	if remote.ID == local.ID {
		return &TwinError{ID: local.ID, Yield: remote.Incarnation < local.Incarnation}
	}
	if verify != nil {
		if err := verify(*remote); err != nil {
			if verdictCode(err) == verdictRefused && !errors.Is(err, ErrRefused) {
				err = fmt.Errorf("%w: %w", ErrRefused, err)
			}
			return err
		}
	}
	return nil
}

// handshake runs the exchange on conn, as the dialer when dialer is true,
// and returns the peer's hello and the connection to run the link on
// (sealed when cfg has a secret or TLS).
//
//	dialer                      acceptor
//	hello         ------------>
//	              <------------ hello, verdict
//	verdict       ------------>
//	[secure phase: Noise with the cluster secret, or TLS]
//
// Each verdict says whether its sender accepts the link, and why not. The
// whole exchange is bounded by cfg.HandshakeTimeout (stretched by how late
// this process runs: see internal/lag) and by ctx.
func handshake(ctx context.Context, conn net.Conn, local Hello, dialer bool, cfg Config, verify func(Hello) error) (remote Hello, out net.Conn, err error) {
	deadline := time.Now().Add(lag.Stretch(cfg.HandshakeTimeout))
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return Hello{}, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() && err == nil {
			err = ctx.Err()
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if ctx.Err() != nil {
					err = ctx.Err()
				} else {
					err = &timeoutError{op: "handshake"}
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				// Still an EOF underneath: the peer closed (a node too
				// busy to handshake, one that gave up, or no tallship
				// node), which is not garbage it sent.
				err = fmt.Errorf("%w: connection closed during handshake (%w)", ErrBadHandshake, err)
			}
			return
		}
		err = conn.SetDeadline(time.Time{})
	}()
	hello, err := local.marshal()
	if err != nil {
		return Hello{}, nil, err
	}
	var raw []byte
	if dialer {
		if _, err := conn.Write(hello); err != nil {
			return Hello{}, nil, err
		}
		remote, raw, err = readHelloRaw(conn)
		if err != nil {
			return Hello{}, nil, err
		}
		peerVerdict := readVerdict(conn)
		if peerVerdict != nil && !isRefusal(peerVerdict) {
			return Hello{}, nil, peerVerdict
		}
		mine := check(&local, &remote, verify)
		conn.Write(appendVerdict(nil, mine)) // best effort when refusing
		if mine != nil {
			return Hello{}, nil, mine
		}
		if peerVerdict != nil {
			return Hello{}, nil, peerVerdict
		}
		out, err = protect(ctx, conn, cfg, true, append(hello, raw...), func() error { return checkID(&local, &remote, verify) }, remote.ID)
		return remote, out, err
	}
	remote, raw, err = readHelloRaw(conn)
	if err != nil {
		return Hello{}, nil, err
	}
	mine := check(&local, &remote, verify)
	if _, err := conn.Write(appendVerdict(hello, mine)); err != nil && mine == nil {
		return Hello{}, nil, err
	}
	if mine != nil {
		return Hello{}, nil, mine
	}
	if err := readVerdict(conn); err != nil {
		return Hello{}, nil, err
	}
	out, err = protect(ctx, conn, cfg, false, append(raw, hello...), func() error { return checkID(&local, &remote, verify) }, remote.ID)
	return remote, out, err
}

// protect runs the secure phase that cfg asks for, if any. With TLS,
// checkID runs once the peer's certificate has proven peerID; with a
// secret, once the Noise phase has proven the peer a member. Either way
// each side then sends its verdict on the id inside the sealed channel.
func protect(ctx context.Context, conn net.Conn, cfg Config, dialer bool, prologue []byte, checkID func() error, peerID string) (net.Conn, error) {
	switch {
	case cfg.TLS != nil:
		return secureTLS(ctx, conn, cfg.TLS, dialer, peerID, checkID)
	case cfg.Secret != "":
		sc, err := secure(conn, cfg.Secret, dialer, prologue)
		if err != nil {
			return nil, err
		}
		mine := checkID()
		if _, err := sc.Write(appendVerdict(nil, mine)); err != nil && mine == nil {
			return nil, err
		}
		if mine != nil {
			return nil, mine
		}
		if err := readVerdict(sc); err != nil {
			return nil, err
		}
		return sc, nil
	}
	return conn, nil
}

// isRefusal reports whether err is a peer's refusal (as opposed to an I/O
// or framing error).
func isRefusal(err error) bool {
	for _, s := range []error{ErrWrongVersion, ErrWrongCluster, ErrSelfLink, ErrRefused, ErrAuth, ErrDuplicateID} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
