package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

var (
	group4 = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	group6 = &net.UDPAddr{IP: net.ParseIP("ff02::fb"), Port: 5353}
)

// sockets are MDNS's sockets, one per IP version, on port 5353
// (SO_REUSEADDR, shared with every other responder on the host: avahi,
// Bonjour, other nodes), joined to the group on the interfaces MDNS runs
// on only. Each hears announcements, queries and answers, and sends
// announcements, goodbyes, queries and answers from port 5353, as RFC
// 6762 asks of a fully compliant querier and responder.
//
// Sharing the port is safe because what matters goes by multicast, which
// the kernel hands to every socket of the group: this node answers QM
// questions (what avahi and tallship ask) by multicast, and asks them
// itself after its first query. A unicast packet to port 5353 reaches
// only one of the sockets sharing it (on Linux, the last bound), so
// unicast goes only where RFC 6762 asks for it: to legacy queriers (whose
// own port is not 5353) and to QU questions, whose askers re-ask by QM
// when no answer comes.
//
// The exception is this node's first query, a one-shot query (§5.1) from
// an ephemeral port of its own (query): its unicast answers reach this
// node whatever else shares port 5353 here, so a node started beside
// others on one host learns of them all at once.
type sockets struct {
	listen [2]*udpConn // [0] IPv4, [1] IPv6
	query  [2]*udpConn
	counts *packetCounts
}

// udpConn is one UDP socket that reports the interface packets arrive on.
type udpConn struct {
	c  *net.UDPConn
	p4 *ipv4.PacketConn // exactly one of p4, p6
	p6 *ipv6.PacketConn
	// single is the one interface MDNS runs on, for platforms that do not
	// report arrival interfaces.
	single int
	counts *packetCounts
}

// openSockets opens the sockets of each IP version some interface runs,
// and clears an interface's version where its group cannot be joined.
func openSockets(set settings, ifaces []*iface, chosen []net.Interface) (*sockets, error) {
	s := &sockets{counts: set.counts}
	var lastErr error
	for fam, v6 := range []bool{false, true} {
		on := func(ifc *iface) *bool {
			if v6 {
				return &ifc.v6
			}
			return &ifc.v4
		}
		var members []*iface
		for _, ifc := range ifaces {
			if *on(ifc) {
				members = append(members, ifc)
			}
		}
		if len(members) == 0 {
			continue
		}
		listen, err := openListener(v6, members, chosen, on, set)
		if err != nil {
			set.log.Debug("mdns: cannot listen", "v6", v6, "err", err)
			lastErr = err
			for _, ifc := range members {
				*on(ifc) = false
			}
			continue
		}
		query, err := openQuerier(v6)
		if err != nil {
			set.log.Debug("mdns: cannot query", "v6", v6, "err", err)
			lastErr = err
			listen.c.Close()
			for _, ifc := range members {
				*on(ifc) = false
			}
			continue
		}
		s.listen[fam], s.query[fam] = listen, query
	}
	running := 0
	for _, ifc := range ifaces {
		if ifc.v4 || ifc.v6 {
			running++
		}
	}
	if running == 0 {
		s.close()
		return nil, fmt.Errorf("%w: cannot open mDNS sockets on any interface: %v", ErrNoInterface, lastErr)
	}
	for _, c := range s.conns() {
		c.counts = set.counts
	}
	if running == 1 {
		for _, c := range s.conns() {
			for _, ifc := range ifaces {
				if ifc.v4 || ifc.v6 {
					c.single = ifc.index
				}
			}
		}
	}
	return s, nil
}

// openListener binds port 5353 and joins the group on every member
// interface it can, clearing the version of those it cannot.
func openListener(v6 bool, members []*iface, chosen []net.Interface, on func(*iface) *bool, set settings) (*udpConn, error) {
	network, group := "udp4", group4
	if v6 {
		network, group = "udp6", group6
	}
	var (
		c       *net.UDPConn
		lastErr error
	)
	for _, ifc := range members {
		if c == nil {
			var err error
			// ListenMulticastUDP sets SO_REUSEADDR (and SO_REUSEPORT where
			// needed) so that every node on the host shares the port.
			c, err = net.ListenMulticastUDP(network, ifaceByIndex(chosen, ifc.index), group)
			if err != nil {
				lastErr = err
				*on(ifc) = false
			}
			continue
		}
		ifi := ifaceByIndex(chosen, ifc.index)
		var err error
		if v6 {
			err = ipv6.NewPacketConn(c).JoinGroup(ifi, group)
		} else {
			err = ipv4.NewPacketConn(c).JoinGroup(ifi, group)
		}
		if err != nil {
			set.log.Debug("mdns: cannot join group", "iface", ifc.name, "err", err)
			*on(ifc) = false
		}
	}
	if c == nil {
		return nil, lastErr
	}
	u, err := newUDPConn(c, v6)
	if err != nil {
		c.Close()
		return nil, err
	}
	return u, nil
}

