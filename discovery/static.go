package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultStaticInterval is how often Static reports its addresses again
// when Interval is zero.
const DefaultStaticInterval = 5 * time.Second

// Static reports a fixed list of addresses: for peers across subnets or in
// clouds, where multicast does not reach. It announces nothing. Its zero
// value reports nothing; a value must not be changed while Run runs.
type Static struct {
	// Addrs are the peers' addresses, "host:port", where host is an IP
	// address or a name resolved at each report (all of a name's addresses
	// make one peer, IPv4 first). The port may be a service name.
	Addrs []string

	// Interval is how often every address is reported again, so that the
	// mesh retries peers it could not reach. Zero means
	// DefaultStaticInterval (5 s); a negative value reports once.
	Interval time.Duration

	// Resolver looks up host names. Nil means net.DefaultResolver.
	Resolver *net.Resolver

	// Logger receives routine events at Debug. Nil means slog.Default().
	Logger *slog.Logger
}

var _ Discoverer = (*Static)(nil)

// staticEntry is one parsed entry of Static.Addrs.
type staticEntry struct {
	raw  string
	host string
	ip   netip.Addr // valid when host is a literal
	port uint16
}

// Run reports each address as Found (with an empty ID: the handshake tells
// it) at once and then every Interval, until ctx is done; it returns nil
// then. A name that does not resolve is reported as an Event with Err, and
// tried again at the next round. Addresses equal to one of self.Addrs are
// skipped. Run returns an error wrapping ErrBadAddr at once if an entry is
// not host:port. See Discoverer for how report is called.
func (s *Static) Run(ctx context.Context, self Self, report func(Event)) error {
	entries, err := parseStatic(s.Addrs)
	if err != nil {
		return err
	}
	interval := s.Interval
	if interval == 0 {
		interval = DefaultStaticInterval
	}
	resolver := s.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	var ticker <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		ticker = t.C
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		for _, e := range entries {
			addrs, err := e.resolve(ctx, resolver)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				log.Debug("static: resolve failed", "addr", e.raw, "err", err)
				report(Event{Source: "static", Err: err})
				continue
			}
			addrs = slices.DeleteFunc(addrs, func(a netip.AddrPort) bool {
				return slices.Contains(self.Addrs, a)
			})
			if len(addrs) > 0 {
				report(Event{Kind: Found, Peer: Peer{Addrs: addrs}, Source: "static"})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker:
		}
	}
}

func parseStatic(raw []string) ([]staticEntry, error) {
	out := make([]staticEntry, 0, len(raw))
	for _, r := range raw {
		e, err := parseEntry(r)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// Resolve returns the addresses of addr, "host:port" as Static.Addrs takes
// it: host an IP address or a host name, port a number or a service name.
// A name's addresses come each once, IPv4 first. Nil r means
// net.DefaultResolver. It returns an error wrapping ErrBadAddr, naming
// addr, when addr is not such an address, and one naming addr and wrapping
// the resolver's *net.DNSError when the name does not resolve.
func Resolve(ctx context.Context, r *net.Resolver, addr string) ([]netip.AddrPort, error) {
	e, err := parseEntry(addr)
	if err != nil {
		return nil, err
	}
	if r == nil {
		r = net.DefaultResolver
	}
	return e.resolve(ctx, r)
}

// parseEntry parses one "host:port" of Static.Addrs.
func parseEntry(r string) (staticEntry, error) {
	host, port, err := net.SplitHostPort(r)
	if err != nil {
		return staticEntry{}, fmt.Errorf("%w %q: %v", ErrBadAddr, r, err)
	}
	if host == "" {
		return staticEntry{}, fmt.Errorf("%w %q: no host", ErrBadAddr, r)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		n, lerr := net.LookupPort("tcp", port)
		if lerr != nil {
			return staticEntry{}, fmt.Errorf("%w %q: port %q", ErrBadAddr, r, port)
		}
		p = uint64(n)
	}
	if p == 0 {
		return staticEntry{}, fmt.Errorf("%w %q: port 0", ErrBadAddr, r)
	}
	e := staticEntry{raw: r, host: host, port: uint16(p)}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return staticEntry{}, fmt.Errorf("%w %q: not a unicast address", ErrBadAddr, r)
		}
		e.ip = ip.Unmap()
	} else if !validHostname(host) {
		return staticEntry{}, fmt.Errorf("%w %q: %q is neither an IP address nor a host name", ErrBadAddr, r, host)
	}
	return e, nil
}

// validHostname accepts what a resolver could look up: dot-separated
// labels of letters, digits, hyphens and underscores.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// resolve returns the entry's addresses with its port, IPv4 first.
func (e staticEntry) resolve(ctx context.Context, r *net.Resolver) ([]netip.AddrPort, error) {
	if e.ip.IsValid() {
		return []netip.AddrPort{netip.AddrPortFrom(e.ip, e.port)}, nil
	}
	ips, err := r.LookupNetIP(ctx, "ip", e.host)
	if err != nil {
		return nil, fmt.Errorf("discovery: resolve %q: %w", e.raw, err)
	}
	return withPort(ips, e.port), nil
}

// withPort returns the addresses with port, each once, IPv4 first.
func withPort(ips []netip.Addr, port uint16) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip.Unmap(), port)
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	slices.SortStableFunc(out, func(a, b netip.AddrPort) int {
		switch {
		case a.Addr().Is4() == b.Addr().Is4():
			return 0
		case a.Addr().Is4():
			return -1
		}
		return 1
	})
	return out
}
