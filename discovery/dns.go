package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults of DNS.
const (
	DefaultDNSInterval = 5 * time.Second
	DefaultDNSTimeout  = 2 * time.Second
)

// DNS finds peers through DNS SRV records (RFC 2782): for peers across
// subnets, in clouds and in clusters, where multicast does not reach. It
// announces nothing: the records are kept by whatever serves them (Consul,
// Kubernetes, a zone file). Its zero value is not usable (Name is
// required); a value must not be changed while Run runs, and may serve
// several Runs at once.
//
// Every Interval it asks for the SRV records of Name and reports each
// target host and port as one peer, Found, with the target's IPv4 and then
// IPv6 addresses, taken from the answer's additional section or, when it
// has none for a target, asked for (A and AAAA); addresses no one can dial
// (unspecified, multicast, IPv6 link-local, which would need a zone) are
// left out. Targets are reported in the order of their priority (lowest
// first) and weight (highest first). A target that is no longer in a later
// answer (or whose name no longer exists) is reported Lost; a failed
// look-up changes nothing. A target with one of this node's own addresses
// (Self.Addrs) is this node and is never reported.
//
// A peer's ID is empty (the handshake tells it), unless the answer's
// additional section holds a TXT record for the SRV target with a string
// "i=<id>", the key that tallship's mDNS records use; it is ignored when
// the target has several ports (several nodes on one host).
//
// # Consul
//
// Register each node as a service "tallship" with the port its links
// listen on (a fixed one, not 0), and ask the local agent's DNS interface:
//
//	&discovery.DNS{Name: "tallship.service.consul", Server: "127.0.0.1:8600"}
//
// Consul leaves out instances whose health checks fail, so a failing check
// takes a node out of the next round (reported Lost). The RFC 2782 form
// "_tallship._tcp.service.consul" works too, and so does another data
// centre's, "tallship.service.dc2.consul". Where the system resolver
// forwards .consul to Consul, Server can stay empty.
//
// # Kubernetes
//
// Give the pods a headless Service (clusterIP: None) with a named port,
// say "tallship" over TCP, and publishNotReadyAddresses: true so that
// starting pods find each other before they are ready; the cluster DNS
// then serves one SRV record per pod:
//
//	&discovery.DNS{Name: "_tallship._tcp.tallship.default.svc.cluster.local"}
//
// where "tallship" is the port's name, the second "tallship" the
// Service's and "default" its namespace. Server stays empty: the pod's
// /etc/resolv.conf names the cluster DNS, and its search list completes a
// short name such as "_tallship._tcp.tallship" within the pod's namespace.
//
// # Look-ups
//
// With Server empty, the servers, port and search list come from
// /etc/resolv.conf, read at every round; a name without a final dot is
// completed with the search list as the system resolver would. With Server
// set, Name is taken as fully qualified. The servers are asked in turn,
// starting with the last that answered, over UDP, and over TCP when an
// answer comes truncated.
type DNS struct {
	// Name is the name whose SRV records list the peers. Required.
	Name string

	// Server is the DNS server to ask, "host:port" where host is an IP
	// address; without a port, 53. Empty means the servers of
	// /etc/resolv.conf.
	Server string

	// Interval is how often the records are asked for again (the first
	// time at once), so that new peers are found and gone ones reported
	// Lost. Every peer is reported again each time, so that the mesh
	// retries those it could not reach. Zero means DefaultDNSInterval
	// (5 s); a negative value asks once.
	Interval time.Duration

	// Timeout bounds one exchange with a server; a round (the SRV query
	// and any address look-ups, every server tried) is bounded by four
	// times it. Zero means DefaultDNSTimeout (2 s).
	Timeout time.Duration

	// Logger receives routine events at Debug. Nil means slog.Default().
	Logger *slog.Logger

	// resolvConf is the file read when Server is empty; empty means
	// /etc/resolv.conf. For tests.
	resolvConf string
}

var _ Discoverer = (*DNS)(nil)

// dnsSettings are DNS's fields, checked, with defaults filled in.
type dnsSettings struct {
	name     string
	server   string // host:port, or empty for resolv.conf
	conf     string
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger
}