func ifaceByIndex(netIfaces []net.Interface, index int) *net.Interface {
	for i := range netIfaces {
		if netIfaces[i].Index == index {
			return &netIfaces[i]
		}
	}
	return nil
}

// openQuerier opens the socket of one-shot queries: an ephemeral port.
func openQuerier(v6 bool) (*udpConn, error) {
	network, unspec := "udp4", net.IPv4zero
	if v6 {
		network, unspec = "udp6", net.IPv6unspecified
	}
	c, err := net.ListenUDP(network, &net.UDPAddr{IP: unspec})
	if err != nil {
		return nil, err
	}
	u, err := newUDPConn(c, v6)
	if err != nil {
		c.Close()
		return nil, err
	}
	return u, nil
}

// newUDPConn sets what RFC 6762 asks of an mDNS socket: IP TTL (hop limit)
// 255, loopback of our multicast to other nodes on this host, and the
// arrival interface on each read where the platform tells it. Where it
// can, the socket hears the group only on the interfaces it joined it on
// (not, as Linux does by default, on every interface that some socket of
// the host joined it on); where it cannot, the engine still looks at each
// packet's arrival interface.
func newUDPConn(c *net.UDPConn, v6 bool) (*udpConn, error) {
	u := &udpConn{c: c}
	_ = onlyJoinedGroups(c, v6)
	if v6 {
		u.p6 = ipv6.NewPacketConn(c)
		if err := u.p6.SetMulticastHopLimit(255); err != nil {
			return nil, err
		}
		if err := u.p6.SetMulticastLoopback(true); err != nil {
			return nil, err
		}
		_ = u.p6.SetControlMessage(ipv6.FlagInterface, true)
		return u, nil
	}
	u.p4 = ipv4.NewPacketConn(c)
	if err := u.p4.SetMulticastTTL(255); err != nil {
		return nil, err
	}
	if err := u.p4.SetMulticastLoopback(true); err != nil {
		return nil, err
	}
	_ = u.p4.SetControlMessage(ipv4.FlagInterface, true)
	return u, nil
}

// send implements sender.
func (s *sockets) send(p outPacket) error {
	fam := 0
	if p.v6 {
		fam = 1
	}
	u := s.listen[fam]
	if p.oneShot {
		u = s.query[fam]
	}
	if u == nil {
		return fmt.Errorf("discovery: mDNS %s on %s: no socket", p.kind, p.iface.name)
	}
	var err error
	switch {
	case p.kind == sendAnswer && p.to.IsValid():
		// The route to the querier chooses the interface and source.
		_, err = u.c.WriteToUDPAddrPort(p.data, p.to)
	case p.v6:
		cm := &ipv6.ControlMessage{IfIndex: p.iface.index}
		if p.iface.src6.IsValid() {
			cm.Src = p.iface.src6.AsSlice()
		}
		_, err = u.p6.WriteTo(p.data, cm, group6)
	default:
		cm := &ipv4.ControlMessage{IfIndex: p.iface.index}
		if p.iface.src4.IsValid() {
			cm.Src = p.iface.src4.AsSlice()
		}
		_, err = u.p4.WriteTo(p.data, cm, group4)
	}
	if err != nil {
		return fmt.Errorf("discovery: mDNS %s on %s: %w", p.kind, p.iface.name, err)
	}
	s.counts.sent.Add(1)
	return nil
}

func (s *sockets) conns() []*udpConn {
	var out []*udpConn
	for _, u := range append(s.listen[:], s.query[:]...) {
		if u != nil {
			out = append(out, u)
		}
	}
	return out
}

func (s *sockets) close() {
	for _, u := range s.conns() {
		u.c.Close()
	}
}

// readLoop passes every packet read to in until the socket is closed or
// done is closed.
func (u *udpConn) readLoop(in chan<- inPacket, done <-chan struct{}) {
	buf := make([]byte, maxReadSize)
	for {
		n, ifindex, src, err := u.readFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (an ICMP error reported on a UDP socket):
			// go on, without spinning.
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		u.counts.received.Add(1)
		if ifindex == 0 {
			ifindex = u.single
		}
		select {
		case in <- inPacket{data: bytes.Clone(buf[:n]), src: src, ifindex: ifindex}:
		case <-done:
			return
		}
	}
}

func (u *udpConn) readFrom(b []byte) (n, ifindex int, src netip.AddrPort, err error) {
	var from net.Addr
	if u.p6 != nil {
		var cm *ipv6.ControlMessage
		n, cm, from, err = u.p6.ReadFrom(b)
		if cm != nil {
			ifindex = cm.IfIndex
		}
	} else {
		var cm *ipv4.ControlMessage
		n, cm, from, err = u.p4.ReadFrom(b)
		if cm != nil {
			ifindex = cm.IfIndex
		}
	}
	if ua, ok := from.(*net.UDPAddr); ok {
		src = ua.AddrPort()
	}
	return n, ifindex, src, err
}
