package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/mdns"
)

// Defaults of MDNS.
const (
	DefaultTTL      = 120 * time.Second
	DefaultQueryMin = time.Second
	DefaultQueryMax = 60 * time.Second
)

var (
	// ErrNoInterface is returned by MDNS.Run when no interface can carry
	// mDNS (none up and multicast-capable, or none with an address of an
	// enabled IP version, or every socket failed).
	ErrNoInterface = errors.New("discovery: no interface for mDNS")
	// ErrNoPort is returned by MDNS.Run when Self has neither a Port nor
	// an address with a port.
	ErrNoPort = errors.New("discovery: no port to announce")
)

// MDNS discovers the peers of a cluster on the local links with multicast
// DNS (RFC 6762) and DNS-SD (RFC 6763), and makes this node known to them.
// Its zero value is ready to use; a value must not be changed while Run
// runs, and may serve several Runs at once.
//
// Queries are answered by hashicorp/mdns's Server (always by unicast to the
// querier); MDNS adds what it lacks: two announcements at start, passive
// listening for other nodes' announcements, browse queries with backoff,
// re-announcement before the records' TTL runs out, expiry of peers that
// fall silent, and a goodbye on close. At steady state a node sends well
// under one packet a second, whatever the size of the cluster: the query
// interval grows with the number of peers. Every packet it sends is at most
// 1,400 bytes.
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
	// traffic and for the addresses announced and reported. Zero: both on.
	// (hashicorp/mdns's responder still answers queries of either version.)
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

	// Logger receives routine events at Debug and hashicorp/mdns's lines.
	// Nil means slog.Default().
	Logger *slog.Logger
}

var _ Discoverer = (*MDNS)(nil)

// settings are MDNS's fields with defaults filled in.
type settings struct {
	ttl                time.Duration
	queryMin, queryMax time.Duration
	v4, v6             bool
	log                *slog.Logger
}

func (m *MDNS) settings() (settings, error) {
	s := settings{
		ttl:      m.TTL,
		queryMin: m.QueryMin,
		queryMax: m.QueryMax,
		v4:       !m.DisableIPv4,
		v6:       !m.DisableIPv6,
		log:      m.Logger,
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

// Run announces self on the local links and reports the peers of its
// cluster until ctx is done; it then stops answering queries, sends a
// goodbye, waits for its goroutines and returns nil. It returns at once
// ErrNoCluster, ErrNoID, ErrIDTooLong, ErrNoPort or ErrNoInterface (wrapped)
// when it cannot start. See Discoverer for how report is called.
//
// hashicorp/mdns's Server does not wait for its two receive goroutines on
// Shutdown; they end on their own a moment after Run returns.
func (m *MDNS) Run(ctx context.Context, self Self, report func(Event)) error {
	set, err := m.settings()
	if err != nil {
		return err
	}
	port, err := checkSelf(self)
	if err != nil {
		return err
	}
	ifaces, err := m.interfaces(set)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	links, err := buildLinks(set, self, port, ifaces)
	if err != nil {
		return err
	}
	socks, err := openSockets(set, links, ifaces)
	if err != nil {
		return err
	}
	servers := startResponders(set, links, ifaces)
	stop := func() {
		for _, l := range links {
			l.zone.close()
		}
		for _, s := range servers {
			s.Shutdown()
		}
	}
	if len(servers) == 0 {
		socks.close()
		return fmt.Errorf("%w: no mDNS responder could start", ErrNoInterface)
	}

	in := make(chan inPacket, 64)
	done := make(chan struct{})
	eng, err := newEngine(set, self, links, socks, in, report, set.log)
	if err != nil {
		stop()
		socks.close()
		return err
	}
	var wg sync.WaitGroup
	for _, c := range socks.conns() {
		wg.Go(func() { c.readLoop(in, done) })
	}
	set.log.Debug("mdns: started", "cluster", self.Cluster, "peer", self.ID, "ifaces", len(links))

	eng.run(ctx)

	// Silence the responder first, so that no answer follows the goodbye.
	stop()
	eng.goodbye()
	close(done)
	socks.close()
	wg.Wait()
	set.log.Debug("mdns: stopped", "cluster", self.Cluster, "peer", self.ID)
	return nil
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

// interfaces returns the interfaces to run on. By default: those up,
// running and multicast-capable, with an IPv4 address or an IPv6 address
// that is not link-local (so not, say, the veth of every container), and
// loopback where it is multicast-capable.
func (m *MDNS) interfaces(set settings) ([]net.Interface, error) {
	if m.Interfaces != nil {
		for _, ifi := range m.Interfaces {
			if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 {
				return nil, fmt.Errorf("%w: %s is down or not multicast-capable", ErrNoInterface, ifi.Name)
			}
		}
		return slices.Clone(m.Interfaces), nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoInterface, err)
	}
	var out []net.Interface
	for _, ifi := range all {
		const want = net.FlagUp | net.FlagRunning | net.FlagMulticast
		if ifi.Flags&want != want {
			continue
		}
		if ifi.Flags&net.FlagLoopback != 0 || hasRoutableAddr(set, &ifi) {
			out = append(out, ifi)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: none up, running and multicast-capable with an address", ErrNoInterface)
	}
	return out, nil
}

func hasRoutableAddr(set settings, ifi *net.Interface) bool {
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip4 := ipn.IP.To4(); ip4 != nil {
			if set.v4 {
				return true
			}
		} else if set.v6 && !ipn.IP.IsLinkLocalUnicast() {
			return true
		}
	}
	return false
}

// buildLinks reads the addresses of ifaces and builds each one's records.
// Interfaces without an address of an enabled IP version are left out.
func buildLinks(set settings, self Self, port uint16, ifaces []net.Interface) ([]*link, error) {
	txt := encodeTXT(self.Cluster, self.ID)
	n := newNames(self.Cluster, self.ID)
	var links []*link
	all := map[int][]netip.Prefix{}
	for _, ifi := range ifaces {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				ip, ok := netip.AddrFromSlice(ipn.IP)
				ones, bits := ipn.Mask.Size()
				if !ok || bits == 0 {
					continue
				}
				if ip = ip.Unmap(); ip.Is4() && bits == 128 {
					ones -= 96
				}
				all[ifi.Index] = append(all[ifi.Index], netip.PrefixFrom(ip, ones))
			}
		}
	}
	for _, ifi := range ifaces {
		l := &link{
			index:    ifi.Index,
			name:     ifi.Name,
			loopback: ifi.Flags&net.FlagLoopback != 0,
			prefixes: all[ifi.Index],
		}
		ok, err := l.build(set, self, port, n, txt, all)
		if err != nil {
			return nil, err
		}
		if ok {
			links = append(links, l)
		}
	}
	if len(links) == 0 {
		return nil, fmt.Errorf("%w: no interface has an address to announce", ErrNoInterface)
	}
	return links, nil
}

