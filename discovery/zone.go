package discovery

import (
	"sync/atomic"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
)

// zone answers the questions hashicorp/mdns's Server passes it, from the
// records of one interface. It is safe for concurrent use; after close it
// answers nothing, so that no answer can follow our goodbye.
type zone struct {
	rs     *recordSet
	closed atomic.Bool
	// answers counts the questions answered (one unicast packet each).
	answers atomic.Int64
}

var _ mdns.Zone = (*zone)(nil)

func newZone(rs *recordSet) *zone { return &zone{rs: rs} }

func (z *zone) close() { z.closed.Store(true) }

// Records implements mdns.Zone. A browse (PTR or ANY for the cluster
// subtype) and a refresh (ANY for the instance) get every record, so that
// one answer is enough to dial.
func (z *zone) Records(q dns.Question) []dns.RR {
	if z.closed.Load() {
		return nil
	}
	if class := q.Qclass &^ cacheFlush; class != dns.ClassINET && class != dns.ClassANY {
		return nil
	}
	rs := z.rs
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
	if len(out) > 0 {
		z.answers.Add(1)
	}
	return out
}
