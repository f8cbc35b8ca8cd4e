package discovery

import (
	"context"
	"net/netip"
)

// Self describes the node that a discoverer announces.
type Self struct {
	// Cluster is the cluster name. Any length; never empty.
	Cluster string
	// ID is the node id. Never empty.
	ID string
	// Port is the TCP port the node's links listen on.
	Port int
	// Addrs are the addresses the node can be reached at. A discoverer may
	// announce only those that fit the interfaces it runs on; when empty, it
	// announces the addresses of those interfaces with Port.
	Addrs []netip.AddrPort
	// Passive makes the node only look: a discoverer reports the others
	// but makes this node known to none (MDNS announces, probes and answers
	// nothing of it, and sends no goodbye). For a node that only reads the
	// cluster for a while (an observer, as the CLI's ls): nobody dials it,
	// and it leaves nothing behind on the network.
	Passive bool
}

// Kind says whether a peer appeared or left.
type Kind int

const (
	// Found reports a peer (new, or with new addresses).
	Found Kind = iota + 1
	// Lost reports that a peer said goodbye or expired.
	Lost
	// Claimed reports, once per Run, that this node's id is its own on
	// the network: MDNS probed for it (RFC 6762 §8) and no other live
	// node holds it. Peer is empty. It comes about 750 ms after Run
	// starts; a Run that finds the id taken returns an error wrapping
	// ErrIDConflict instead.
	Claimed
)

func (k Kind) String() string {
	switch k {
	case Found:
		return "found"
	case Lost:
		return "lost"
	case Claimed:
		return "claimed"
	}
	return "unknown"
}

// Peer is a node a discoverer learned of.
type Peer struct {
	// ID is the peer's node id. Empty when a discoverer knows only an
	// address (Static); the handshake then tells the id.
	ID string
	// Addrs are the addresses to dial, best first.
	Addrs []netip.AddrPort
}

// Event is one report from a discoverer.
type Event struct {
	Kind Kind
	Peer Peer
	// Source names the discoverer ("mdns", "static", "dns").
	Source string
	// Err, when set, reports a transient discovery error (Kind is then 0);
	// the discoverer keeps running.
	Err error
}

// A Discoverer finds the peers of a cluster and, where it can, makes this
// node known to them.
//
// Run announces self and reports peers through report until ctx is
// cancelled; it then withdraws the announcement (an mDNS goodbye), waits for
// every goroutine it started, and returns nil. It returns an error at once
// when it cannot start (no usable interface, bad Self). report is called
// from Run's goroutines, never concurrently, and must not block; the bytes
// it is given belong to the receiver. Reports of this node's own id are
// never made.
type Discoverer interface {
	Run(ctx context.Context, self Self, report func(Event)) error
}
