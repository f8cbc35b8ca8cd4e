package transport

import "errors"

// Errors returned by the handshake and by links. Errors a peer reports when
// it refuses a link wrap the same sentinels, so errors.Is works alike on
// both ends.
var (
	// ErrWrongVersion: the peer speaks another link protocol version.
	ErrWrongVersion = errors.New("transport: wrong protocol version")
	// ErrWrongCluster: the peer belongs to another cluster.
	ErrWrongCluster = errors.New("transport: wrong cluster")
	// ErrSelfLink: the peer has this node's own id.
	ErrSelfLink = errors.New("transport: link to self")
	// ErrRefused: the peer (or this node's Verify hook) refused the link
	// for another reason, which the error text gives.
	ErrRefused = errors.New("transport: link refused")
	// ErrAuth: the peer does not share this node's cluster secret (or its
	// TLS certificate is not trusted), or requires one this node lacks.
	ErrAuth = errors.New("transport: authentication failed")
	// ErrDuplicateID: the peer is linked to another live node with the
	// same id as this one.
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
	// write for (1 + 3) × WriteTimeout (plus the process's lateness).
	ErrWriteBlocked = errors.New("transport: connection takes no writes")
)

// timeoutError is returned when a handshake or stream open runs out of
// time; it satisfies net.Error.
type timeoutError struct{ op string }

func (e *timeoutError) Error() string   { return "transport: " + e.op + " timed out" }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
