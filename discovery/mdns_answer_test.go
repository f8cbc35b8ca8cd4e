package discovery

import (
	"net/netip"
	"testing"
)

// TestQueryIface: a query belongs to the interface it arrived on, when
// MDNS runs there, and to no other; where the arrival interface is
// unknown, to the interface whose subnet holds the querier.
func TestQueryIface(t *testing.T) {
	lo := &iface{index: 1, name: "lo", loopback: true, prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}}
	eth := &iface{index: 2, name: "eth0", prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}}
	e := &engine{ifaces: []*iface{lo, eth}}
	name := func(ifc *iface) string {
		if ifc == nil {
			return "none"
		}
		return ifc.name
	}
	for _, tc := range []struct {
		name    string
		ifindex int
		src     string
		want    *iface
	}{
		{"arrived on eth0", 2, "10.0.0.7", eth},
		{"arrived on lo", 1, "127.0.0.1", lo},
		{"arrived on lo from eth0's subnet", 1, "10.0.0.1", lo},
		{"arrived on an interface not run on", 3, "10.0.0.7", nil},
		{"arrival unknown, querier on eth0's subnet", 0, "10.0.0.7", eth},
		{"arrival unknown, querier elsewhere", 0, "192.0.2.1", nil},
		{"arrival unknown, loopback querier", 0, "127.0.0.1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.queryIface(tc.ifindex, netip.MustParseAddr(tc.src)); got != tc.want {
				t.Errorf("queryIface(%d, %s) = %s, want %s", tc.ifindex, tc.src, name(got), name(tc.want))
			}
		})
	}
}