func (d *DNS) settings() (dnsSettings, error) {
	s := dnsSettings{
		name:     d.Name,
		interval: d.Interval,
		timeout:  d.Timeout,
		conf:     d.resolvConf,
		log:      d.Logger,
	}
	if err := checkDNSName(d.Name); err != nil {
		return s, err
	}
	if d.Server != "" {
		server, err := parseDNSServer(d.Server)
		if err != nil {
			return s, err
		}
		s.server = server
		s.name = dns.Fqdn(s.name)
	}
	if s.interval == 0 {
		s.interval = DefaultDNSInterval
	}
	if s.timeout <= 0 {
		s.timeout = DefaultDNSTimeout
	}
	if s.conf == "" {
		s.conf = "/etc/resolv.conf"
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

func checkDNSName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrBadName)
	}
	if name == "." {
		return fmt.Errorf("%w %q: the root", ErrBadName, name)
	}
	if _, ok := dns.IsDomainName(name); !ok || strings.ContainsAny(name, " \t\r\n\\") {
		return fmt.Errorf("%w %q", ErrBadName, name)
	}
	return nil
}

// parseDNSServer returns server, an IP address with an optional port, as
// host:port.
func parseDNSServer(server string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w %q: %s", ErrBadServer, server, why)
	}
	var ap netip.AddrPort
	if a, err := netip.ParseAddrPort(server); err == nil {
		if a.Port() == 0 {
			return bad("port 0")
		}
		ap = a
	} else {
		host := server
		if inner, ok := strings.CutPrefix(server, "["); ok {
			if host, ok = strings.CutSuffix(inner, "]"); !ok {
				return bad("unbalanced brackets")
			}
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return bad("want an IP address with an optional port, such as 127.0.0.1:8600")
		}
		ap = netip.AddrPortFrom(ip, 53)
	}
	if ip := ap.Addr(); ip.IsUnspecified() || ip.IsMulticast() {
		return bad("not a unicast address")
	}
	return ap.String(), nil
}

// dnsTarget is one SRV target of a round.
type dnsTarget struct {
	key   string // "target.:port", lower case
	owner string // the target, lower case, fully qualified
	port  uint16
	prio  uint16
	wt    uint16
	peer  Peer
	err   error // its addresses could not be looked up (transient)
}

// Run asks for Name's SRV records at once and then every Interval, and
// reports the peers they name, until ctx is done; it then returns nil. A
// failed round is reported as an Event with Err (wrapping ErrLookup) and
// changes nothing: peers are reported Lost only when an answer no longer
// names them. Run returns at once an error wrapping ErrBadName or
// ErrBadServer when DNS is not usable. See Discoverer for how report is
// called.
func (d *DNS) Run(ctx context.Context, self Self, report func(Event)) error {
	set, err := d.settings()
	if err != nil {
		return err
	}
	var ticker <-chan time.Time
	if set.interval > 0 {
		t := time.NewTicker(set.interval)
		defer t.Stop()
		ticker = t.C
	}
	r := &dnsResolver{set: set}
	var known []dnsTarget // reported Found in the last good round
	for {
		if ctx.Err() != nil {
			return nil
		}
		targets, err := r.round(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			set.log.Debug("dns: look-up failed", "name", set.name, "err", err)
			report(Event{Source: "dns", Err: err})
		default:
			known = reportRound(known, targets, self, report)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker:
		}
	}
}

// reportRound reports what changed from known to targets, and every
// target again as Found; it returns the targets now known.
func reportRound(known, targets []dnsTarget, self Self, report func(Event)) []dnsTarget {
	var next []dnsTarget
	for _, t := range targets {
		if t.err != nil {
			report(Event{Source: "dns", Err: t.err})
			// Keep what the last good answer said about it.
			if i := slices.IndexFunc(known, func(k dnsTarget) bool { return k.key == t.key }); i >= 0 {
				next = append(next, known[i])
			}
			continue
		}
		if len(t.peer.Addrs) == 0 || isSelf(t.peer, self) {
			continue
		}
		next = append(next, t)
	}
	for _, k := range known {
		i := slices.IndexFunc(next, func(n dnsTarget) bool { return n.key == k.key })
		if i < 0 || next[i].peer.ID != k.peer.ID {
			report(Event{Kind: Lost, Peer: clonePeer(k.peer), Source: "dns"})
		}
	}
	for _, t := range next {
		report(Event{Kind: Found, Peer: clonePeer(t.peer), Source: "dns"})
	}
	return next
}

func clonePeer(p Peer) Peer { return Peer{ID: p.ID, Addrs: slices.Clone(p.Addrs)} }

func isSelf(p Peer, self Self) bool {
	if p.ID != "" && p.ID == self.ID {
		return true
	}
	return slices.ContainsFunc(p.Addrs, func(a netip.AddrPort) bool { return slices.Contains(self.Addrs, a) })
}
