package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
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
// IPv6 addresses, asked for (A and AAAA) target by target; addresses no
// one can dial (unspecified, multicast, IPv6 link-local, which would need
// a zone) are left out. Targets are reported in the order of their
// priority (lowest first) and weight (highest first), then by name and
// port. A target that is no longer in a later answer (or whose name no
// longer exists) is reported Lost; a failed look-up changes nothing. A
// target with one of this node's own addresses (Self.Addrs) is this node
// and is never reported.
//
// A peer's ID is empty (the handshake tells it), unless the SRV target has
// a TXT record whose text is "i=<id>", the key that tallship's mDNS
// records use; it is ignored when the target has several ports (several
// nodes on one host). net.Resolver joins the strings of one TXT record
// into one text, so the id needs a record of its own, the way Consul
// publishes each key of a node's metadata.
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
// The look-ups go through Go's own resolver (a net.Resolver with
// PreferGo), which reads /etc/resolv.conf (again when it changes). With
// Server empty they go as the system resolver's would: to its servers in
// turn, with a name without a final dot completed with its search list,
// and a target's addresses taken from /etc/hosts when it lists the name.
// With Server set, every question goes to that server, and Name is taken
// as fully qualified. Questions go over UDP, and again over TCP when an
// answer comes truncated. A round asks one SRV question and then, for each
// target, A and AAAA and (for a target with one port) TXT; what the SRV
// answer's additional section holds is not read.
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

	// Timeout bounds one exchange with a server, in place of the timeout
	// of /etc/resolv.conf; a round (the SRV look-up and the targets',
	// every server and retry included) is bounded by four times it. Zero
	// means DefaultDNSTimeout (2 s).
	Timeout time.Duration

	// Logger receives routine events at Debug. Nil means slog.Default().
	Logger *slog.Logger

	// dial, when set, connects to a DNS server in place of a net.Dialer.
	// For tests, which must never ask the servers of /etc/resolv.conf.
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

var _ Discoverer = (*DNS)(nil)

// dnsSettings are DNS's fields, checked, with defaults filled in.
type dnsSettings struct {
	name     string
	server   string // host:port, or empty for resolv.conf's
	interval time.Duration
	timeout  time.Duration
	dial     func(ctx context.Context, network, address string) (net.Conn, error)
	log      *slog.Logger
}

func (d *DNS) settings() (dnsSettings, error) {
	s := dnsSettings{
		name:     d.Name,
		interval: d.Interval,
		timeout:  d.Timeout,
		dial:     d.dial,
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
		if !strings.HasSuffix(s.name, ".") {
			s.name += "."
		}
	}
	if s.interval == 0 {
		s.interval = DefaultDNSInterval
	}
	if s.timeout <= 0 {
		s.timeout = DefaultDNSTimeout
	}
	if s.dial == nil {
		s.dial = (&net.Dialer{}).DialContext
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

func checkDNSName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case name == ".":
		return fmt.Errorf("%w %q: the root", ErrBadName, name)
	case !validHostname(name):
		return fmt.Errorf("%w %q: want labels of letters, digits, hyphens and underscores", ErrBadName, name)
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

// resolver returns the net.Resolver of one Run: Go's own, whose every
// connection goes through dialServer.
func (s dnsSettings) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: s.dialServer}
}

// aLongTimeAgo is a deadline that makes pending I/O fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// dialServer connects net.Resolver to a DNS server for one exchange: to
// Server, whatever address it asks for, else to the server of
// /etc/resolv.conf it names. net.Resolver would give the exchange the
// timeout of resolv.conf (5 s by default) and let it run on when ctx is
// cancelled; dialServer ends it after Timeout, and at once when ctx is
// done.
func (s dnsSettings) dialServer(ctx context.Context, network, address string) (net.Conn, error) {
	if s.server != "" {
		address = s.server
	}
	c, err := s.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	// net.Resolver sets c's deadline as soon as dial returns. Should the
	// timer fire before that, the exchange ends at net.Resolver's own
	// deadline instead, bounded by the round's.
	timer := time.AfterFunc(s.timeout, func() { c.SetDeadline(aLongTimeAgo) })
	// ctx ends with the exchange, if not before: then c is closed already.
	context.AfterFunc(ctx, func() {
		timer.Stop()
		c.Close()
	})
	return c, nil
}

