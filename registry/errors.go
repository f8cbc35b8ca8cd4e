package registry

import (
	"errors"
	"fmt"
	"net"
)

// Errors returned by the registry. They are sentinels: test them with
// errors.Is, since most are returned wrapped with details.
var (
	// ErrClosed is returned by every call on a closed Registry and by
	// Serve when the registry closes. It unwraps to net.ErrClosed.
	ErrClosed = fmt.Errorf("registry: closed: %w", net.ErrClosed)

	// ErrConfig is returned by New for an invalid Config.
	ErrConfig = errors.New("registry: invalid config")

	// ErrBadRole is returned for a malformed role ("name@version").
	ErrBadRole = errors.New("registry: bad role")

	// ErrBadQuery is returned for a malformed query ("name@range").
	ErrBadQuery = errors.New("registry: bad query")

	// ErrBadService is returned by Register for a service that cannot be
	// registered as given (a port out of range, an overlong host).
	ErrBadService = errors.New("registry: bad service")

	// ErrNotFound is returned by Free and Update for an unknown record id.
	ErrNotFound = errors.New("registry: no such record")

	// ErrNotOwner is returned by Free and Update for a record that another
	// node owns. Nothing changes, here or anywhere.
	ErrNotOwner = errors.New("registry: record owned by another node")

	// ErrPortTaken is returned by Register when this node already holds a
	// record with the same port.
	ErrPortTaken = errors.New("registry: port already registered by this node")

	// ErrMetadataTooLarge is returned when a record's metadata exceeds
	// Config.MaxMetadataBytes (locally by Register and Update; from a peer,
	// the offending message is refused and the link closed).
	ErrMetadataTooLarge = errors.New("registry: metadata too large")

	// ErrTooManyRecords is returned when an owner would hold more than
	// Config.MaxRecordsPerOwner records (locally by Register; from a peer,
	// the offending message is refused and the link closed).
	ErrTooManyRecords = errors.New("registry: too many records for one owner")

	// ErrMessageTooLarge is returned when a message to send or a frame
	// received exceeds Config.MaxMessageBytes.
	ErrMessageTooLarge = errors.New("registry: message too large")

	// ErrProtocol is returned by Serve when the peer breaks the replication
	// protocol (a malformed or unexpected message, a wrong protocol
	// version, a peer id that does not match).
	ErrProtocol = errors.New("registry: protocol error")

	// ErrForged is returned by Serve when, with Config.Identity, the
	// peer sends a message whose owner's signature fails, or a credential
	// that does not prove its owner: the message is not applied and the
	// link closes. It wraps ErrProtocol.
	ErrForged = fmt.Errorf("registry: not signed by its owner: %w", ErrProtocol)

	// ErrUntrusted is what an Identity's Verifier wraps for a credential
	// it cannot prove here (an expired certificate, an authority it does
	// not trust), as opposed to one that is proven not to be the owner's:
	// the owner's messages are not applied, and the link that brought the
	// credential stays (the relay may have checked it in good faith).
	ErrUntrusted = errors.New("registry: credential not trusted here")

	// ErrSlowPeer is returned by Serve when a peer falls so far behind that
	// its outgoing queue exceeds its bound; the link is closed.
	ErrSlowPeer = errors.New("registry: peer too slow")
)

// More errors, for Serve and Dial.
var (
	// ErrBadPeer is returned by Serve for an empty or overlong peer id, or
	// this node's own id.
	ErrBadPeer = errors.New("registry: invalid peer id")

	// ErrNoInstance is returned by Dial when no matching instance could be
	// dialed; it wraps the dial errors too.
	ErrNoInstance = errors.New("registry: no reachable instance")
)
