package discovery

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestTXTRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, cluster, id string
		strings           int
		hashed            bool
	}{
		{"short", "my-cluster", "0b0ab5a4-9b0c-4f51-9c64-2b1a0a8f6d11", 3, false},
		{"binary", "\x00\xff\"\\=", "=\x00\n", 3, false},
		{"one full chunk", strings.Repeat("c", 253), strings.Repeat("i", 253), 3, false},
		{"chunk and a byte", strings.Repeat("c", 254), strings.Repeat("i", 254), 5, false},
		{"longest in full", strings.Repeat("c", maxClusterInTXT), strings.Repeat("i", MaxIDLen), 5, false},
		{"hashed", strings.Repeat("c", maxClusterInTXT+1), "i", 3, true},
		{"huge", strings.Repeat("c", 1<<20), "i", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := encodeTXT(tc.cluster, tc.id)
			if len(raw) != tc.strings {
				t.Errorf("%d strings, want %d", len(raw), tc.strings)
			}
			// Through miekg/dns, as on the wire.
			strs := make([]string, len(raw))
			for i, s := range raw {
				if len(s) > maxTXTString {
					t.Errorf("string %d is %d bytes", i, len(s))
				}
				strs[i] = escapeTXT(s)
			}
			rr := &dns.TXT{Hdr: dns.RR_Header{Name: "x.local.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: strs}
			buf := make([]byte, 4096)
			n, err := dns.PackRR(rr, buf, 0, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			back, _, err := dns.UnpackRR(buf[:n], 0)
			if err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			for _, s := range back.(*dns.TXT).Txt {
				b, err := unescapeTXT(s)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b)
			}
			info, err := decodeTXT(got)
			if err != nil {
				t.Fatal(err)
			}
			if info.id != tc.id || !info.matches(tc.cluster) || info.matches(tc.cluster+"x") {
				t.Errorf("decoded id %q, matches own cluster %v, matches another %v",
					info.id, info.matches(tc.cluster), info.matches(tc.cluster+"x"))
			}
			if (info.clusterHash != nil) != tc.hashed {
				t.Errorf("hashed = %v, want %v", info.clusterHash != nil, tc.hashed)
			}
		})
	}
}

func TestDecodeTXTRejects(t *testing.T) {
	full := func(key string) string { return key + "=" + strings.Repeat("x", maxTXTString-len(key)-1) }
	hash := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name string
		txt  []string
	}{
		{"empty", nil},
		{"no version", []string{"c=a", "i=b"}},
		{"other version", []string{"v=2", "c=a", "i=b"}},
		{"version twice", []string{"v=1", "v=1", "c=a", "i=b"}},
		{"no cluster", []string{"v=1", "i=b"}},
		{"empty cluster", []string{"v=1", "c=", "i=b"}},
		{"no id", []string{"v=1", "c=a"}},
		{"empty id", []string{"v=1", "c=a", "i="}},
		{"not key=value", []string{"v=1", "c=a", "i=b", "junk"}},
		{"empty key", []string{"v=1", "c=a", "i=b", "=x"}},
		{"empty string", []string{"v=1", "c=a", "i=b", ""}},
		{"chunk after short chunk", []string{"v=1", "c=a", "c=b", "i=b"}},
		{"id chunk after short chunk", []string{"v=1", "c=a", "i=a", "i=b"}},
		{"cluster too long", []string{"v=1", full("c"), full("c"), "i=b"}},
		{"id too long", []string{"v=1", "c=a", full("i"), full("i")}},
		{"name and hash", []string{"v=1", "c=a", "ch=" + hash, "i=b"}},
		{"hash and name", []string{"v=1", "ch=" + hash, "c=a", "i=b"}},
		{"hash twice", []string{"v=1", "ch=" + hash, "ch=" + hash, "i=b"}},
		{"short hash", []string{"v=1", "ch=abcd", "i=b"}},
		{"bad hash", []string{"v=1", "ch=" + strings.Repeat("zz", 32), "i=b"}},
		{"too many strings", append([]string{"v=1", "c=a", "i=b"}, strings.Split(strings.Repeat("x=y,", maxTXTStrings), ",")...)},
		{"string too long", []string{"v=1", "c=a", "i=b", "x=" + strings.Repeat("y", 300)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var strs [][]byte
			for _, s := range tc.txt {
				strs = append(strs, []byte(s))
			}
			if info, err := decodeTXT(strs); !errors.Is(err, ErrBadTXT) {
				t.Errorf("decodeTXT = %+v, %v; want ErrBadTXT", info, err)
			}
		})
	}
}

func TestDecodeTXTSkipsUnknownKeys(t *testing.T) {
	info, err := decodeTXT([][]byte{[]byte("v=1"), []byte("future=1"), []byte("c=a"), []byte("i=b")})
	if err != nil || info.id != "b" || info.cluster != "a" {
		t.Errorf("decodeTXT = %+v, %v; want id b of cluster a", info, err)
	}
}

