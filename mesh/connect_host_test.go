package mesh

// Connect with host names: looked up (a test resolver serves the names;
// "localhost" comes from /etc/hosts), every address tried, and looked up
// again when a kept peer is redialed.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/srvzone"
)

// testResolver returns a resolver that asks z, and no other server, what
// /etc/hosts does not answer.
func testResolver(z *srvzone.Zone) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", z.Addr())
		},
	}
}

// hostPort returns host with the port of n's first address.
func hostPort(t *testing.T, host string, n *Node) string {
	t.Helper()
	return net.JoinHostPort(host, strconv.Itoa(int(netip.MustParseAddrPort(addr(t, n)).Port())))
}

// TestConnectHostName links two nodes through Connect with a host name:
// "localhost", and names of the test resolver whose first address
// refuses, or whose only address does.
func TestConnectHostName(t *testing.T) {
	z := srvzone.Start(t, "127.0.0.1:0", "_tallship._tcp.connect.test")
	z.Set("two.connect.test", 0, netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.1"))
	z.Set("refused.connect.test", 0, netip.MustParseAddr("127.0.0.3"))
	for _, tc := range []struct {
		name    string
		host    string
		refused bool // every address refuses: Connect fails
	}{
		{name: "localhost", host: "localhost"},
		{name: "second address", host: "two.connect.test"},
		{name: "every address refuses", host: "refused.connect.test", refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := start(t, "names", testConfig("a"))
			cfg := testConfig("b")
			if tc.host != "localhost" {
				cfg.Resolver = testResolver(z)
			} // else net.DefaultResolver, which finds it in /etc/hosts
			b := start(t, "names", cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			target := hostPort(t, tc.host, a)
			p, err := b.Connect(ctx, target)
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "127.0.0.3") {
					t.Fatalf("Connect(%q) = %v, want the refusal of 127.0.0.3", target, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect(%q): %v", target, err)
			}
			if p.ID != "a" || !p.Kept {
				t.Errorf("Connect(%q) = %+v, want kept peer a", target, p)
			}
			waitFor(t, "linked", 5*time.Second, func() bool { return settled(a, b) })
		})
	}
}

// TestConnectBadHost: an address that is not host:port, or a name that
// does not resolve, fails Connect with an error naming it.
func TestConnectBadHost(t *testing.T) {
	z := srvzone.Start(t, "127.0.0.1:0", "_tallship._tcp.connect.test")
	cfg := testConfig("b")
	cfg.Resolver = testResolver(z)
	b := start(t, "names", cfg)
	for _, tc := range []struct {
		addr     string
		badAddr  bool // wraps discovery.ErrBadAddr; else a *net.DNSError
		mentions string
	}{
		{addr: "localhost", badAddr: true, mentions: `"localhost"`},
		{addr: "no such host:7946", badAddr: true, mentions: `"no such host"`},
		{addr: "localhost:nosuchservice", badAddr: true, mentions: `"nosuchservice"`},
		{addr: "localhost:0", badAddr: true, mentions: "port 0"},
		{addr: "gone.connect.test:7946", mentions: "gone.connect.test"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := b.Connect(ctx, tc.addr)
			if err == nil {
				t.Fatalf("Connect(%q) succeeded", tc.addr)
			}
			var dnsErr *net.DNSError
			if tc.badAddr && !errors.Is(err, discovery.ErrBadAddr) {
				t.Errorf("Connect(%q) = %v, want discovery.ErrBadAddr", tc.addr, err)
			}
			if !tc.badAddr && (!errors.As(err, &dnsErr) || !dnsErr.IsNotFound) {
				t.Errorf("Connect(%q) = %v, want a *net.DNSError, not found", tc.addr, err)
			}
			if !strings.Contains(err.Error(), tc.mentions) {
				t.Errorf("Connect(%q) = %v, want it to name %s", tc.addr, err, tc.mentions)
			}
		})
	}
}

// TestConnectRedialResolves: a kept peer whose link drops is redialed at
// the address its name has now. The peer moves (a node with its id at
// another address, the name changed to point there, the first node
// closed); only a new look-up finds it.
func TestConnectRedialResolves(t *testing.T) {
	z := srvzone.Start(t, "127.0.0.1:0", "_tallship._tcp.connect.test")
	a := start(t, "names", testConfig("a"))
	port := netip.MustParseAddrPort(addr(t, a)).Port()
	z.Set("peer.connect.test", 0, netip.MustParseAddr("127.0.0.1"))
	cfg := testConfig("b")
	cfg.Resolver = testResolver(z)
	b := start(t, "names", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Connect(ctx, net.JoinHostPort("peer.connect.test", strconv.Itoa(int(port)))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "linked", 5*time.Second, func() bool { return settled(a, b) })

	moved := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port)
	mcfg := testConfig("a")
	mcfg.Listen = moved.String()
	a2, err := mcfg.Join(context.Background(), "names")
	if err != nil {
		t.Skipf("cannot listen at %v: %v", moved, err)
	}
	t.Cleanup(func() { a2.Close() })
	z.Set("peer.connect.test", 0, moved.Addr())
	a.Close()

	waitFor(t, "redialed at the new address", 10*time.Second, func() bool {
		ps := b.Peers()
		return len(ps) == 1 && ps[0].ID == "a" && slices.Contains(ps[0].Addrs, moved) && settled(a2, b)
	})
}
