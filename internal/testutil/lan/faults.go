package lan

import (
	"fmt"
	"strings"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/node"
)

// Faults. Cut and Mend work with iproute2 alone; Partition, Heal and Loss
// filter frames with nftables on the bridge (the kernel has no netem) and
// skip the test when nft is missing; Delay is a proxy in user space.
// Killing a node and restarting it are Proc.Kill and LAN.Start.

// nftTable is the bridge-family table the faults live in: the forward
// hook sees every frame the bridge passes from one port to another,
// flooded multicast once per output port.
const nftTable = `table bridge tslan {
	chain partition {}
	chain loss {}
	chain forward {
		type filter hook forward priority 0; policy accept;
		jump partition
		jump loss
	}
}
`

// Cut takes a host off the LAN without a word: the bridge's end of its
// veth goes down, so nothing it sends arrives and nothing reaches it, and
// its peers get no FIN or reset.
func (l *LAN) Cut(h *Host) {
	l.t.Helper()
	if err := l.bridge.IP("link set " + h.port + " down"); err != nil {
		l.t.Fatalf("lan: cut %s: %v", h, err)
	}
	l.t.Logf("lan: cut %s", h)
}

// Mend puts a cut host back on the LAN and restores its multicast route.
func (l *LAN) Mend(h *Host) {
	l.t.Helper()
	if err := l.bridge.IP("link set " + h.port + " up"); err != nil {
		l.t.Fatalf("lan: mend %s: %v", h, err)
	}
	if err := h.ns.IP("route replace 224.0.0.0/4 dev " + HostIface); err != nil {
		l.t.Fatalf("lan: mend %s: %v", h, err)
	}
	l.t.Logf("lan: mended %s", h)
}

// nft runs an nft script in the bridge's namespace, making the table
// first.
func (l *LAN) nft(script string) {
	l.t.Helper()
	RequireNFT(l.t)
	l.mu.Lock()
	made := l.nftMade
	l.nftMade = true
	l.mu.Unlock()
	if !made {
		script = nftTable + script
	}
	if err := l.bridge.Run(script, "nft", "-f", "-"); err != nil {
		l.t.Fatalf("lan: nft: %v\nscript:\n%s", err, script)
	}
}

// Partition splits the LAN: no frame passes between a host of a and a
// host of b. Hosts in neither group keep reaching both. A new Partition
// replaces the last one.
func (l *LAN) Partition(a, b []*Host) {
	l.t.Helper()
	pa, pb := ports(a), ports(b)
	l.nft(fmt.Sprintf("flush chain bridge tslan partition\n"+
		"add rule bridge tslan partition iifname %s oifname %s drop\n"+
		"add rule bridge tslan partition iifname %s oifname %s drop\n", pa, pb, pb, pa))
	l.t.Logf("lan: partition %v | %v", names(a), names(b))
}

// Heal ends the partition.
func (l *LAN) Heal() {
	l.t.Helper()
	l.nft("flush chain bridge tslan partition\n")
	l.t.Logf("lan: healed")
}

// Loss makes the bridge drop each frame with the given chance, in
// percent, in every direction; 0 drops none.
func (l *LAN) Loss(percent int) {
	l.t.Helper()
	if percent < 0 || percent > 100 {
		l.t.Fatalf("lan: loss of %d%%", percent)
	}
	script := "flush chain bridge tslan loss\n"
	if percent > 0 {
		script += fmt.Sprintf("add rule bridge tslan loss numgen random mod 100 < %d counter drop\n", percent)
	}
	l.nft(script)
	l.t.Logf("lan: frame loss %d%%", percent)
}

// Dropped returns how many frames Loss has dropped since it was last
// set.
func (l *LAN) Dropped() int {
	l.t.Helper()
	RequireNFT(l.t)
	cmd := l.bridge.Command("nft", "list", "chain", "bridge", "tslan", "loss")
	out, err := cmd.CombinedOutput()
	if err != nil {
		l.t.Fatalf("lan: nft list: %v: %s", err, out)
	}
	var n int
	if _, after, ok := strings.Cut(string(out), "counter packets "); ok {
		fmt.Sscanf(after, "%d", &n)
	}
	return n
}

// Delay starts a TCP proxy on h that forwards to target (host:port on
// the LAN) with d of latency in each direction, and returns its address:
// a node told to Connect to it gets a slow link. (The kernel has no
// netem, so delay is in user space and only for links made through the
// proxy.) The proxy is stopped when the test ends.
func (l *LAN) Delay(h *Host, target string, d time.Duration) string {
	l.t.Helper()
	p, err := l.TryStart(h, node.Config{Proxy: fmt.Sprintf("listen=%s:0,to=%s,delay=%s", h.IP, target, d)})
	if err != nil {
		l.t.Fatalf("lan: delay proxy on %s: %v", h, err)
	}
	l.t.Logf("lan: %s → %s delayed %v each way", p.Addrs[0], target, d)
	return p.Addrs[0]
}

// ports is the nft set of the bridge ports of hosts.
func ports(hosts []*Host) string {
	var q []string
	for _, h := range hosts {
		q = append(q, `"`+h.port+`"`)
	}
	return "{ " + strings.Join(q, ", ") + " }"
}

func names(hosts []*Host) []string {
	var n []string
	for _, h := range hosts {
		n = append(n, h.Name)
	}
	return n
}
