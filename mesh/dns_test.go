package mesh

// Discovery by DNS with an address that cannot link served first: the
// dial moves on to the next within the handshake timeout. The tests across
// subnets, with nodes in namespaces of their own, are e2e's subnet_*.go.

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/testutil/srvzone"
)

// TestDNSUnreachableFirstAddress serves a node's name with a first address
// that cannot link (its packets vanish, or a listener there never answers
// the handshake, or it refuses) before the one that can: the node is
// linked within the handshake timeout of the first address, not later.
func TestDNSUnreachableFirstAddress(t *testing.T) {
	netns.Require(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root in the test's namespace to make a veth pair")
	}
	// 10.61.9.2 is on a link where nobody answers ARP: a connect to it
	// hangs (until the neighbour entry fails, after about 3 s).
	ipRun(t, "link", "add", "ts-bh0", "type", "veth", "peer", "name", "ts-bh1")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "ts-bh0").Run() })
	ipRun(t, "addr", "add", "10.61.9.1/24", "dev", "ts-bh0")
	ipRun(t, "link", "set", "ts-bh0", "up")
	ipRun(t, "link", "set", "ts-bh1", "up")

	for _, tc := range []struct {
		name  string
		first string // host of the first address; empty: none
		// silent: a listener at the first address accepts connections
		// and never says a word.
		silent bool
		// listen is where the node listens; empty: 127.0.0.1. The good
		// address has the scope of the first, or address selection (RFC
		// 6724, which net.Resolver applies) would put it first.
		listen string
	}{
		{name: "no bad address"},
		{name: "refused", first: "127.0.0.3"},
		{name: "silent listener", first: "127.0.0.2", silent: true},
		{name: "packets vanish", first: "10.61.9.2", listen: "10.61.9.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tcfg := testConfig("t")
			if tc.listen != "" {
				tcfg.Listen = tc.listen
			}
			tgt := start(t, "unreach", tcfg)
			good := tgt.Addrs()[0]
			accepted := 0
			var acceptMu sync.Mutex
			if tc.silent {
				ln, err := net.Listen("tcp", net.JoinHostPort(tc.first, strconv.Itoa(int(good.Port()))))
				if err != nil {
					t.Skipf("cannot listen at the silent address: %v", err)
				}
				var conns []net.Conn
				done := make(chan struct{})
				go func() {
					defer close(done)
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						acceptMu.Lock()
						accepted++
						conns = append(conns, c)
						acceptMu.Unlock()
					}
				}()
				t.Cleanup(func() {
					ln.Close()
					<-done
					for _, c := range conns {
						c.Close()
					}
				})
			}
			z := srvzone.Start(t, "127.0.0.1:0", "_tallship._tcp.unreach.test")
			var addrs []netip.Addr
			if tc.first != "" {
				addrs = append(addrs, netip.MustParseAddr(tc.first))
			}
			z.Set("t.unreach.test", good.Port(), append(addrs, good.Addr())...)
			cfg := testConfig("d")
			cfg.Discovery = []discovery.Discoverer{&discovery.DNS{Name: "_tallship._tcp.unreach.test", Server: z.Addr(), Interval: 250 * time.Millisecond}}
			began := time.Now()
			d := start(t, "unreach", cfg)
			waitFor(t, "linked", 10*time.Second, func() bool { return settled(d, tgt) })
			took := time.Since(began)
			acceptMu.Lock()
			n := accepted
			acceptMu.Unlock()
			t.Logf("linked %v after start (handshake timeout %v); dials that reached the silent listener: %d", took, cfg.HandshakeTimeout, n)
			if limit := cfg.HandshakeTimeout + 750*time.Millisecond; took > limit {
				t.Fatalf("linked after %v, more than the handshake timeout and slack (%v)", took, limit)
			}
		})
	}
}

// ipRun runs ip in the test's namespace.
func ipRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
