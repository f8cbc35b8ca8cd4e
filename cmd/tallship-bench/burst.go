package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// burstQueries is the size of the query burst (the spec's "1000-query
// burst ≤ 10 answers per record").
const burstQueries = 1000

// measureBurst sends a burst of burstQueries browse queries of the base
// type _tallship._tcp, as fast as the socket takes them, on loopback (the
// bench's private namespace), to a mesh of n nodes, and reports the most
// answers any one record (a node's PTR) drew within 3 s: once as QM
// queries from port 5353 (answered by multicast, heard on the group), once
// as a legacy querier's from an ephemeral port (answered by unicast to it).
func measureBurst(qm, legacy *row, n int) {
	group := &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	lo, err := loopbackInterface()
	if err != nil {
		qm.err, legacy.err = err, err
		return
	}
	// A compliant querier: its socket is on port 5353, in the group.
	mc, err := net.ListenMulticastUDP("udp4", lo, group)
	if err != nil {
		qm.err = fmt.Errorf("listen on 5353: %w", err)
	} else {
		qm.samples = append(qm.samples, burst(mc, group, n, qm))
		mc.Close()
	}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		legacy.err = err
		return
	}
	defer uc.Close()
	legacy.samples = append(legacy.samples, burst(uc, group, n, legacy))
}

// burst sends the queries from c and counts the answers c receives, per
// record; it returns the largest count. r.note gets the detail.
func burst(c *net.UDPConn, group *net.UDPAddr, n int, r *row) float64 {
	q := &dns.Msg{Question: []dns.Question{{Name: "_tallship._tcp.local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET}}}
	b, err := q.Pack()
	if err != nil {
		r.err = err
		return 0
	}
	// The queries loop back to this socket too: room for all of them and
	// the answers, so that none of the answers is dropped unread.
	if err := c.SetReadBuffer(8 << 20); err != nil {
		r.err = err
		return 0
	}
	counts := map[string]int{}
	done := make(chan int)
	end := time.Now().Add(3 * time.Second)
	go func() {
		packets := 0
		buf := make([]byte, 9000)
		c.SetReadDeadline(end)
		for {
			k, _, err := c.ReadFromUDP(buf)
			if err != nil {
				done <- packets
				return
			}
			var m dns.Msg
			if m.Unpack(buf[:k]) != nil || !m.Response {
				continue
			}
			packets++
			for _, rr := range m.Answer {
				if ptr, ok := rr.(*dns.PTR); ok && dns.CanonicalName(ptr.Hdr.Name) == "_tallship._tcp.local." {
					counts[ptr.Ptr]++
				}
			}
		}
	}()
	began := time.Now()
	for range burstQueries { // bounded: 1000 packets on loopback, then stop
		if _, err := c.WriteToUDP(b, group); err != nil {
			r.err = fmt.Errorf("send query: %w", err)
			break
		}
	}
	took := time.Since(began)
	packets := <-done
	most := 0
	for _, k := range counts {
		most = max(most, k)
	}
	if len(counts) < n && r.err == nil {
		r.err = fmt.Errorf("answers named %d of the %d nodes", len(counts), n)
	}
	r.note = fmt.Sprintf("%d queries in %v; %d answer packets in 3 s for %d records", burstQueries, took.Round(time.Millisecond), packets, len(counts))
	return float64(most)
}

// loopbackInterface is the loopback interface, where the bench's nodes run.
func loopbackInterface() (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 {
			return &ifi, nil
		}
	}
	return nil, errors.New("no loopback interface")
}
