package discovery

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
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

// TestSameRecordAgreesWithRecordKey: the fast comparison of known answers
// says two records are the same exactly when their keys (name, type,
// class without the cache-flush bit, data; case-insensitive names) match.
func TestSameRecordAgreesWithRecordKey(t *testing.T) {
	var rrs []dns.RR
	for _, s := range []string{
		"_tallship._tcp.local. 120 IN PTR a._tallship._tcp.local.",
		"_tallship._tcp.local. 4500 IN PTR A._Tallship._tcp.local.",
		"_TALLSHIP._tcp.local. 120 IN PTR b._tallship._tcp.local.",
		"_tallship._tcp.local. 120 CH PTR a._tallship._tcp.local.",
		"a._tallship._tcp.local. 120 IN SRV 0 0 7946 h.local.",
		"A._tallship._tcp.local. 10 IN SRV 0 0 7946 H.LOCAL.",
		"a._tallship._tcp.local. 120 IN SRV 0 0 7947 h.local.",
		"a._tallship._tcp.local. 120 IN SRV 1 0 7946 h.local.",
		"a._tallship._tcp.local. 120 IN SRV 0 1 7946 h.local.",
		"a._tallship._tcp.local. 120 IN SRV 0 0 7946 g.local.",
		`a._tallship._tcp.local. 120 IN TXT "id=a" "v=1"`,
		`a._tallship._tcp.local. 60 IN TXT "id=a" "v=1"`,
		`a._tallship._tcp.local. 120 IN TXT "id=A" "v=1"`,
		`a._tallship._tcp.local. 120 IN TXT "id=a"`,
		"h.local. 120 IN A 127.0.0.1",
		"H.local. 1 IN A 127.0.0.1",
		"h.local. 120 IN A 127.0.0.2",
		"h.local. 120 IN AAAA ::1",
		"h.local. 120 IN AAAA ::2",
		"h.local. 120 IN NSEC h.local. A AAAA",
		"h.local. 120 IN NSEC h.local. A",
		"h.local. 120 IN HINFO \"x\" \"y\"",
	} {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		rrs = append(rrs, rr)
	}
	flushed := dns.Copy(rrs[4])
	flushed.Header().Class |= cacheFlush
	rrs = append(rrs, flushed)
	for _, a := range rrs {
		for _, b := range rrs {
			if got, want := sameRecord(a, b), recordKey(a) == recordKey(b); got != want {
				t.Errorf("sameRecord(%v, %v) = %v, want %v", a, b, got, want)
			}
		}
	}
}
