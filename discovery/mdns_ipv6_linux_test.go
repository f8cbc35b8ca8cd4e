package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// vethPair makes the veth pair a<->b in the test's private namespace, with
// IPv6 duplicate address detection off, gives the ends the addresses
// given (CIDR, in order), and waits for both link-local addresses. It
// removes the pair when the test ends.
func vethPair(t *testing.T, a, b string, cidrs ...string) (ifA, ifB *net.Interface) {
	t.Helper()
	netns.Require(t)
	if !strings.HasPrefix(a, "ts") || !strings.HasPrefix(b, "ts") {
		t.Fatalf("test interfaces must be named ts*: %s, %s", a, b)
	}
	ip := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := ip("link", "add", a, "type", "veth", "peer", "name", b); err != nil {
		t.Skipf("cannot make a veth pair: %v", err)
	}
	t.Cleanup(func() { _ = ip("link", "del", a) })
	for _, name := range []string{a, b} {
		// Without this, the link-local address stays tentative for
		// 1–2 s and multicast from it fails.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/accept_dad", []byte("0"), 0); err != nil {
			t.Skipf("cannot turn off IPv6 DAD on %s: %v", name, err)
		}
		if err := ip("link", "set", name, "up", "multicast", "on"); err != nil {
			t.Fatal(err)
		}
	}
	for i, cidr := range cidrs {
		if err := ip("addr", "add", cidr, "dev", []string{a, b}[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ifA, ifB = linkLocal(a), linkLocal(b)
		if ifA != nil && ifB != nil {
			return ifA, ifB
		}
		if time.Now().After(deadline) {
			t.Skipf("no IPv6 link-local address on %s/%s after 5 s", a, b)
		}
		time.Sleep(10 * time.Millisecond) // polling against the deadline
	}
}

// linkLocal returns the interface if it is up with an IPv6 link-local address.
func linkLocal(name string) *net.Interface {
	ifi, err := net.InterfaceByName(name)
	if err != nil || ifi.Flags&net.FlagUp == 0 {
		return nil
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast() {
			return ifi
		}
	}
	return nil
}

func ifaceLinkLocal(t *testing.T, ifi *net.Interface) netip.Addr {
	t.Helper()
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast() {
			ip, _ := netip.AddrFromSlice(ipn.IP)
			return ip
		}
	}
	t.Fatalf("%s has no link-local address", ifi.Name)
	return netip.Addr{}
}

// TestMDNSIPv6 runs two nodes over IPv6 only, one on each end of a veth
// pair, and dials the link-local address one reports for the other.
func TestMDNSIPv6(t *testing.T) {
	ifA, ifB := vethPair(t, "ts0", "ts1")
	l, err := net.Listen("tcp6", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	a := startNode(t, &MDNS{Interfaces: []net.Interface{*ifA}, DisableIPv4: true}, Self{Cluster: "six", ID: "a", Port: port})
	b := startNode(t, &MDNS{Interfaces: []net.Interface{*ifB}, DisableIPv4: true}, Self{Cluster: "six", ID: "b"})
	bFound := b.rec.waitFor(t, 5*time.Second, "b knows a over IPv6", knows("a"))
	aFound := a.rec.waitFor(t, 5*time.Second, "a knows b over IPv6", knows("b"))
	t.Logf("over IPv6: found in %v and %v", bFound.Sub(b.started), aFound.Sub(b.started))

	want := netip.AddrPortFrom(ifaceLinkLocal(t, ifA).WithZone(ifB.Name), uint16(port))
	got := peers(b.rec.snapshot())["a"].Addrs
	if len(got) != 1 || got[0] != want {
		t.Fatalf("b reports a at %v, want [%v]", got, want)
	}
	c, err := net.DialTimeout("tcp6", got[0].String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial the reported address: %v", err)
	}
	c.Close()

	stopped := time.Now()
	b.stop(t)
	at := a.rec.waitFor(t, 2*time.Second, "goodbye over IPv6", lost("b"))
	t.Logf("goodbye over IPv6: Lost %v after cancel", at.Sub(stopped))
}

// TestMDNSManyInterfaces runs two nodes on every interface (loopback and
// both ends of a veth pair with IPv4 addresses): each must report the other
// with addresses it can dial, loopback IPv4 first.
func TestMDNSManyInterfaces(t *testing.T) {
	vethPair(t, "ts2", "ts3", "10.99.0.2/24", "10.99.0.3/24")
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	a := startNode(t, &MDNS{}, Self{Cluster: "many", ID: "a", Port: port})
	b := startNode(t, &MDNS{}, Self{Cluster: "many", ID: "b"})
	a.rec.waitFor(t, 5*time.Second, "a knows b", knows("b"))
	// Each interface's records arrive on their own; each adds addresses.
	b.rec.waitFor(t, 5*time.Second, "b knows a on every interface", func(evs []Event) bool {
		addrs := peers(evs)["a"].Addrs
		has := func(ip string) bool {
			return slices.ContainsFunc(addrs, func(ap netip.AddrPort) bool { return ap.Addr().WithZone("").String() == ip })
		}
		return len(addrs) > 0 && addrs[0].Addr().String() == "127.0.0.1" && has("10.99.0.2") && has("10.99.0.3")
	})
	addrs := peers(b.rec.snapshot())["a"].Addrs
	t.Logf("b reports a at %v", addrs)
	for _, ap := range addrs {
		if ap.Addr().IsLinkLocalUnicast() {
			// Both ends are in this namespace: whether the kernel
			// delivers a local link-local address through the other end
			// varies. TestMDNSIPv6 dials one.
			continue
		}
		c, err := net.DialTimeout("tcp", ap.String(), 5*time.Second)
		if err != nil {
			t.Errorf("dial %v: %v", ap, err)
			continue
		}
		c.Close()
	}
}
