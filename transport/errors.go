package transport

import (
	"errors"
	"fmt"
)

// Errors returned by the handshake and by links. Errors a peer reports when
// it refuses a link wrap the same sentinels, so errors.Is works alike on
// both ends.
var (
	// ErrWrongVersion: the peer speaks another link protocol version.
	ErrWrongVersion = errors.New("transport: wrong protocol version")
	// ErrWrongCluster: the peer belongs to another cluster.
	ErrWrongCluster = errors.New("transport: wrong cluster")
	// ErrSelfLink: the peer is this node itself (its own id and run, as
	// when a node dials one of its own addresses).
	ErrSelfLink = errors.New("transport: link to self")
	// ErrRefused: the peer (or this node's Verify hook) refused the link
	// for another reason, which the error text gives.
	ErrRefused = errors.New("transport: link refused")
	// ErrAuth: the peer does not share this node's cluster secret (or its
	// TLS certificate is not trusted), or requires one this node lacks.
	ErrAuth = errors.New("transport: authentication failed")
	// ErrDuplicateID: two live runs claim one node id. The peer refused
	// this node because it holds another live run of this node's id, or
	// this node refused the peer for that reason, or the two ends are two
	// runs of one id (see TwinError).
	ErrDuplicateID = errors.New("transport: duplicate node id")
	// ErrBadHandshake: the peer sent bytes that are not a valid handshake.
	ErrBadHandshake = errors.New("transport: malformed handshake")
	// ErrBadStream: a stream header was malformed.
	ErrBadStream = errors.New("transport: malformed stream header")
	// ErrStreamReset: the peer reset the stream, or refused it because
	// its accept backlog was full.
	ErrStreamReset = errors.New("transport: stream reset by the peer")
	// ErrSilent: the link closed because nothing arrived from the peer
	// for KeepAliveInterval + WriteTimeout (plus the process's lateness)
	// and nobody vouched for it (Link.Vouch).
	ErrSilent = errors.New("transport: peer silent")
	// ErrWriteBlocked: the link closed because its connection took no
	// write for (1 + 3) × WriteTimeout (plus the process's lateness), or
	// three times that while it still carried, slowly, on a lossy network,
	// or because a frame waited that long for its turn on the connection.
	ErrWriteBlocked = errors.New("transport: connection takes no writes")
)

// TwinError is the error, on both ends, of a link whose two ends are two
// runs of one node id: two live processes given the same id (a node that
// dials itself gets ErrSelfLink). It wraps ErrDuplicateID. The two runs
// are told apart by Hello.Incarnation; the later one is the twin and
// should give the id up: its Yield is true.
type TwinError struct {
	// ID is the id both runs claim.
	ID string
	// Yield reports that this run is the later of the two.
	Yield bool
}

func (e *TwinError) Error() string {
	if e.Yield {
		return fmt.Sprintf("%v: the peer is an earlier live run of this node's id %q; this run must give the id up", ErrDuplicateID, e.ID)
	}
	return fmt.Sprintf("%v: the peer is a later run of this node's id %q, started while this one runs", ErrDuplicateID, e.ID)
}

func (e *TwinError) Unwrap() error { return ErrDuplicateID }

// timeoutError is returned when a handshake or stream open runs out of
// time; it satisfies net.Error.
type timeoutError struct{ op string }

func (e *timeoutError) Error() string   { return "transport: " + e.op + " timed out" }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
