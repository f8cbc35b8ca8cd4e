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
)

// Verdict codes, sent by each side after it has read the other's hello.
const (
	verdictOK byte = iota
	verdictWrongVersion
	verdictWrongCluster
	verdictSelf
	verdictRefused
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
	}
	return verdictRefused
}

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
	if head[0] > verdictRefused {
		return fmt.Errorf("%w: unknown verdict %d", ErrBadHandshake, head[0])
	}
	return fmt.Errorf("%w (refused by peer: %s)", verdictError(head[0]), reason)
}

// check is what each side verifies of the other's hello.
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
	if remote.ID == local.ID {
		return fmt.Errorf("%w: peer has this node's id %q", ErrSelfLink, local.ID)
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

// handshake runs the exchange on conn, as the dialer when dialer is true.
//
//	dialer                      acceptor
//	hello         ------------>
//	              <------------ hello, verdict
//	verdict       ------------>
//
// Each verdict says whether its sender accepts the link, and why not. The
// whole exchange is bounded by timeout and by ctx.
func handshake(ctx context.Context, conn net.Conn, local Hello, dialer bool, timeout time.Duration, verify func(Hello) error) (remote Hello, err error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return Hello{}, err
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
				err = fmt.Errorf("%w: connection closed during handshake", ErrBadHandshake)
			}
			return
		}
		err = conn.SetDeadline(time.Time{})
	}()
	hello, err := local.marshal()
	if err != nil {
		return Hello{}, err
	}
	if dialer {
		if _, err := conn.Write(hello); err != nil {
			return Hello{}, err
		}
		remote, err = readHello(conn)
		if err != nil {
			return Hello{}, err
		}
		peerVerdict := readVerdict(conn)
		if peerVerdict != nil && !isRefusal(peerVerdict) {
			return Hello{}, peerVerdict
		}
		mine := check(&local, &remote, verify)
		conn.Write(appendVerdict(nil, mine)) // best effort when refusing
		if mine != nil {
			return Hello{}, mine
		}
		return remote, peerVerdict
	}
	remote, err = readHello(conn)
	if err != nil {
		return Hello{}, err
	}
	mine := check(&local, &remote, verify)
	if _, err := conn.Write(appendVerdict(hello, mine)); err != nil && mine == nil {
		return Hello{}, err
	}
	if mine != nil {
		return Hello{}, mine
	}
	if err := readVerdict(conn); err != nil {
		return Hello{}, err
	}
	return remote, nil
}

// isRefusal reports whether err is a peer's refusal (as opposed to an I/O
// or framing error).
func isRefusal(err error) bool {
	for _, s := range []error{ErrWrongVersion, ErrWrongCluster, ErrSelfLink, ErrRefused} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
