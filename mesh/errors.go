package mesh

import (
	"errors"
	"fmt"
	"net"
)

// Errors returned by a Node. Link refusals (wrong cluster, wrong version,
// a link to self) are the transport package's sentinels.
var (
	// ErrUnknownPeer: no link to a peer of that id, and no member of
	// another site of that id.
	ErrUnknownPeer = errors.New("mesh: unknown peer")
	// ErrRemotePeer: OpenStream to a member of another site (Remotes),
	// which messages reach over NATS but streams do not: they are
	// LAN-only.
	ErrRemotePeer = errors.New("mesh: peer of another site; streams are LAN-only")
	// ErrTooLarge: a message larger than Config.MaxMessageSize.
	ErrTooLarge = errors.New("mesh: message too large")
	// ErrProtocolInUse: Listen on a protocol that already has a listener.
	ErrProtocolInUse = errors.New("mesh: protocol already has a listener")
	// ErrBadProtocol: an empty or too long protocol name.
	ErrBadProtocol = errors.New("mesh: bad protocol name")
	// ErrStarted: Start on a node that has already started.
	ErrStarted = errors.New("mesh: node already started")
	// ErrTooManyPeers: a link refused because the node has
	// Config.MaxPeers peers.
	ErrTooManyPeers = errors.New("mesh: too many peers")
	// ErrNoCluster: an empty cluster name.
	ErrNoCluster = errors.New("mesh: empty cluster name")
	// ErrBadInterface: a name in Config.Interfaces that is no interface.
	ErrBadInterface = errors.New("mesh: no such interface")
	// ErrIDConflict: another live node has this node's id. Start returns
	// it (wrapping discovery.ErrIDConflict) when mDNS finds the id taken
	// on the network; IDConflict events carry it (wrapping
	// transport.ErrDuplicateID when peers refuse the node's links because
	// they hold another live run of its id, or a link meets an earlier run
	// of its id: docs/protocol.md, "Twins").
	ErrIDConflict = errors.New("mesh: another live node has this node's id")
)

// errClosed is returned by calls on a closed node; it unwraps to
// net.ErrClosed.
var errClosed = fmt.Errorf("mesh: node closed: %w", net.ErrClosed)

func unknownPeer(id string) error { return fmt.Errorf("%w %q", ErrUnknownPeer, id) }

// idConflictError is an error of another live node with this node's id,
// found by a peer's refusal or by mDNS: it reads as its cause and is
// ErrIDConflict as well.
type idConflictError struct{ cause error }

func (e idConflictError) Error() string        { return e.cause.Error() }
func (e idConflictError) Unwrap() error        { return e.cause }
func (e idConflictError) Is(target error) bool { return target == ErrIDConflict }

// idConflict wraps cause so that it is ErrIDConflict too.
func idConflict(cause error) error { return idConflictError{cause} }
