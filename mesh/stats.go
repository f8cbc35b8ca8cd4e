package mesh

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/sites"
	"github.com/tallship-go/tallship/transport"
)

// Stats is a snapshot of a node's figures, for monitoring: counters, which
// only grow while the node lives, and gauges, read when Stats is called.
// The package github.com/tallship-go/tallship/metrics serves them to
// Prometheus.
type Stats struct {
	// Peers (gauge) is how many peers the node has: len(Peers()).
	Peers int
	// LinksMade counts the links that passed their handshake and were
	// taken into the mesh, on either end (a duplicate link to a peer
	// already linked, later retired, counts too).
	LinksMade uint64
	// LinksRedone counts lost links to a live peer that were made again
	// before the peer was declared down (see PeerDown): nothing Send
	// accepted was lost, but each is a link that broke.
	LinksRedone uint64
	// AcceptsFailed counts the accepts of inbound connections that failed
	// (the node waits and accepts again): mostly a process out of file
	// descriptors, each link taking one at each end (ulimit -n).
	AcceptsFailed uint64
	// HandshakesRefused counts the handshakes that failed, by reason, on
	// either end: this node refused a peer, or a peer refused this node.
	HandshakesRefused Refusals
	// MessagesSent counts the messages Send, SendMany and Broadcast
	// queued, once per peer (a Broadcast to 3 peers counts 3); one
	// written again on a new link is not counted again. MessageBytesSent
	// sums their sizes (the caller's bytes, without framing).
	MessagesSent     uint64
	MessageBytesSent uint64
	// MessagesReceived counts the messages delivered to Receive, and
	// MessageBytesReceived sums their sizes.
	MessagesReceived     uint64
	MessageBytesReceived uint64
	// QueueBytes (gauge) is what Send has queued for all peers and they
	// have not acknowledged yet, in bytes (framed); each peer's share is
	// bounded by Config.SendQueueBytes.
	QueueBytes int
	// Records (gauge) is how many service records the node sees: those
	// Services("") returns.
	Records int
	// MDNSPacketsSent and MDNSPacketsReceived count the packets of the
	// node's discovery.MDNS discoverers (discovery.MDNS.Packets): an MDNS
	// value shared by several nodes counts theirs together. Zero without
	// mDNS.
	MDNSPacketsSent     uint64
	MDNSPacketsReceived uint64
	// EventsDropped counts the events a slow reader of Events lost: each
	// subscription whose queue was full (Config.EventBuffer) when an event
	// came drops its oldest, and each drop counts one.
	EventsDropped uint64
	// NATS are the figures of the node's connection to NATS and of the
	// other sites it hears there (Config.NATS): all zero without NATS.
	NATS NATSStats
}

// NATSStats are the figures of a node's connection to NATS
// (Config.NATS), and of the other sites it hears there.
type NATSStats struct {
	// Connected (gauge) reports whether the node has a connection to
	// NATS now (NATSConnected).
	Connected bool
	// URL (gauge) is the server the node is connected to, its
	// credentials (a password, a token) hidden; "" while not connected.
	URL string
	// Reconnects counts the connections to NATS made again: after one
	// was lost (to the same server or another of the system, as the
	// client fails over) and after a first try that failed.
	Reconnects uint64
	// Outages counts the times NATS went out of reach (the connection
	// lost, no server answering, credentials refused), once per outage:
	// as the NATSDown events do, less those that only say a new reason.
	// OutageTime is how long the node has been without NATS in all, the
	// outage going on included.
	Outages    uint64
	OutageTime time.Duration
	// MessagesSent and BytesSent count what the node published on NATS,
	// MessagesReceived and BytesReceived what NATS delivered to it (the
	// other nodes' of its own site included: it drops those once read),
	// as the NATS client counts them: payloads (sealed, with a secret),
	// without NATS's own protocol.
	MessagesSent, BytesSent         uint64
	MessagesReceived, BytesReceived uint64
	// MessagesDropped counts what NATS delivered that the node dropped
	// unread: what waited to be read (the registry's, or the messages')
	// was at its bound (32 MiB each). The registry asks again for what
	// it missed, and a message's sender publishes it again.
	MessagesDropped uint64
	// RemoteMembers (gauge) is how many members of other sites the node
	// hears: len(Remotes()), as the registry has them (RemoteUp and
	// RemoteDown events may still be on their way to subscribers).
	RemoteMembers int
	// RemoteRecords (gauge) is how many of the records the node sees
	// (Records) are theirs.
	RemoteRecords int
}

// Refusals counts refused handshakes by reason.
type Refusals struct {
	Auth        uint64 // transport.ErrAuth: no or another secret, or an untrusted certificate
	Cluster     uint64 // transport.ErrWrongCluster
	Version     uint64 // transport.ErrWrongVersion
	DuplicateID uint64 // transport.ErrDuplicateID: two live runs of one id
	Self        uint64 // transport.ErrSelfLink: a dial to this node itself
	Timeout     uint64 // the handshake ran out of time
	Other       uint64 // anything else: a malformed handshake, a peer over Config.MaxPeers, ...
}

