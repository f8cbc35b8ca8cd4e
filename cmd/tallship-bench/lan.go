package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/testutil/node"
)

// A lan is a small LAN built inside the benchmark's private namespace, for
// the delivery group's measures that need a wire to break: each host a
// network namespace of its own with one veth ("ts0") to a bridge in
// another, and an nftables rule on the bridge that drops a share of the
// frames it forwards (the kernel has no netem), or all of them (a cut
// cable). The benchmark's own namespace, where its in-process nodes run,
// can be joined to the bridge too (join). Nothing on it can reach a real
// interface: every namespace is new, made from within the benchmark's,
// and holds only loopback and those veths.
type lan struct {
	bridge *netns.Namespace
	hosts  []*netns.Namespace
	procs  []*node.Proc
}

// The LAN's addresses and names.
const (
	lanSubnet = "10.78.0."        // host i is lanSubnet + (i+1), /24
	lanSelfIP = lanSubnet + "254" // the benchmark's own namespace, once joined
	lanSelf   = "tsb0"            // the benchmark's own namespace's veth, once joined
	lanBridge = "tsbr"
	lanTable  = "tsbench_lan" // the bridge's nftables table
)

// newLAN builds a LAN of n hosts joined by one bridge whose nftables
// table starts with no loss.
func newLAN(n int) (*lan, error) {
	l := &lan{}
	var err error
	if l.bridge, err = netns.NewNamespace(); err != nil {
		return nil, fmt.Errorf("bridge namespace: %w", err)
	}
	if err := l.bridge.Sysctl(map[string]string{"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"}); err != nil {
		l.close()
		return nil, err
	}
	setup := []string{"link set lo up", "link add " + lanBridge + " type bridge"}
	for i := range n {
		h, err := netns.NewNamespace()
		if err != nil {
			l.close()
			return nil, fmt.Errorf("host namespace: %w", err)
		}
		l.hosts = append(l.hosts, h)
		// DAD off before the veth arrives: a new interface takes the
		// namespace's defaults.
		if err := h.Sysctl(map[string]string{"net/ipv6/conf/all/accept_dad": "0", "net/ipv6/conf/default/accept_dad": "0"}); err != nil {
			l.close()
			return nil, err
		}
		port := fmt.Sprintf("tsh%d", i)
		setup = append(setup,
			fmt.Sprintf("link add %s type veth peer name ts0 netns %d", port, h.Pid()),
			fmt.Sprintf("link set %s master %s", port, lanBridge),
			fmt.Sprintf("link set %s up", port))
	}
	setup = append(setup, "link set "+lanBridge+" up")
	if err := l.bridge.IP(setup...); err != nil {
		l.close()
		return nil, err
	}
	for i, h := range l.hosts {
		if err := h.IP("link set lo up",
			fmt.Sprintf("addr add %s/24 dev ts0", l.ip(i)),
			"link set ts0 up multicast on",
			"route add 224.0.0.0/4 dev ts0"); err != nil {
			l.close()
			return nil, err
		}
	}
	if err := l.bridge.Run("table bridge "+lanTable+" {\n"+
		"\tchain forward { type filter hook forward priority 0; policy accept; }\n}\n", "nft", "-f", "-"); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// join joins the benchmark's own namespace to the bridge: a veth
// (lanSelf) with the address lanSelfIP, without multicast (mDNS stays on
// loopback) or IPv6. A node of this process started after it advertises
// lanSelfIP first: links among such nodes stay on loopback, their links
// to a host of the LAN cross the bridge, both ways.
func (l *lan) join() error {
	cmd := exec.Command("ip", "link", "add", lanSelf, "type", "veth", "peer", "name", "tshs", "netns", strconv.Itoa(l.bridge.Pid()))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip link add %s: %v: %s", lanSelf, err, strings.TrimSpace(string(out)))
	}
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+lanSelf+"/disable_ipv6", []byte("1\n"), 0); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "set", lanSelf, "multicast", "off"},
		{"addr", "add", lanSelfIP + "/24", "dev", lanSelf},
		{"link", "set", lanSelf, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return l.bridge.IP("link set tshs master "+lanBridge, "link set tshs up")
}

// ip is host i's address.
func (l *lan) ip(i int) string { return lanSubnet + strconv.Itoa(i+1) }

// start starts a helper node of cfg on host i, listening on its address
// and running mDNS on its veth.
func (l *lan) start(i int, cfg node.Config) (*node.Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cfg.Listen, cfg.Ifaces = l.ip(i)+":0", []string{"ts0"}
	p, err := node.Start(l.hosts[i].Command(self, append([]string{"-helper", "node"}, cfg.Args()...)...))
	if err != nil {
		return nil, fmt.Errorf("node on host %d: %w", i, err)
	}
	p.Name = "h" + strconv.Itoa(i)
	l.procs = append(l.procs, p)
	return p, nil
}

// selfAddr is the address at which a host reaches b, a node of this
// process started after join.
func selfAddr(b *benchNode) string {
	var port uint16
	if addrs := b.Addrs(); len(addrs) > 0 {
		port = addrs[0].Port()
	}
	return netip.AddrPortFrom(netip.MustParseAddr(lanSelfIP), port).String()
}

// setLoss makes the bridge drop each frame it forwards with the chance
// percent (0: none; 100: every frame, a cut cable), and counts what it
// drops from then on.
func (l *lan) setLoss(percent int) error {
	script := "flush chain bridge " + lanTable + " forward\n"
	switch {
	case percent >= 100:
		script += "add rule bridge " + lanTable + " forward counter drop\n"
	case percent > 0:
		script += fmt.Sprintf("add rule bridge %s forward numgen random mod 100 < %d counter drop\n", lanTable, percent)
	}
	return l.bridge.Run(script, "nft", "-f", "-")
}

// dropped returns how many frames the bridge has dropped since setLoss.
func (l *lan) dropped() int {
	out, err := l.bridge.Command("nft", "list", "chain", "bridge", lanTable, "forward").CombinedOutput()
	if err != nil {
		return -1
	}
	n := -1
	if _, after, ok := strings.Cut(string(out), "counter packets "); ok {
		fmt.Sscanf(after, "%d", &n)
	}
	return n
}

// close kills the nodes and then the namespaces' holders: with their last
// process, the namespaces, veths (the joined one too) and bridge are
// gone.
func (l *lan) close() {
	for _, p := range l.procs {
		p.Kill()
	}
	for _, h := range l.hosts {
		h.Close()
	}
	if l.bridge != nil {
		l.bridge.Close()
	}
}
