package discovery

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BenchmarkReceive measures the receive path of one announcement: unpack,
// parse, decode TXT, update the table of nodes sighted.
func BenchmarkReceive(b *testing.B) {
	for _, bc := range []struct{ name, cluster, id string }{
		{"uuid", "my-cluster", "0b0ab5a4-9b0c-4f51-9c64-2b1a0a8f6d11"},
		{"longest", strings.Repeat("c", maxClusterInTXT), strings.Repeat("i", MaxIDLen)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			addrs := []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fe80::2")}
			rs, err := newRecordSet(newNames(bc.cluster, bc.id), encodeTXT(bc.cluster, bc.id), 7, addrs, 120)
			if err != nil {
				b.Fatal(err)
			}
			pkt, err := rs.announcement().Pack()
			if err != nil {
				b.Fatal(err)
			}
			set, _ := (&MDNS{}).settings()
			self := Self{Cluster: bc.cluster, ID: "self", Port: 8}
			ifc := &iface{index: 1, name: "eth0", v4: true, prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/16")}}
			if ok, err := ifc.build(set, self, 8, newNames(bc.cluster, "self"), encodeTXT(bc.cluster, "self"), nil); !ok || err != nil {
				b.Fatalf("build: %v %v", ok, err)
			}
			e, err := newEngine(set, self, []*iface{ifc}, nil, nil, func(Event) {})
			if err != nil {
				b.Fatal(err)
			}
			in := inPacket{data: pkt, src: netip.MustParseAddrPort("10.0.0.2:5353"), ifindex: 1}
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				e.receive(in, time.Now())
			}
			if _, ok := e.sighted[bc.id]; !ok {
				b.Fatal("node not sighted")
			}
		})
	}
}

func BenchmarkDecodeTXT(b *testing.B) {
	txt := encodeTXT("my-cluster", "0b0ab5a4-9b0c-4f51-9c64-2b1a0a8f6d11")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeTXT(txt); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRecordSetFits checks that records are trimmed to maxPacketSize by
// dropping addresses, and refused when even none fit.
func TestRecordSetFits(t *testing.T) {
	var many []netip.Addr
	for i := range 40 {
		many = append(many, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}))
	}
	cluster, id := strings.Repeat("c", maxClusterInTXT), strings.Repeat("i", MaxIDLen)
	rs, err := newRecordSet(newNames(cluster, id), encodeTXT(cluster, id), 7, many, 120)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*dns.Msg{rs.announcement(), rs.goodbye()} {
		b, err := m.Pack()
		if err != nil || len(b) > maxPacketSize {
			t.Errorf("packet of %d bytes (%v), want ≤ %d", len(b), err, maxPacketSize)
		}
	}
	if len(rs.addrs) == 0 || len(rs.addrs) == len(many) {
		t.Errorf("kept %d of %d addresses, want some trimmed", len(rs.addrs), len(many))
	}
	huge := [][]byte{[]byte(strings.Repeat("x", 255)), []byte(strings.Repeat("y", 255)), []byte(strings.Repeat("z", 255)),
		[]byte(strings.Repeat("w", 255)), []byte(strings.Repeat("v", 255)), []byte(strings.Repeat("u", 255))}
	if _, err := newRecordSet(newNames("c", "i"), huge, 7, nil, 120); err == nil {
		t.Error("records of over 1,400 bytes accepted")
	}
}
