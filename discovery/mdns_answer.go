package discovery

import (
	"net/netip"

	"github.com/miekg/dns"
)

// qu is the top bit of a question's class: a unicast response is asked
// for (RFC 6762 §5.4). It is the same bit as cacheFlush in a record.
const qu = cacheFlush

// answer answers a query that arrived on one of our interfaces, from that
// interface's records only: a node never answers on an interface it was
// not told to use, nor with the records of another. Questions that ask for
// a unicast response (QU) are answered with the query's id, the others
// with id 0 (RFC 6762 §18.1); both answers go by unicast to the querier's
// address and port. Truncated queries (known answers to follow) and
// queries on an interface that does not run the query's IP version are
// ignored.
func (e *engine) answer(q *dns.Msg, p inPacket) {
	if q.Truncated || len(q.Question) == 0 {
		return
	}
	to := netip.AddrPortFrom(p.src.Addr().Unmap(), p.src.Port())
	ifc := e.queryIface(p.ifindex, to.Addr())
	if ifc == nil || !ifc.runs(to.Addr().Is6()) {
		return
	}
	var multi, uni []dns.RR
	for _, question := range q.Question {
		if question.Qclass&qu != 0 {
			uni = appendNew(uni, ifc.rs.answers(question))
		} else {
			multi = appendNew(multi, ifc.rs.answers(question))
		}
	}
	for _, a := range []struct {
		id  uint16
		rrs []dns.RR
	}{{0, multi}, {q.Id, uni}} {
		if len(a.rrs) == 0 {
			continue
		}
		m := &dns.Msg{
			MsgHdr:   dns.MsgHdr{Id: a.id, Response: true, Authoritative: true},
			Compress: true,
			Answer:   a.rrs,
		}
		b, err := m.Pack()
		if err != nil {
			e.log.Debug("mdns: cannot pack answer", "iface", ifc.name, "err", err)
			continue
		}
		if err := e.out.send(outPacket{kind: sendAnswer, iface: ifc, v6: to.Addr().Is6(), to: to, data: b}); err != nil {
			e.log.Debug("mdns: answer failed", "iface", ifc.name, "addr", to, "err", err)
		}
	}
}

// queryIface returns the interface a query belongs to: the one it arrived
// on, when MDNS runs there. Where the platform does not tell the arrival
// interface (ifindex 0) and MDNS runs on several, it is the one whose
// subnet holds the querier's address.
func (e *engine) queryIface(ifindex int, src netip.Addr) *iface {
	if ifindex != 0 {
		for _, ifc := range e.ifaces {
			if ifc.index == ifindex {
				return ifc
			}
		}
		return nil
	}
	src = src.WithZone("")
	for _, ifc := range e.ifaces {
		for _, p := range ifc.prefixes {
			if !ifc.loopback && p.Contains(src) {
				return ifc
			}
		}
	}
	return nil
}

// runs reports whether mDNS runs over IPv6 (v6) or IPv4 on ifc.
func (ifc *iface) runs(v6 bool) bool { return (v6 && ifc.v6) || (!v6 && ifc.v4) }

// appendNew appends the records of rrs that out does not hold yet, so that
// an answer to several questions holds each record once and, its records
// being some of an announcement's, fits maxPacketSize as that does.
func appendNew(out, rrs []dns.RR) []dns.RR {
	for _, rr := range rrs {
		dup := false
		for _, have := range out {
			dup = dup || dns.IsDuplicate(have, rr)
		}
		if !dup {
			out = append(out, rr)
		}
	}
	return out
}

// answers returns the records that answer one question. A browse (PTR or
// ANY for the cluster subtype) and a refresh (ANY for the instance) get
// every record, so that one answer is enough to dial.
func (rs *recordSet) answers(q dns.Question) []dns.RR {
	if class := q.Qclass &^ qu; class != dns.ClassINET && class != dns.ClassANY {
		return nil
	}
	var out []dns.RR
	switch {
	case sameName(q.Name, rs.names.service):
		if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
			out = rs.all()
		}
	case sameName(q.Name, rs.names.instance):
		switch q.Qtype {
		case dns.TypeSRV:
			out = append([]dns.RR{dns.Copy(rs.srv)}, rs.all()[3:]...)
		case dns.TypeTXT:
			out = []dns.RR{dns.Copy(rs.txt)}
		case dns.TypeANY:
			out = rs.all()
		}
	case sameName(q.Name, rs.names.host):
		for _, rr := range rs.all()[3:] {
			if q.Qtype == dns.TypeANY || q.Qtype == rr.Header().Rrtype {
				out = append(out, rr)
			}
		}
	}
	return out
}