// dnsTarget is one SRV target of a round.
type dnsTarget struct {
	key  string // "host:port"
	host string // the target, lower case, fully qualified
	port uint16
	prio uint16
	wt   uint16
	peer Peer
	err  error // its look-ups failed (transient)
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
	r := set.resolver()
	var known []dnsTarget // reported Found in the last good round
	for {
		if ctx.Err() != nil {
			return nil
		}
		targets, err := set.round(ctx, r)
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

// round asks for the SRV records of the name and then, target by target,
// for the addresses and the id behind them. The error, when not nil,
// wraps ErrLookup; a target whose look-ups failed has its own err.
func (s dnsSettings) round(ctx context.Context, r *net.Resolver) ([]dnsTarget, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
	defer cancel()
	_, srvs, err := r.LookupSRV(ctx, "", "", s.name)
	switch {
	case isNotFound(err):
		// No such name, or no SRV records: no peers.
		s.log.Debug("dns: no SRV records", "name", s.name)
		return nil, nil
	case err != nil && len(srvs) == 0:
		return nil, s.lookupErr(ctx, "SRV", s.name, err)
	case err != nil:
		// LookupSRV left out the records whose target is not a domain
		// name; the others are good.
		s.log.Debug("dns: SRV records left out", "name", s.name, "err", err)
	}
	targets := srvTargets(srvs)
	for i := range targets {
		t := &targets[i]
		t.err = s.lookupTarget(ctx, r, t, sharedHost(targets, t.host))
	}
	return targets, nil
}

// lookupTarget asks for t's addresses and, unless its host is shared
// with other targets, its id. The error wraps ErrLookup.
func (s dnsSettings) lookupTarget(ctx context.Context, r *net.Resolver, t *dnsTarget, shared bool) error {
	ips, err := r.LookupNetIP(ctx, "ip", t.host)
	if isNotFound(err) {
		return nil // the name is gone: no addresses, no peer
	}
	if err != nil {
		return s.lookupErr(ctx, "A/AAAA", t.host, err)
	}
	ips = slices.DeleteFunc(ips, func(ip netip.Addr) bool { return !dialable(ip) })
	t.peer.Addrs = withPort(ips, t.port)
	if len(t.peer.Addrs) == 0 || shared {
		return nil
	}
	txts, err := r.LookupTXT(ctx, t.host)
	if err != nil && !isNotFound(err) {
		return s.lookupErr(ctx, "TXT", t.host, err)
	}
	t.peer.ID = txtID(txts)
	return nil
}

// isNotFound reports whether err says that the name, or a record of the
// type asked for, does not exist.
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// lookupErr says which question (qtype, name) failed, at which server, and
// why. It wraps ErrLookup and the *net.DNSError of net.Resolver (a
// net.Error), with the server dialServer really asked and, for a timeout,
// how long it waited.
func (s dnsSettings) lookupErr(ctx context.Context, qtype, name string, err error) error {
	var de *net.DNSError
	if !errors.As(err, &de) {
		return fmt.Errorf("%w: %s %s: %w", ErrLookup, qtype, name, err)
	}
	e := *de
	if e.Name == "" {
		e.Name = name
	}
	if s.server != "" {
		e.Server = s.server // not the server of resolv.conf it names
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		e.Err, e.IsTimeout = fmt.Sprintf("no answer within %v, the bound of a round", 4*s.timeout), true
	case e.IsTimeout:
		e.Err = fmt.Sprintf("no answer within %v", s.timeout)
	}
	return fmt.Errorf("%w: %s: %w", ErrLookup, qtype, &e)
}

// srvTargets returns the targets of srvs, one per host and port, by
// priority, then weight (highest first), then host and port: net.Resolver
// shuffles the records of one priority by weight, and each round reports
// the same peers in the same order.
func srvTargets(srvs []*net.SRV) []dnsTarget {
	var all []dnsTarget
	for _, srv := range srvs {
		host := strings.ToLower(srv.Target)
		if srv.Port == 0 || host == "." || host == "" {
			continue
		}
		if !strings.HasSuffix(host, ".") {
			host += "."
		}
		all = append(all, dnsTarget{
			key:  fmt.Sprintf("%s:%d", host, srv.Port),
			host: host,
			port: srv.Port,
			prio: srv.Priority,
			wt:   srv.Weight,
		})
	}
	slices.SortFunc(all, func(a, b dnsTarget) int {
		return cmp.Or(cmp.Compare(a.prio, b.prio), cmp.Compare(b.wt, a.wt),
			strings.Compare(a.host, b.host), cmp.Compare(a.port, b.port))
	})
	// A host and port listed twice keeps its best place.
	var out []dnsTarget
	for _, t := range all {
		if !slices.ContainsFunc(out, func(o dnsTarget) bool { return o.key == t.key }) {
			out = append(out, t)
		}
	}
	return out
}

// dialable reports whether a peer can be dialed at ip: not unspecified,
// multicast, or IPv6 link-local (which would need a zone).
func dialable(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsUnspecified() && !ip.IsMulticast() && !(ip.Is6() && ip.IsLinkLocalUnicast())
}

// txtID returns the id that the texts of TXT records give ("i=<id>"), or
// "" when none, an empty one or several different ones.
func txtID(txts []string) string {
	id := ""
	for _, s := range txts {
		v, ok := strings.CutPrefix(s, "i=")
		if !ok {
			continue
		}
		if v == "" || id != "" && id != v {
			return ""
		}
		id = v
	}
	return id
}

// sharedHost reports whether several targets have host.
func sharedHost(targets []dnsTarget, host string) bool {
	n := 0
	for _, t := range targets {
		if t.host == host {
			n++
		}
	}
	return n > 1
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
