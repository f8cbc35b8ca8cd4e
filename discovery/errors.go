package discovery

import (
	"errors"
	"fmt"
)

// Errors of the discoverers. A Run that cannot start returns one of them,
// wrapped with the detail; errors.Is tells them apart.
var (
	// ErrNoCluster is returned by MDNS.Run when Self.Cluster is empty.
	ErrNoCluster = errors.New("discovery: empty cluster name")
	// ErrNoID is returned by MDNS.Run when Self.ID is empty.
	ErrNoID = errors.New("discovery: empty node id")
	// ErrIDTooLong is returned by MDNS.Run for an id longer than MaxIDLen.
	ErrIDTooLong = fmt.Errorf("discovery: node id longer than %d bytes", MaxIDLen)
	// ErrNoPort is returned by MDNS.Run when Self has neither a Port nor
	// an address with a port.
	ErrNoPort = errors.New("discovery: no port to announce")
	// ErrNoInterface is returned by MDNS.Run when no interface can carry
	// mDNS (none up and multicast-capable, or none with an address of an
	// enabled IP version, or every socket failed).
	ErrNoInterface = errors.New("discovery: no interface for mDNS")
	// ErrIDConflict is returned (wrapped, naming the other node's
	// address) by MDNS.Run when another live node on the link holds this
	// node's id: it answered this node's probes, or won the tie-break of
	// two nodes probing at once (RFC 6762 §8, §9).
	ErrIDConflict = errors.New("discovery: another live node has this node's id")
	// ErrBadTXT wraps why a received mDNS TXT record is not a tallship
	// announcement; MDNS skips the record and logs the error at Debug.
	ErrBadTXT = errors.New("discovery: malformed mDNS TXT record")

	// ErrBadAddr is returned (wrapped, naming the address) by Static.Run
	// for an entry of Addrs that is not host:port.
	ErrBadAddr = errors.New("discovery: bad address")

	// ErrBadName is returned (wrapped) by DNS.Run when Name is empty or
	// not a domain name.
	ErrBadName = errors.New("discovery: bad DNS name")
	// ErrBadServer is returned (wrapped) by DNS.Run when Server is not an
	// IP address with an optional port.
	ErrBadServer = errors.New("discovery: bad DNS server address")
	// ErrLookup wraps what DNS reports as an Event's Err when a look-up
	// fails: no server answered in time, or a server failed ("server
	// misbehaving": SERVFAIL, REFUSED). The error names the question and
	// the server, and wraps net.Resolver's *net.DNSError.
	ErrLookup = errors.New("discovery: DNS lookup failed")
)
