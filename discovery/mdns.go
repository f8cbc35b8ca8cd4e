package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// Defaults of MDNS.
const (
	DefaultTTL      = 120 * time.Second
	DefaultQueryMin = time.Second
	DefaultQueryMax = 60 * time.Second
)

// MDNS discovers the peers of a cluster on the local network with multicast
// DNS (RFC 6762) and DNS-SD (RFC 6763), and makes this node known to them.
// Its zero value is ready to use; a value must not be changed while Run
// runs, and may serve several Runs at once.
//
// It sends two announcements at start and probes for the node's id
// alongside (RFC 6762 §8: Run ends with ErrIDConflict when another live
// node holds it), listens passively for other nodes' announcements,
// browses with backoff, re-announces before the records' TTL runs out,
// expires peers that fall silent, says goodbye on close, and answers
// queries as RFC 6762 asks (multicast to QM questions, unicast to QU
// questions and legacy queriers, known answers suppressed, rate-limited):
// only those that arrive on an interface it runs on, with that
// interface's records, so that it never answers on an interface it was
// not told to use. At steady state a node sends well under one packet a
// second, whatever the size of the cluster: the query interval grows with
// the number of peers. Every packet it sends is at most 1,400 bytes.
//
// The cluster name, of any length, is published as a DNS-SD subtype of
// _tallship._tcp whose label is a hash of the name; the TXT record carries
// the name itself (or, past 320 bytes, its SHA-256), the node id (at most
// MaxIDLen bytes) and the protocol version, and is checked on receipt, so
// clusters never mix even when their hashes collide.
type MDNS struct {
	// Interfaces to run on; each must be up and multicast-capable. Nil
	// means every interface that is up, running and multicast-capable and
	// has an IPv4 address or an IPv6 address other than link-local (not,
	// say, the veth of every container), loopback included when it is
	// multicast-capable. Interfaces and their addresses are read once, when
	// Run starts.
	Interfaces []net.Interface

	// DisableIPv4 and DisableIPv6 turn off one IP version, both for mDNS
	// traffic (queries of that version go unanswered) and for the
	// addresses announced and reported. Zero: both on.
	DisableIPv4 bool
	DisableIPv6 bool

	// TTL of the records announced, rounded up to whole seconds; peers
	// that stop refreshing theirs are reported Lost when it runs out. This
	// node re-announces at half of it. Zero means DefaultTTL (120 s); the
	// least is 1 s.
	TTL time.Duration

	// QueryMin is the wait between the first browse query (sent at once)
	// and the second; later waits double up to QueryMax, and past the
	// second never go below 2 s per node known, so that the answers all
	// nodes' queries draw stay under half a packet per second per node.
	// Zero means DefaultQueryMin (1 s) and DefaultQueryMax (60 s).
	QueryMin time.Duration
	QueryMax time.Duration

	// Logger receives routine events at Debug. Nil means slog.Default().
	Logger *slog.Logger

	packets packetCounts // see Packets
}

var _ Discoverer = (*MDNS)(nil)

// settings are MDNS's fields with defaults filled in.
type settings struct {
	ttl                time.Duration
	queryMin, queryMax time.Duration
	v4, v6             bool
	log                *slog.Logger
	counts             *packetCounts // the MDNS's
}

func (m *MDNS) settings() (settings, error) {
	s := settings{
		ttl:      m.TTL,
		queryMin: m.QueryMin,
		queryMax: m.QueryMax,
		v4:       !m.DisableIPv4,
		v6:       !m.DisableIPv6,
		log:      m.Logger,
		counts:   &m.packets,
	}
	if !s.v4 && !s.v6 {
		return s, fmt.Errorf("%w: both IPv4 and IPv6 disabled", ErrNoInterface)
	}
	if s.ttl <= 0 {
		s.ttl = DefaultTTL
	}
	s.ttl = max(time.Second, (s.ttl + time.Second - 1).Truncate(time.Second))
	if s.queryMin <= 0 {
		s.queryMin = DefaultQueryMin
	}
	if s.queryMax <= 0 {
		s.queryMax = DefaultQueryMax
	}
	s.queryMax = max(s.queryMax, s.queryMin)
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// Run announces self on the local network and reports the peers of its
// cluster until ctx is done; it then stops answering queries, sends a
// goodbye, waits for its goroutines and returns nil. It returns at once
// ErrNoCluster, ErrNoID, ErrIDTooLong, ErrNoPort or ErrNoInterface (wrapped)
// when it cannot start, and an error wrapping ErrIDConflict, without a
// goodbye, when another live node on the link holds self.ID (reported
// Claimed otherwise, about 750 ms after the start). See Discoverer for how
// report is called.
func (m *MDNS) Run(ctx context.Context, self Self, report func(Event)) error {
	set, err := m.settings()
	if err != nil {
		return err
	}
	port, err := checkSelf(self)
	if err != nil {
		return err
	}
	chosen, err := m.interfaces(set)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	ifaces, err := buildIfaces(set, self, port, chosen)
	if err != nil {
		return err
	}
	socks, err := openSockets(set, ifaces, chosen)
	if err != nil {
		return err
	}
	ifaces = slices.DeleteFunc(ifaces, func(ifc *iface) bool { return !ifc.v4 && !ifc.v6 })

	in := make(chan inPacket, 64)
	done := make(chan struct{})
	eng, err := newEngine(set, self, ifaces, socks, in, report)
	if err != nil {
		socks.close()
		return err
	}
	var wg sync.WaitGroup
	for _, c := range socks.conns() {
		wg.Go(func() { c.readLoop(in, done) })
	}
	set.log.Debug("mdns: started", "cluster", self.Cluster, "node", self.ID, "ifaces", len(ifaces))

	// Once run returns, nothing answers queries: no answer follows the
	// goodbye.
	// A node that yields its id to another live node sends no goodbye:
	// the names are the other node's.
	err = eng.run(ctx)
	if err == nil {
		eng.goodbye()
	}
	close(done)
	socks.close()
	wg.Wait()
	set.log.Debug("mdns: stopped", "cluster", self.Cluster, "node", self.ID, "err", err)
	return err
}

// checkSelf validates self and returns the port to announce.
func checkSelf(self Self) (uint16, error) {
	switch {
	case self.Cluster == "":
		return 0, ErrNoCluster
	case self.ID == "":
		return 0, ErrNoID
	case len(self.ID) > MaxIDLen:
		return 0, ErrIDTooLong
	case self.Port < 0 || self.Port > 65535:
		return 0, fmt.Errorf("%w: port %d out of range", ErrNoPort, self.Port)
	case self.Port != 0:
		return uint16(self.Port), nil
	}
	for _, a := range self.Addrs {
		if a.Port() != 0 {
			return a.Port(), nil
		}
	}
	return 0, ErrNoPort
}
