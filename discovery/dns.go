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

	"github.com/miekg/dns"
)

// Defaults of DNS.
const (
	DefaultDNSInterval = 5 * time.Second
	DefaultDNSTimeout  = 2 * time.Second
)

var (
	// ErrBadName is returned (wrapped) by DNS.Run when Name is empty or
	// not a domain name.
	ErrBadName = errors.New("discovery: bad DNS name")
	// ErrBadServer is returned (wrapped) by DNS.Run when Server is not an
	// IP address with an optional port.
	ErrBadServer = errors.New("discovery: bad DNS server address")
	// ErrLookup wraps what DNS reports as an Event's Err when a round of
	// look-ups fails: no server answered in time, a server failed
	// (SERVFAIL, REFUSED), /etc/resolv.conf cannot be read.
	ErrLookup = errors.New("discovery: DNS lookup failed")
)

// dnsUDPSize is the EDNS0 buffer size offered, and the largest UDP answer
// read. Larger answers come truncated and are asked again over TCP.
const dnsUDPSize = 4096

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

// dnsResolver asks the servers of one Run.
type dnsResolver struct {
	set dnsSettings
	// last is the server that answered last; it is asked first.
	last string
}

// round asks for the SRV records and the addresses behind them. The
// error, when not nil, wraps ErrLookup; a target whose addresses could
// not be asked for has its own err.
func (r *dnsResolver) round(ctx context.Context) ([]dnsTarget, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*r.set.timeout)
	defer cancel()
	servers, names, err := r.servers()
	if err != nil {
		return nil, err
	}
	var answer *dns.Msg
	for _, name := range names {
		m, err := r.query(ctx, servers, name, dns.TypeSRV)
		if err != nil {
			return nil, err
		}
		if hasType(m.Answer, dns.TypeSRV) {
			answer = m
			break
		}
	}
	if answer == nil {
		// No such name, or no SRV records: no peers.
		r.set.log.Debug("dns: no SRV records", "name", r.set.name)
		return nil, nil
	}
	targets := srvTargets(answer)
	addrs, txts := additional(answer)
	for i := range targets {
		t := &targets[i]
		as := addrs[t.owner]
		if len(as) == 0 {
			if as, err = r.lookupAddrs(ctx, servers, t.owner); err != nil {
				t.err = err
				continue
			}
		}
		t.peer.Addrs = withPort(as, t.port)
		if id := txtID(txts[t.owner]); id != "" && !sharedHost(targets, t.owner) {
			t.peer.ID = id
		}
	}
	return targets, nil
}

// servers returns the servers to ask, the last that answered first, and
// the names to try in turn.
func (r *dnsResolver) servers() (servers, names []string, err error) {
	if r.set.server != "" {
		return []string{r.set.server}, []string{r.set.name}, nil
	}
	conf, err := dns.ClientConfigFromFile(r.set.conf)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrLookup, err)
	}
	for _, s := range conf.Servers {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.IsUnspecified() {
			continue
		}
		servers = append(servers, net.JoinHostPort(s, conf.Port))
	}
	if len(servers) == 0 {
		return nil, nil, fmt.Errorf("%w: no nameserver in %s", ErrLookup, r.set.conf)
	}
	if i := slices.Index(servers, r.last); i > 0 {
		servers = append(append([]string{r.last}, servers[:i]...), servers[i+1:]...)
	}
	return servers, conf.NameList(r.set.name), nil
}

