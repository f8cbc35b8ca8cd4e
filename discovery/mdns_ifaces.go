package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// iface is one interface MDNS runs on.
type iface struct {
	index    int
	name     string
	loopback bool
	v4, v6   bool           // mDNS runs over this IP version here
	prefixes []netip.Prefix // the interface's own addresses
	// src4 and src6 are the source addresses of what we send here: an
	// address of this interface, so that receivers (and the answers to our
	// queries, sent back to it) tell which interface a packet belongs to.
	src4, src6 netip.Addr

	rs       *recordSet
	announce []byte // packed announcement
	goodbye  []byte // packed goodbye
}

// interfaces returns the interfaces to run on. By default: those up,
// running and multicast-capable, with an IPv4 address or an IPv6 address
// that is not link-local (so not, say, the veth of every container), and
// loopback where it is multicast-capable.
func (m *MDNS) interfaces(set settings) ([]net.Interface, error) {
	if m.Interfaces != nil {
		for _, ifi := range m.Interfaces {
			if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 {
				return nil, fmt.Errorf("%w: %s is down or not multicast-capable", ErrNoInterface, ifi.Name)
			}
		}
		return slices.Clone(m.Interfaces), nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoInterface, err)
	}
	var out []net.Interface
	for _, ifi := range all {
		const want = net.FlagUp | net.FlagRunning | net.FlagMulticast
		if ifi.Flags&want != want {
			continue
		}
		if ifi.Flags&net.FlagLoopback != 0 || hasRoutableAddr(set, &ifi) {
			out = append(out, ifi)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: none up, running and multicast-capable with an address", ErrNoInterface)
	}
	return out, nil
}

func hasRoutableAddr(set settings, ifi *net.Interface) bool {
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip4 := ipn.IP.To4(); ip4 != nil {
			if set.v4 {
				return true
			}
		} else if set.v6 && !ipn.IP.IsLinkLocalUnicast() {
			return true
		}
	}
	return false
}

// buildIfaces reads the addresses of the chosen interfaces and builds each
// one's records. Interfaces without an address of an enabled IP version
// are left out.
func buildIfaces(set settings, self Self, port uint16, chosen []net.Interface) ([]*iface, error) {
	txt := encodeTXT(self.Cluster, self.ID)
	n := newNames(self.Cluster, self.ID)
	var ifaces []*iface
	all := prefixesOf(chosen)
	// An address of an interface that is not chosen is not announced on
	// the chosen ones either (a container bridge's address announced on
	// the LAN would send other nodes to a bridge of their own).
	if host, err := net.Interfaces(); err == nil {
		for i, ps := range prefixesOf(host) {
			if _, ok := all[i]; !ok {
				all[i] = ps
			}
		}
	}
	for _, ifi := range chosen {
		ifc := &iface{
			index:    ifi.Index,
			name:     ifi.Name,
			loopback: ifi.Flags&net.FlagLoopback != 0,
			prefixes: all[ifi.Index],
		}
		ok, err := ifc.build(set, self, port, n, txt, all)
		if err != nil {
			return nil, err
		}
		if ok {
			ifaces = append(ifaces, ifc)
		}
	}
	if len(ifaces) == 0 {
		return nil, fmt.Errorf("%w: no interface has an address to announce", ErrNoInterface)
	}
	return ifaces, nil
}

// prefixesOf returns the addresses of netIfaces with their subnets, by
// interface index.
func prefixesOf(netIfaces []net.Interface) map[int][]netip.Prefix {
	all := map[int][]netip.Prefix{}
	for _, ifi := range netIfaces {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				ip, ok := netip.AddrFromSlice(ipn.IP)
				ones, bits := ipn.Mask.Size()
				if !ok || bits == 0 {
					continue
				}
				if ip = ip.Unmap(); ip.Is4() && bits == 128 {
					ones -= 96
				}
				all[ifi.Index] = append(all[ifi.Index], netip.PrefixFrom(ip, ones))
			}
		}
	}
	return all
}

// build chooses the IP versions and source addresses of ifc and builds its
// records. It reports false when ifc has nothing to run on or announce.
func (ifc *iface) build(set settings, self Self, port uint16, n names, txt [][]byte, all map[int][]netip.Prefix) (bool, error) {
	for _, p := range ifc.prefixes {
		a := p.Addr()
		if a.Is4() && set.v4 && !ifc.src4.IsValid() {
			ifc.v4, ifc.src4 = true, a
		}
		// Linux does not deliver IPv6 multicast on loopback. RFC 6762 §15
		// prefers a link-local source.
		if a.Is6() && set.v6 && !ifc.loopback && (!ifc.src6.IsValid() || a.IsLinkLocalUnicast() && !ifc.src6.IsLinkLocalUnicast()) {
			ifc.v6, ifc.src6 = true, a
		}
	}
	if !ifc.v4 && !ifc.v6 {
		return false, nil
	}
	addrs := announcedAddrs(set, self, port, ifc, all)
	if len(addrs) == 0 {
		return false, nil
	}
	rs, err := newRecordSet(n, txt, port, addrs, uint32(set.ttl/time.Second))
	if err != nil {
		return false, err
	}
	if ifc.announce, err = rs.announcement().Pack(); err != nil {
		return false, err
	}
	if ifc.goodbye, err = rs.goodbye().Pack(); err != nil {
		return false, err
	}
	ifc.rs = rs
	return true, nil
}

// announcedAddrs returns the addresses announced on ifc: without
// self.Addrs, ifc's own; otherwise those of self.Addrs that fit ifc (with
// the announced port): an unspecified address stands for ifc's own of that
// version (:: for both), an address on some interface's subnet goes only
// on that interface, link-local and loopback ones only on their own
// interface, one on another interface's subnet (chosen or not) nowhere
// else, and any other (an address on no interface: a NAT's, say) goes
// everywhere.
func announcedAddrs(set settings, self Self, port uint16, ifc *iface, all map[int][]netip.Prefix) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		a = a.WithZone("")
		if (a.Is4() && !set.v4) || (a.Is6() && !set.v6) || slices.Contains(out, a) {
			return
		}
		out = append(out, a)
	}
	own := func(v4, v6 bool) {
		for _, p := range ifc.prefixes {
			if (p.Addr().Is4() && v4) || (p.Addr().Is6() && v6) {
				add(p.Addr())
			}
		}
	}
	if len(self.Addrs) == 0 {
		own(true, true)
		return out
	}
	onSubnet := func(a netip.Addr, prefixes []netip.Prefix) bool {
		for _, p := range prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for _, ap := range self.Addrs {
		a := ap.Addr().Unmap()
		if ap.Port() != 0 && ap.Port() != port {
			continue // one SRV record, one port
		}
		switch {
		case a.IsUnspecified():
			own(true, a.Is6())
		case a.IsLoopback():
			if ifc.loopback {
				add(a)
			}
		case a.Is6() && a.IsLinkLocalUnicast():
			if a.Zone() == ifc.name || (a.Zone() == "" && onSubnet(a.WithZone(""), ifc.prefixes)) {
				add(a)
			}
		case onSubnet(a, ifc.prefixes):
			add(a)
		default:
			elsewhere := false
			for _, prefixes := range all {
				elsewhere = elsewhere || onSubnet(a, prefixes)
			}
			if !elsewhere {
				add(a)
			}
		}
	}
	return out
}
