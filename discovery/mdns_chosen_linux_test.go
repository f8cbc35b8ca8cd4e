package discovery

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"golang.org/x/net/ipv4"
)

// TestMDNSAnswersOnlyOnItsInterfaces runs a node on loopback only and a
// node on a veth only, then browses on each interface: only the node that
// runs there answers, with the addresses of that interface. On Linux every
// socket bound to port 5353 hears the group on every interface that any
// socket of the host joined it on (IP_MULTICAST_ALL): the node on loopback
// hears the veth's queries and must not answer them.
func TestMDNSAnswersOnlyOnItsInterfaces(t *testing.T) {
	veth, _ := vethPair(t, "ts6", "ts7", "10.97.0.6/24", "10.97.0.7/24")
	lo := netns.Loopback(t)
	const cluster = "chosen"
	startNode(t, &MDNS{Interfaces: []net.Interface{*lo}, DisableIPv6: true}, Self{Cluster: cluster, ID: "on-lo", Port: 7001})
	startNode(t, &MDNS{Interfaces: []net.Interface{*veth}, DisableIPv6: true}, Self{Cluster: cluster, ID: "on-veth", Port: 7002})
	for _, tc := range []struct {
		ifi       *net.Interface
		want      string // the id that answers
		wantAddrs string
	}{
		{lo, "on-lo", "[127.0.0.1]"},
		{veth, "on-veth", "[10.97.0.6]"},
	} {
		t.Run(tc.ifi.Name, func(t *testing.T) {
			answers := browseOn(t, tc.ifi, cluster, tc.want)
			for _, s := range answers {
				t.Logf("a browse on %s: %s answered with %v", tc.ifi.Name, s.txt.id, s.addrs)
				if s.txt.id != tc.want {
					t.Errorf("%s answered a query that came in on %s, an interface it does not run on", s.txt.id, tc.ifi.Name)
				} else if got := fmt.Sprint(s.addrs); got != tc.wantAddrs {
					t.Errorf("%s answered on %s with addresses %s, want %s", s.txt.id, tc.ifi.Name, got, tc.wantAddrs)
				}
			}
		})
	}
}

// browseOn multicasts a browse query for cluster on ifi, from an ephemeral
// port, every 200 ms until id answers (5 s at most), and returns every
// sighting the answers held.
func browseOn(t *testing.T, ifi *net.Interface, cluster, id string) []sighting {
	t.Helper()
	// On loopback the query goes from 127.0.0.1. Unbound, its source
	// would be the kernel's choice: for a multicast out of lo, an address
	// of another interface (127.0.0.1 is of host scope), here the veth's;
	// and now and then a node's socket reads a looped multicast without
	// its arrival interface (IP_PKTINFO's ifindex 0), so that a query
	// from the veth's subnet on lo could not be told from one on the veth.
	laddr := net.IPv4zero
	if ifi.Flags&net.FlagLoopback != 0 {
		laddr = net.IPv4(127, 0, 0, 1)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: laddr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c)
	if err := pc.SetMulticastInterface(ifi); err != nil {
		t.Fatal(err)
	}
	qs, err := browseQueries(serviceName(cluster), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := qs[0]
	var out []sighting
	buf := make([]byte, maxReadSize)
	deadline := time.Now().Add(5 * time.Second)
	for !slices.ContainsFunc(out, func(s sighting) bool { return s.txt.id == id }) {
		if time.Now().After(deadline) {
			t.Fatalf("no answer from %s to a browse on %s within 5 s; answers: %v", id, ifi.Name, out)
		}
		if _, err := pc.WriteTo(q, nil, group4); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break // the read deadline: ask again
			}
			var m dns.Msg
			if m.Unpack(buf[:n]) != nil || !m.Response {
				continue
			}
			ss, _ := parseResponse(&m, serviceName(cluster))
			out = append(out, ss...)
		}
	}
	return out
}