// Stats returns the node's figures now. It takes no network round trip
// and is cheap enough to call at every scrape; it may be called before
// Start and after Close (the gauges are then zero).
func (n *Node) Stats() Stats {
	c := &n.stats
	s := Stats{
		LinksMade:            c.linksMade.Load(),
		LinksRedone:          c.linksRedone.Load(),
		AcceptsFailed:        c.acceptsFailed.Load(),
		MessagesSent:         c.messagesSent.Load(),
		MessageBytesSent:     c.bytesSent.Load(),
		MessagesReceived:     c.messagesReceived.Load(),
		MessageBytesReceived: c.bytesReceived.Load(),
		EventsDropped:        n.events.dropped.Load(),
	}
	r := &s.HandshakesRefused
	for reason, p := range [...]*uint64{&r.Auth, &r.Cluster, &r.Version, &r.DuplicateID, &r.Self, &r.Timeout, &r.Other} {
		*p = c.refused[reason].Load()
	}
	n.mu.Lock()
	peers := make([]*peer, 0, len(n.peers))
	for _, p := range n.peers {
		peers = append(peers, p)
	}
	reg := n.reg
	discoverers := n.discoverers
	bus := n.bus
	n.mu.Unlock()
	s.Peers = len(peers)
	for _, p := range peers {
		p.qmu.Lock()
		s.QueueBytes += p.queued
		p.qmu.Unlock()
	}
	if reg != nil {
		s.Records = reg.Len()
	}
	for _, d := range discoverers {
		if m, ok := d.(*discovery.MDNS); ok {
			sent, received := m.Packets()
			s.MDNSPacketsSent += sent
			s.MDNSPacketsReceived += received
		}
	}
	if bus != nil {
		s.NATS = natsStats(bus.Stats(), reg)
	}
	return s
}

// natsStats are the figures of a node's bus b, and of the other sites'
// members its registry reg holds.
func natsStats(b sites.Stats, reg *registry.Registry) NATSStats {
	s := NATSStats{
		Connected:        b.Connected,
		URL:              b.URL,
		Reconnects:       b.Reconnects,
		Outages:          b.Outages,
		OutageTime:       b.Down,
		MessagesSent:     b.MessagesSent,
		BytesSent:        b.BytesSent,
		MessagesReceived: b.MessagesReceived,
		BytesReceived:    b.BytesReceived,
		MessagesDropped:  b.Dropped,
	}
	for _, ro := range reg.Remotes() {
		s.RemoteMembers++
		s.RemoteRecords += ro.Records
	}
	return s
}

// nodeStats are a node's counters. They are atomic: the message counters
// are on the hot paths of Send and of each link's reader, where they add
// no lock and no allocation.
type nodeStats struct {
	linksMade        atomic.Uint64
	linksRedone      atomic.Uint64
	acceptsFailed    atomic.Uint64
	refused          [numRefusals]atomic.Uint64
	messagesSent     atomic.Uint64
	bytesSent        atomic.Uint64
	messagesReceived atomic.Uint64
	bytesReceived    atomic.Uint64
}

// The reasons of refused handshakes, in the order of Refusals' fields.
const (
	refusedAuth = iota
	refusedCluster
	refusedVersion
	refusedDuplicateID
	refusedSelf
	refusedTimeout
	refusedOther
	numRefusals
)

// sent counts a message frame queued for one peer.
func (c *nodeStats) sent(frame []byte) {
	size, _ := binary.Uvarint(frame[1:]) // the frame's header: type, then the payload's length
	c.messagesSent.Add(1)
	c.bytesSent.Add(size)
}

// received counts a message of size bytes delivered to Receive.
func (c *nodeStats) received(size int) {
	c.messagesReceived.Add(1)
	c.bytesReceived.Add(uint64(size))
}

// handshakeFailed counts a handshake that failed with err, on either end,
// unless it was called off (as for LinkFailed, see failureReason): the
// node is closing, the caller's ctx ended, or the dial was no longer
// needed (another address of the peer answered first).
func (n *Node) handshakeFailed(err error) {
	if n.ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return
	}
	n.stats.refused[refusalReason(err)].Add(1)
}

// refusalReason classifies a handshake's error.
func refusalReason(err error) int {
	var ne net.Error
	switch {
	case errors.Is(err, transport.ErrAuth):
		return refusedAuth
	case errors.Is(err, transport.ErrWrongCluster):
		return refusedCluster
	case errors.Is(err, transport.ErrWrongVersion):
		return refusedVersion
	case errors.Is(err, transport.ErrDuplicateID):
		return refusedDuplicateID
	case errors.Is(err, transport.ErrSelfLink):
		return refusedSelf
	case errors.As(err, &ne) && ne.Timeout():
		return refusedTimeout
	}
	return refusedOther
}
