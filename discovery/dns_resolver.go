package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dnsUDPSize is the EDNS0 buffer size offered, and the largest UDP answer
// read. Larger answers come truncated and are asked again over TCP.
const dnsUDPSize = 4096

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