// query asks the servers in turn for name's records of type qtype, until
// one answers with NOERROR or NXDOMAIN. The error wraps ErrLookup.
func (r *dnsResolver) query(ctx context.Context, servers []string, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(dnsUDPSize, false)
	var errs []error
	for _, server := range servers {
		m, err := r.exchange(ctx, "udp", server, q)
		if err == nil && m.Truncated {
			m, err = r.exchange(ctx, "tcp", server, q)
		}
		if err == nil {
			if m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError {
				r.last = server
				return m, nil
			}
			err = fmt.Errorf("%s", dns.RcodeToString[m.Rcode])
		}
		r.set.log.Debug("dns: server failed", "server", server, "name", name, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: %s %s: %w", ErrLookup, name, dns.TypeToString[qtype], errors.Join(errs...))
}

// aLongTimeAgo is a deadline that makes pending I/O fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// exchange sends q to server over network and reads its answer, within
// Timeout and until ctx is done.
func (r *dnsResolver) exchange(ctx context.Context, network, server string, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.set.timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	co := &dns.Conn{Conn: c, UDPSize: dnsUDPSize}
	defer co.Close()
	deadline, _ := ctx.Deadline()
	co.SetDeadline(deadline)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		co.SetDeadline(aLongTimeAgo)
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
	if err := co.WriteMsg(q); err != nil {
		return nil, r.exchangeErr(ctx, err)
	}
	for {
		m, err := co.ReadMsg()
		if err != nil {
			return nil, r.exchangeErr(ctx, err)
		}
		// Over UDP, an answer to an earlier query may come late: skip it.
		if m.Id != q.Id && network == "udp" {
			continue
		}
		if m.Id != q.Id || !m.Response || len(m.Question) != 1 ||
			!strings.EqualFold(m.Question[0].Name, q.Question[0].Name) || m.Question[0].Qtype != q.Question[0].Qtype {
			return nil, errors.New("answer does not match the question")
		}
		return m, nil
	}
}

// exchangeErr names a timeout as such; it still satisfies net.Error.
func (r *dnsResolver) exchangeErr(ctx context.Context, err error) error {
	var ne net.Error
	if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no answer within %v: %w", r.set.timeout, err)
	}
	return err
}

// lookupAddrs asks for host's A and AAAA records. It fails only when both
// fail.
func (r *dnsResolver) lookupAddrs(ctx context.Context, servers []string, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := r.query(ctx, servers, host, qtype)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range m.Answer {
			if ip, ok := rrAddr(rr); ok && !slices.Contains(out, ip) {
				out = append(out, ip)
			}
		}
	}
	if len(errs) == 2 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func hasType(rrs []dns.RR, t uint16) bool {
	return slices.ContainsFunc(rrs, func(rr dns.RR) bool { return rr.Header().Rrtype == t })
}

// srvTargets returns the answer's SRV targets, one per target and port,
// by priority and then weight (highest first).
func srvTargets(m *dns.Msg) []dnsTarget {
	var out []dnsTarget
	for _, rr := range m.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok || srv.Port == 0 || srv.Target == "." || srv.Target == "" {
			continue
		}
		owner := strings.ToLower(dns.Fqdn(srv.Target))
		key := fmt.Sprintf("%s:%d", owner, srv.Port)
		if slices.ContainsFunc(out, func(t dnsTarget) bool { return t.key == key }) {
			continue
		}
		out = append(out, dnsTarget{
			key:   key,
			owner: owner,
			port:  srv.Port,
			prio:  srv.Priority,
			wt:    srv.Weight,
		})
	}
	slices.SortStableFunc(out, func(a, b dnsTarget) int {
		return cmp.Or(cmp.Compare(a.prio, b.prio), cmp.Compare(b.wt, a.wt))
	})
	return out
}

// additional returns the addresses and TXT strings of the additional
// section, by lower-case owner name.
func additional(m *dns.Msg) (map[string][]netip.Addr, map[string][]string) {
	addrs := map[string][]netip.Addr{}
	txts := map[string][]string{}
	for _, rr := range m.Extra {
		owner := strings.ToLower(rr.Header().Name)
		if ip, ok := rrAddr(rr); ok {
			if !slices.Contains(addrs[owner], ip) {
				addrs[owner] = append(addrs[owner], ip)
			}
		} else if txt, ok := rr.(*dns.TXT); ok {
			txts[owner] = append(txts[owner], txt.Txt...)
		}
	}
	return addrs, txts
}

// rrAddr returns the address of an A or AAAA record, if it is one a peer
// can be dialed at (not unspecified, multicast, or IPv6 link-local, which
// would need a zone).
func rrAddr(rr dns.RR) (netip.Addr, bool) {
	var ip netip.Addr
	var ok bool
	switch rr := rr.(type) {
	case *dns.A:
		ip, ok = netip.AddrFromSlice(rr.A.To4())
	case *dns.AAAA:
		ip, ok = netip.AddrFromSlice(rr.AAAA.To16())
	}
	if !ok {
		return netip.Addr{}, false
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() && ip.Is6() {
		return netip.Addr{}, false
	}
	return ip, true
}

// withPort returns the addresses with port, IPv4 first.
func withPort(ips []netip.Addr, port uint16) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip, port))
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

// txtID returns the id that TXT strings give ("i=<id>", as miekg/dns
// escapes them), or "" when none, a malformed one or several different
// ones.
func txtID(strs []string) string {
	id := ""
	for _, s := range strs {
		v, ok := strings.CutPrefix(s, "i=")
		if !ok {
			continue
		}
		b, err := unescapeTXT(v)
		if err != nil || len(b) == 0 || id != "" && id != string(b) {
			return ""
		}
		id = string(b)
	}
	return id
}

// sharedHost reports whether several targets have owner as host.
func sharedHost(targets []dnsTarget, owner string) bool {
	n := 0
	for _, t := range targets {
		if t.owner == owner {
			n++
		}
	}
	return n > 1
}
