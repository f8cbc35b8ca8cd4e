package discovery

import (
	"fmt"
	"net/netip"

	"github.com/miekg/dns"
)

const (
	// maxPacketSize bounds every packet MDNS sends.
	maxPacketSize = 1400
	// maxReadSize is the largest mDNS packet read (RFC 6762 §17).
	maxReadSize = 9000
	// Bounds on what one received packet may make us do.
	maxRecordsPerPacket   = 64
	maxInstancesPerPacket = 16
	maxAddrsPerInstance   = 16
	// cacheFlush is the top bit of the class of a unique record (RFC 6762 §10.2).
	cacheFlush = 1 << 15
)

// recordSet is everything one node publishes on one interface. It is
// immutable once built and shared by the responder's goroutines.
type recordSet struct {
	names names
	ptr   dns.RR // under the cluster subtype
	base  dns.RR // under the base type, _tallship._tcp (RFC 6763 §7.1)
	// baseAnnounced: the announcement holds base too (it is left out,
	// before any address, when the announcement would not fit a packet;
	// a browse of the base type still gets it).
	baseAnnounced bool
	enum          dns.RR // _services._dns-sd._udp → _tallship._tcp (§9); answered, not announced
	srv           dns.RR
	txt           dns.RR
	addrs         []dns.RR // A and AAAA
}

// newRecordSet builds the records of a node with the given TTL, trimming
// addresses (the last first) until a full answer fits maxPacketSize.
func newRecordSet(n names, txt [][]byte, port uint16, addrs []netip.Addr, ttl uint32) (*recordSet, error) {
	hdr := func(name string, t uint16, unique bool) dns.RR_Header {
		class := uint16(dns.ClassINET)
		if unique {
			class |= cacheFlush
		}
		return dns.RR_Header{Name: name, Rrtype: t, Class: class, Ttl: ttl}
	}
	strs := make([]string, len(txt))
	for i, s := range txt {
		strs[i] = escapeTXT(s)
	}
	rs := &recordSet{
		names: n,
		ptr:   &dns.PTR{Hdr: hdr(n.service, dns.TypePTR, false), Ptr: n.instance},
		base:  &dns.PTR{Hdr: hdr(serviceType, dns.TypePTR, false), Ptr: n.instance},
		enum:  &dns.PTR{Hdr: hdr(servicesName, dns.TypePTR, false), Ptr: serviceType},
		srv:   &dns.SRV{Hdr: hdr(n.instance, dns.TypeSRV, true), Port: port, Target: n.host},
		txt:   &dns.TXT{Hdr: hdr(n.instance, dns.TypeTXT, true), Txt: strs},

		baseAnnounced: true,
	}
	if len(addrs) > maxAddrsPerInstance {
		addrs = addrs[:maxAddrsPerInstance]
	}
	for _, a := range addrs {
		if a.Is4() {
			rs.addrs = append(rs.addrs, &dns.A{Hdr: hdr(n.host, dns.TypeA, true), A: a.AsSlice()})
		} else {
			rs.addrs = append(rs.addrs, &dns.AAAA{Hdr: hdr(n.host, dns.TypeAAAA, true), AAAA: a.AsSlice()})
		}
	}
	for {
		b, err := rs.announcement().Pack()
		if err != nil {
			return nil, fmt.Errorf("discovery: pack mDNS records: %w", err)
		}
		if len(b) <= maxPacketSize {
			return rs, nil
		}
		if rs.baseAnnounced {
			rs.baseAnnounced = false
			continue
		}
		if len(rs.addrs) == 0 {
			return nil, fmt.Errorf("discovery: mDNS records take %d bytes, over %d", len(b), maxPacketSize)
		}
		rs.addrs = rs.addrs[:len(rs.addrs)-1]
	}
}

// all returns fresh copies of every record a node announces: its PTRs
// first, then SRV, TXT, and its addresses.
func (rs *recordSet) all() []dns.RR {
	out := []dns.RR{dns.Copy(rs.ptr)}
	if rs.baseAnnounced {
		out = append(out, dns.Copy(rs.base))
	}
	return append(out, rs.instanceRecords()...)
}

// instanceRecords returns fresh copies of the records of the instance:
// SRV, TXT and the addresses, the additional records of a PTR answer.
func (rs *recordSet) instanceRecords() []dns.RR {
	out := []dns.RR{dns.Copy(rs.srv), dns.Copy(rs.txt)}
	return append(out, rs.addrRecords(dns.TypeANY)...)
}

// addrRecords returns fresh copies of the address records of type t (A,
// AAAA, or ANY for both).
func (rs *recordSet) addrRecords(t uint16) []dns.RR {
	var out []dns.RR
	for _, a := range rs.addrs {
		if t == dns.TypeANY || a.Header().Rrtype == t {
			out = append(out, dns.Copy(a))
		}
	}
	return out
}

// announcement is an unsolicited response carrying every record
// (RFC 6762 §8.3).
func (rs *recordSet) announcement() *dns.Msg {
	return &dns.Msg{
		MsgHdr:   dns.MsgHdr{Response: true, Authoritative: true},
		Compress: true,
		Answer:   rs.all(),
	}
}

// goodbye is an announcement with every TTL zero (RFC 6762 §10.1).
func (rs *recordSet) goodbye() *dns.Msg {
	m := rs.announcement()
	for _, rr := range m.Answer {
		rr.Header().Ttl = 0
	}
	return m
}