// build chooses the IP versions and source addresses of l and builds its
// records. It reports false when l has nothing to run on or announce.
func (l *link) build(set settings, self Self, port uint16, n names, txt [][]byte, all map[int][]netip.Prefix) (bool, error) {
	for _, p := range l.prefixes {
		a := p.Addr()
		if a.Is4() && set.v4 && !l.src4.IsValid() {
			l.v4, l.src4 = true, a
		}
		// Linux does not deliver IPv6 multicast on loopback. RFC 6762 §15
		// prefers a link-local source.
		if a.Is6() && set.v6 && !l.loopback && (!l.src6.IsValid() || a.IsLinkLocalUnicast() && !l.src6.IsLinkLocalUnicast()) {
			l.v6, l.src6 = true, a
		}
	}
	if !l.v4 && !l.v6 {
		return false, nil
	}
	addrs := announcedAddrs(set, self, port, l, all)
	if len(addrs) == 0 {
		return false, nil
	}
	rs, err := newRecordSet(n, txt, port, addrs, uint32(set.ttl/time.Second))
	if err != nil {
		return false, err
	}
	if l.announce, err = rs.announcement().Pack(); err != nil {
		return false, err
	}
	if l.goodbye, err = rs.goodbye().Pack(); err != nil {
		return false, err
	}
	l.rs, l.zone = rs, newZone(rs)
	return true, nil
}

// announcedAddrs returns the addresses announced on l: without
// self.Addrs, l's own; otherwise those of self.Addrs that fit l (with the
// announced port): an unspecified address stands for l's own of that
// version (:: for both), an address on some interface's subnet goes only
// on that interface, link-local and loopback ones only on their own
// interface, and any other goes everywhere.
func announcedAddrs(set settings, self Self, port uint16, l *link, all map[int][]netip.Prefix) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		a = a.WithZone("")
		if (a.Is4() && !set.v4) || (a.Is6() && !set.v6) || slices.Contains(out, a) {
			return
		}
		out = append(out, a)
	}
	own := func(v4, v6 bool) {
		for _, p := range l.prefixes {
			if (p.Addr().Is4() && v4) || (p.Addr().Is6() && v6) {
				add(p.Addr())
			}
		}
	}
	if len(self.Addrs) == 0 {
		own(true, true)
		return out
	}
	onSubnet := func(a netip.Addr, prefixes []netip.Prefix) bool {
		for _, p := range prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for _, ap := range self.Addrs {
		a := ap.Addr().Unmap()
		if ap.Port() != 0 && ap.Port() != port {
			continue // one SRV record, one port
		}
		switch {
		case a.IsUnspecified():
			own(true, a.Is6())
		case a.IsLoopback():
			if l.loopback {
				add(a)
			}
		case a.Is6() && a.IsLinkLocalUnicast():
			if a.Zone() == l.name || (a.Zone() == "" && onSubnet(a.WithZone(""), l.prefixes)) {
				add(a)
			}
		case onSubnet(a, l.prefixes):
			add(a)
		default:
			elsewhere := false
			for _, prefixes := range all {
				elsewhere = elsewhere || onSubnet(a, prefixes)
			}
			if !elsewhere {
				add(a)
			}
		}
	}
	return out
}

// startResponders starts one hashicorp/mdns Server per link, answering
// from that link's records.
func startResponders(set settings, links []*link, ifaces []net.Interface) []*mdns.Server {
	logger := slog.NewLogLogger(set.log.Handler(), slog.LevelDebug)
	var servers []*mdns.Server
	for _, l := range links {
		ifi := ifaceByIndex(ifaces, l.index)
		s, err := mdns.NewServer(&mdns.Config{Zone: l.zone, Iface: ifi, Logger: logger})
		if err != nil {
			set.log.Debug("mdns: responder failed", "iface", l.name, "err", err)
			continue
		}
		servers = append(servers, s)
	}
	return servers
}

func ifaceByIndex(ifaces []net.Interface, index int) *net.Interface {
	for i := range ifaces {
		if ifaces[i].Index == index {
			return &ifaces[i]
		}
	}
	return nil
}
