package e2e_test

// The harness of the tests across subnets: harness nodes
// (internal/testutil/node) in network namespaces of their own, on two
// private subnets joined by the test's namespace as a router (which
// forwards unicast and no multicast). They find each other through a DNS
// server of the test (subnet_dns_test.go); mDNS runs on the interfaces it
// is told to, only (subnet_iface_test.go).
//
//	ns A: ts-a 10.61.1.2, .3/24 ── ts-ra 10.61.1.1 ┐
//	                                               ├ the test's namespace
//	ns B: ts-b 10.61.2.2, .3/24 ── ts-rb 10.61.2.1 ┘ (router, DNS server)

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/testutil/node"
)

// subnets is the topology above.
type subnets struct {
	a, b *netns.Namespace
}

// newSubnets builds the topology, or skips t when it cannot.
func newSubnets(t *testing.T) *subnets {
	t.Helper()
	netns.Require(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root in the test's namespace to make namespaces")
	}
	for _, tool := range []string{"ip", "nsenter", "sleep", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	// The test's namespace is private: these settings end with it.
	writeSysctl(t, "net/ipv4/ip_forward", "1")
	writeSysctl(t, "net/ipv6/conf/default/accept_dad", "0")
	s := &subnets{a: newNamespace(t), b: newNamespace(t)}
	for i, side := range []struct {
		ns          *netns.Namespace
		here, there string
		prefix      string
		addrs       []string
	}{
		{s.a, "ts-ra", "ts-a", "10.61.1", []string{"2", "3"}},
		{s.b, "ts-rb", "ts-b", "10.61.2", []string{"2", "3"}},
	} {
		// DAD off before the veth arrives: a new interface takes the
		// namespace's defaults.
		if err := side.ns.Sysctl(map[string]string{"net/ipv6/conf/default/accept_dad": "0"}); err != nil {
			t.Fatal(err)
		}
		ipRun(t, "link", "add", side.here, "type", "veth", "peer", "name", side.there, "netns", strconv.Itoa(side.ns.Pid()))
		t.Cleanup(func() { exec.Command("ip", "link", "del", side.here).Run() })
		ipRun(t, "addr", "add", side.prefix+".1/24", "dev", side.here)
		ipRun(t, "link", "set", side.here, "up", "multicast", "on")
		ipRun(t, "route", "add", "224.0.0.0/4", "dev", side.here, "metric", strconv.Itoa(10+i))
		cmds := []string{"link set lo up"}
		for _, a := range side.addrs {
			cmds = append(cmds, fmt.Sprintf("addr add %s.%s/24 dev %s", side.prefix, a, side.there))
		}
		cmds = append(cmds,
			fmt.Sprintf("link set %s up multicast on", side.there),
			fmt.Sprintf("route add default via %s.1", side.prefix),
			fmt.Sprintf("route add 224.0.0.0/4 dev %s", side.there))
		if err := side.ns.IP(cmds...); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// newNamespace makes a network namespace that is gone when the test ends.
func newNamespace(t *testing.T) *netns.Namespace {
	t.Helper()
	ns, err := netns.NewNamespace()
	if err != nil {
		t.Fatalf("namespace: %v", err)
	}
	t.Cleanup(ns.Close)
	return ns
}

// ipRun runs ip in the test's namespace.
func ipRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func writeSysctl(t *testing.T, key, value string) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
		t.Fatalf("sysctl %s: %v", key, err)
	}
}

// subnetNode runs a harness node of cfg in ns (nil: the test's namespace,
// the router), printing what its discovery finds, and waits until it has
// started.
func subnetNode(t *testing.T, ns *netns.Namespace, cfg node.Config) *node.Proc {
	t.Helper()
	cfg.DiscoveryEvents = true
	if ns == nil {
		return startNode(t, cfg)
	}
	return startNodeIn(t, ns, cfg)
}

// awaitEvent returns p's first event, from its start, that match accepts,
// failing t after d.
func awaitEvent(t *testing.T, p *node.Proc, d time.Duration, what string, match func(node.Event) bool) node.Event {
	t.Helper()
	e, ok := p.WaitEvent(d, match)
	if !ok {
		t.Fatalf("node %s: no %s within %v (exited: %v); its last events:\n%s", p, what, d, p.Exited(), p.Log(40))
	}
	return e
}

// eventsWhere returns p's events so far that match accepts.
func eventsWhere(p *node.Proc, match func(node.Event) bool) []node.Event {
	return slices.DeleteFunc(p.Events(), func(e node.Event) bool { return !match(e) })
}

// found matches a discovery report of the peer id.
func found(id string) func(node.Event) bool {
	return func(e node.Event) bool { return e.Ev == "found" && e.Peer == id }
}

// awaitPeers waits until p's peers are exactly ids, as its peer-up and
// peer-down events tell, and returns when they became so.
func awaitPeers(t *testing.T, p *node.Proc, d time.Duration, ids ...string) time.Time {
	t.Helper()
	want := slices.Sorted(slices.Values(ids))
	peers := map[string]bool{}
	e := awaitEvent(t, p, d, fmt.Sprintf("peers %v", want), func(e node.Event) bool {
		switch e.Ev {
		case "peer-up":
			peers[e.Peer] = true
		case "peer-down":
			delete(peers, e.Peer)
		default:
			return false
		}
		return slices.Equal(slices.Sorted(maps.Keys(peers)), want)
	})
	return e.Time()
}
