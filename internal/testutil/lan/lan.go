// Package lan builds a private LAN of network namespaces for multi-host
// tests: N hosts, each a namespace with one veth to a bridge that lives in
// a namespace of its own, real mesh processes on the hosts (the test-node
// harness, internal/testutil/node), and faults to inject: kill -9, a cut
// link, a partition, frame loss.
//
// Nothing it makes can reach a real interface. New refuses to run outside
// the test binary's own private namespace (internal/testutil/netns, which
// must be the caller's TestMain). Every host and the bridge are brand-new
// network namespaces (netns.Namespace: made by clone(CLONE_NEWNET) and held
// open by a "sleep" process), so they hold only loopback and the veths
// made here; the addresses (10.77.0.0/24) exist only in them. No namespace
// is named under /var/run/netns: nothing is shared with the machine, and
// nothing outlives the test. Cleanup kills the processes and then the
// holders, and every process is started with a parent-death signal from a
// thread that lives as long as the test binary (netns.Spawn), so a test
// that fails, panics, times out or is interrupted leaves nothing behind
// either: the kernel kills them all and the namespaces go with their last
// process.
//
//	l := lan.New(t, 8)
//	p := l.Start(l.Host(0), node.Config{Cluster: "c"})
//	l.Cut(l.Host(3)) ...
//
// It needs root in the test's namespace, which netns.Main also gives an
// ordinary user (a user namespace of its own), and iproute2, nsenter and
// sleep; Partition and Loss also need nft. Where one is missing, the test
// skips and says which.
package lan

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// Subnet is the private range the hosts' addresses come from. It exists
// only inside the namespaces of a LAN.
var Subnet = netip.MustParsePrefix("10.77.0.0/24")

// MaxHosts bounds a LAN's size.
const MaxHosts = 200

// Interface names. A host's veth is HostIface in its namespace; its other
// end, in the bridge's namespace, is "tsh<index>" on the bridge "tsbr".
const (
	HostIface = "ts0"
	bridgeDev = "tsbr"
)

// LAN is a private LAN of hosts joined by one bridge. Its methods are for
// the test's goroutine; they fail the test on error.
type LAN struct {
	t      testing.TB
	bridge *netns.Namespace
	hosts  []*Host

	mu      sync.Mutex
	procs   []*Proc
	nftMade bool // the nftables table exists
}

// Host is one host of a LAN: a network namespace with one interface,
// HostIface, on the LAN.
type Host struct {
	lan *LAN
	ns  *netns.Namespace
	// Index is the host's position in the LAN, from 0.
	Index int
	// Name is "h<Index>", for logs.
	Name string
	// IP is the host's address on the LAN.
	IP netip.Addr
	// port is the bridge-side end of the host's veth.
	port string
}

func (h *Host) String() string { return h.Name + "(" + h.IP.String() + ")" }

// New builds a LAN of n hosts, each with its address from Subnet (host i
// has .i+1), IPv4 multicast routed to its interface and IPv6 duplicate
// address detection off. It is torn down when the test ends. New skips t
// when the test does not run in a private namespace, is not root there,
// or a tool is missing.
func New(t testing.TB, n int) *LAN {
	t.Helper()
	netns.Require(t)
	if n < 1 || n > MaxHosts {
		t.Fatalf("lan: %d hosts (1 to %d)", n, MaxHosts)
	}
	Require(t)
	l := &LAN{t: t}
	t.Cleanup(l.teardown)

	var err error
	if l.bridge, err = netns.NewNamespace(); err != nil {
		t.Fatalf("lan: bridge namespace: %v", err)
	}
	// The bridge's namespace forwards frames only: no IPv6 of its own.
	bridgeSetup := []string{
		"link set lo up",
		"link add " + bridgeDev + " type bridge",
	}
	if err := l.bridge.Sysctl(map[string]string{"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"}); err != nil {
		t.Fatalf("lan: %v", err)
	}
	for i := range n {
		ns, err := netns.NewNamespace()
		if err != nil {
			t.Fatalf("lan: host namespace: %v", err)
		}
		ip := Subnet.Addr().As4()
		ip[3] = byte(i + 1)
		h := &Host{lan: l, ns: ns, Index: i, Name: fmt.Sprintf("h%d", i), IP: netip.AddrFrom4(ip), port: fmt.Sprintf("tsh%d", i)}
		l.hosts = append(l.hosts, h)
		// DAD off before the veth arrives: a new interface takes the
		// namespace's defaults.
		if err := ns.Sysctl(map[string]string{"net/ipv6/conf/all/accept_dad": "0", "net/ipv6/conf/default/accept_dad": "0"}); err != nil {
			t.Fatalf("lan: %s: %v", h.Name, err)
		}
		bridgeSetup = append(bridgeSetup,
			fmt.Sprintf("link add %s type veth peer name %s netns %d", h.port, HostIface, ns.Pid()),
			fmt.Sprintf("link set %s master %s", h.port, bridgeDev),
			fmt.Sprintf("link set %s up", h.port))
	}
	bridgeSetup = append(bridgeSetup, "link set "+bridgeDev+" up")
	if err := l.bridge.IP(bridgeSetup...); err != nil {
		t.Fatalf("lan: bridge: %v", err)
	}
	for _, h := range l.hosts {
		err := h.ns.IP(
			"link set lo up",
			fmt.Sprintf("addr add %s/%d dev %s", h.IP, Subnet.Bits(), HostIface),
			fmt.Sprintf("link set %s up multicast on", HostIface),
			fmt.Sprintf("route add 224.0.0.0/4 dev %s", HostIface))
		if err != nil {
			t.Fatalf("lan: %s: %v", h.Name, err)
		}
	}
	t.Logf("lan: %d hosts on %s, bridge namespace %s", n, Subnet, l.bridge.Path())
	return l
}

// Require skips t unless this process can build a LAN: root (in the
// test's namespace) and the tools it runs.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lan: needs root in the test's namespace (netns.Main) to make network namespaces")
	}
	for _, tool := range []string{"ip", "nsenter", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("lan: needs %s (iproute2, util-linux, coreutils): %v", tool, err)
		}
	}
}

// RequireNFT skips t unless nft (Debian's nftables package) is installed;
// Partition and Loss need it. Call it before New to skip early.
func RequireNFT(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("lan: needs nft for partitions and frame loss (apt-get install nftables)")
	}
}

// Hosts returns the LAN's hosts, in order.
func (l *LAN) Hosts() []*Host { return append([]*Host(nil), l.hosts...) }

// Host returns host i.
func (l *LAN) Host(i int) *Host { return l.hosts[i] }

// teardown kills every process and then the namespaces' holders: with
// their last process, the namespaces, veths and bridge are gone.
func (l *LAN) teardown() {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for _, p := range procs {
		p.Signal(syscall.SIGKILL)
	}
	failed := l.t.Failed()
	for _, p := range procs {
		if !p.WaitExit(5 * time.Second) {
			l.t.Errorf("lan: %s did not exit after SIGKILL", p)
		}
		if failed || os.Getenv("TALLSHIP_DEBUG") != "" {
			l.t.Logf("lan: last events of %s:\n%s", p, p.Log(40))
			if out := p.Stderr(); out != "" {
				l.t.Logf("lan: stderr of %s:\n%s", p, out)
			}
		}
	}
	for _, h := range l.hosts {
		h.ns.Close()
	}
	if l.bridge != nil {
		l.bridge.Close()
	}
}
