package discovery

import (
	"encoding/binary"
	"errors"

	"github.com/miekg/dns"
)

// errShortPacket: a packet that ends inside its header or a question.
var errShortPacket = errors.New("discovery: short mDNS packet")

// unpackTolerant decodes an mDNS packet record by record. A record whose
// data miekg/dns cannot decode (python-zeroconf's NSEC with a bitmap it
// refuses, a type it does not know the shape of) is skipped, and the rest
// of the packet is used: one bad record must not hide the valid service
// beside it. It returns the message and how many records it skipped; an
// error only when not even the header and questions decode, or a record's
// own header is cut short (then the records before it are kept).
func unpackTolerant(b []byte) (*dns.Msg, int, error) {
	const hdrLen = 12
	if len(b) < hdrLen {
		return nil, 0, errShortPacket
	}
	m := new(dns.Msg)
	if err := m.Unpack(b[:hdrLen]); err != nil {
		return nil, 0, err
	}
	counts := [4]int{}
	for i := range counts {
		counts[i] = int(binary.BigEndian.Uint16(b[4+2*i:]))
	}
	off := hdrLen
	for range counts[0] {
		name, next, err := dns.UnpackDomainName(b, off)
		if err != nil || next+4 > len(b) {
			return nil, 0, errShortPacket
		}
		m.Question = append(m.Question, dns.Question{
			Name:   name,
			Qtype:  binary.BigEndian.Uint16(b[next:]),
			Qclass: binary.BigEndian.Uint16(b[next+2:]),
		})
		off = next + 4
	}
	skipped := 0
	sections := []*[]dns.RR{&m.Answer, &m.Ns, &m.Extra}
	for i, section := range sections {
		for range counts[i+1] {
			if off >= len(b) {
				return m, skipped, nil // the counts promised more than came
			}
			rr, next, err := dns.UnpackRR(b, off)
			if next <= off || next > len(b) {
				return m, skipped, nil // the record's header is cut short
			}
			off = next
			if err != nil || rr == nil {
				skipped++
				continue
			}
			*section = append(*section, rr)
		}
	}
	return m, skipped, nil
}