// browseQueries asks for the instances of a cluster (a PTR question for
// service, with the QU bit when unicast) and lists known, the answers the
// asker already has (RFC 6762 §7.1): as many as fit each packet, the
// packets but the last marked truncated (§7.2).
func browseQueries(service string, unicast bool, known []dns.RR) ([][]byte, error) {
	class := uint16(dns.ClassINET)
	if unicast {
		class |= qu
	}
	m := &dns.Msg{Compress: true, Question: []dns.Question{{Name: service, Qtype: dns.TypePTR, Qclass: class}}}
	var out [][]byte
	for {
		n := 0
		for n < len(known) {
			m.Answer = append(m.Answer, known[n])
			if m.Len() > maxPacketSize {
				m.Answer = m.Answer[:len(m.Answer)-1]
				break
			}
			n++
		}
		if n == 0 && len(known) > 0 {
			return nil, fmt.Errorf("discovery: a known answer does not fit an mDNS packet: %v", known[0])
		}
		known = known[n:]
		m.Truncated = len(known) > 0
		b, err := m.Pack()
		if err != nil {
			return nil, err
		}
		out = append(out, b)
		if !m.Truncated {
			return out, nil
		}
		m = &dns.Msg{Compress: true} // a continuation: known answers only
	}
}

// refreshQuery asks the owners of instances for their records: only they
// answer. It holds as many questions as fit maxPacketSize and returns the
// instances it could not hold.
func refreshQuery(instances []string) ([]byte, []string, error) {
	m := &dns.Msg{Compress: true}
	for i, name := range instances {
		m.Question = append(m.Question, dns.Question{Name: name, Qtype: dns.TypeANY, Qclass: dns.ClassINET})
		if m.Len() > maxPacketSize {
			m.Question = m.Question[:len(m.Question)-1]
			b, err := m.Pack()
			return b, instances[i:], err
		}
	}
	b, err := m.Pack()
	return b, nil, err
}

// sighting is one node as described by one received packet.
type sighting struct {
	instance string
	target   string // the SRV target, owner of the addresses
	txt      txtInfo
	port     uint16
	addrs    []netip.Addr
	ttl      uint32 // the least TTL of its PTR, SRV and TXT
	goodbye  bool
}

// parseResponse extracts the nodes of service from a response. It looks at
// a bounded number of records and skips instances whose records are
// incomplete or whose TXT does not decode; their errors are returned
// alongside the good sightings.
func parseResponse(m *dns.Msg, service string) ([]sighting, []error) {
	rrs := make([]dns.RR, 0, len(m.Answer)+len(m.Extra))
	rrs = append(rrs, m.Answer...)
	rrs = append(rrs, m.Extra...)
	if len(rrs) > maxRecordsPerPacket {
		rrs = rrs[:maxRecordsPerPacket]
	}
	var (
		out  []sighting
		errs []error
		seen = map[string]bool{}
	)
	for _, rr := range rrs {
		ptr, ok := rr.(*dns.PTR)
		if !ok || !sameName(ptr.Hdr.Name, service) || ptr.Hdr.Class&^cacheFlush != dns.ClassINET {
			continue
		}
		key := dns.CanonicalName(ptr.Ptr)
		if seen[key] {
			continue
		}
		seen[key] = true
		if len(seen) > maxInstancesPerPacket {
			break
		}
		s, err := parseInstance(rrs, ptr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	return out, errs
}

func parseInstance(rrs []dns.RR, ptr *dns.PTR) (sighting, error) {
	var (
		srv *dns.SRV
		txt *dns.TXT
	)
	for _, rr := range rrs {
		if !sameName(rr.Header().Name, ptr.Ptr) || rr.Header().Class&^cacheFlush != dns.ClassINET {
			continue
		}
		switch rr := rr.(type) {
		case *dns.SRV:
			if srv == nil {
				srv = rr
			}
		case *dns.TXT:
			if txt == nil {
				txt = rr
			}
		}
	}
	if srv == nil || txt == nil {
		return sighting{}, fmt.Errorf("discovery: mDNS instance %q without SRV or TXT", ptr.Ptr)
	}
	strs := make([][]byte, 0, len(txt.Txt))
	if len(txt.Txt) > maxTXTStrings {
		return sighting{}, fmt.Errorf("%w: %d strings", ErrBadTXT, len(txt.Txt))
	}
	for _, s := range txt.Txt {
		b, err := unescapeTXT(s)
		if err != nil {
			return sighting{}, err
		}
		strs = append(strs, b)
	}
	info, err := decodeTXT(strs)
	if err != nil {
		return sighting{}, err
	}
	s := sighting{
		instance: ptr.Ptr,
		target:   srv.Target,
		txt:      info,
		port:     srv.Port,
		ttl:      min(ptr.Hdr.Ttl, srv.Hdr.Ttl, txt.Hdr.Ttl),
	}
	s.goodbye = s.ttl == 0
	for _, rr := range rrs {
		if len(s.addrs) == maxAddrsPerInstance {
			break
		}
		if !sameName(rr.Header().Name, srv.Target) || rr.Header().Class&^cacheFlush != dns.ClassINET {
			continue
		}
		if a, ok := addrOf(rr); ok {
			s.addrs = append(s.addrs, a)
		}
	}
	return s, nil
}

// addrOf returns the address an A or AAAA record holds.
func addrOf(rr dns.RR) (netip.Addr, bool) {
	var ip []byte
	switch rr := rr.(type) {
	case *dns.A:
		ip = rr.A
	case *dns.AAAA:
		ip = rr.AAAA
	default:
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