func TestUnescapeTXT(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{`abc`, "abc", false},
		{`a\"b\\c`, `a"b\c`, false},
		{`\000\255\010`, "\x00\xff\n", false},
		{`\x`, "x", false},
		{`\25`, "25", false}, // not three digits: an escaped '2', then '5'
		{`\256`, "", true},
		{`abc\`, "", true},
		{strings.Repeat("a", 256), "", true},
		{strings.Repeat(`\255`, 255), strings.Repeat("\xff", 255), false},
	} {
		got, err := unescapeTXT(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && string(got) != tc.want) {
			t.Errorf("unescapeTXT(%.20q) = %.20q, %v; want %.20q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// FuzzParseTXT feeds raw TXT RDATA (length-prefixed strings) to the
// decoder: it must never panic, accept only what re-encodes to the same
// strings, and bound what it keeps.
func FuzzParseTXT(f *testing.F) {
	for _, txt := range [][][]byte{
		encodeTXT("my-cluster", "0b0ab5a4-9b0c-4f51-9c64-2b1a0a8f6d11"),
		encodeTXT(strings.Repeat("c", 300), strings.Repeat("\x00", 300)),
		encodeTXT(strings.Repeat("c", 400), "id"),
		{[]byte("v=1"), []byte("c=a"), []byte("c=b"), []byte("i=x")},
		{[]byte("v=2")},
	} {
		f.Add(joinRDATA(txt))
	}
	f.Fuzz(func(t *testing.T, rdata []byte) {
		strs, err := splitRDATA(rdata)
		if err != nil {
			return
		}
		info, err := decodeTXT(strs)
		if err != nil {
			if !errors.Is(err, ErrBadTXT) {
				t.Fatalf("error %v does not wrap ErrBadTXT", err)
			}
			return
		}
		if info.id == "" || len(info.id) > MaxIDLen || len(info.cluster) > maxClusterInTXT {
			t.Fatalf("accepted %+v", info)
		}
		if info.clusterHash == nil {
			// Without unknown keys, the record is canonical.
			again, err := decodeTXT(encodeTXT(info.cluster, info.id))
			if err != nil || again.id != info.id || again.cluster != info.cluster {
				t.Fatalf("re-encoding %+v gives %+v, %v", info, again, err)
			}
		}
	})
}

// FuzzParsePacket feeds whole packets to the receive path of an engine:
// the tolerant decoder, the parser, the responder, probing and the
// address queries. One packet never yields more than the bounds allow,
// and never makes the engine send more than a few packets.
func FuzzParsePacket(f *testing.F) {
	rs, err := newRecordSet(newNames("c", "peer"), encodeTXT("c", "peer"), 7, nil, 120)
	if err != nil {
		f.Fatal(err)
	}
	query, err := browseQueries(serviceName("c"), true, rs.all()[:1])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(query[0])
	self, err := newRecordSet(newNames("c", "a"), encodeTXT("c", "a"), 8, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, 120)
	if err != nil {
		f.Fatal(err)
	}
	probe, err := probeQuery(self)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(probe)
	for _, m := range []*dns.Msg{rs.announcement(), rs.goodbye()} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	set, err := (&MDNS{}).settings()
	if err != nil {
		f.Fatal(err)
	}
	set.log = slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, _, err := unpackTolerant(b); err == nil {
			ss, _ := parseResponse(m, serviceName("c"))
			if len(ss) > maxInstancesPerPacket {
				t.Fatalf("%d sightings from one packet", len(ss))
			}
			for _, s := range ss {
				if len(s.addrs) > maxAddrsPerInstance {
					t.Fatalf("%d addresses for one instance", len(s.addrs))
				}
			}
		}
		for _, port := range []uint16{mdnsPort, 40000} { // from a responder, from a legacy querier
			ifc := &iface{index: 1, name: "eth0", v4: true, prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/16")}}
			if ok, err := ifc.build(set, Self{Cluster: "c", ID: "a", Port: 8}, 8, newNames("c", "a"), encodeTXT("c", "a"), nil); !ok || err != nil {
				t.Fatalf("build: %v %v", ok, err)
			}
			out := &countingSender{}
			e, err := newEngine(set, Self{Cluster: "c", ID: "a", Port: 8}, []*iface{ifc}, out, nil, func(Event) {})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			e.startRound(now)
			e.receive(inPacket{data: b, src: netip.AddrPortFrom(netip.MustParseAddr("10.0.9.9"), port), ifindex: 1}, now)
			later := now.Add(time.Second) // whatever the packet queued or held
			e.releaseHeld(later)
			e.sendDue(later)
			if out.n > 8 {
				t.Fatalf("one packet from port %d made the engine send %d packets", port, out.n)
			}
		}
	})
}

// countingSender counts what an engine sends.
type countingSender struct{ n int }

func (c *countingSender) send(outPacket) error { c.n++; return nil }

func joinRDATA(strs [][]byte) []byte {
	var b bytes.Buffer
	for _, s := range strs {
		b.WriteByte(byte(len(s)))
		b.Write(s)
	}
	return b.Bytes()
}
