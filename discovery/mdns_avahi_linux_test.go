package discovery_test

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/avahi"
	"github.com/tallship-go/tallship/internal/testutil/lan"
	"github.com/tallship-go/tallship/internal/testutil/node"
)

// Interop with avahi-daemon (internal/testutil/avahi) on a private LAN
// (internal/testutil/lan) of three hosts:
//
//	h0  avahi-daemon beside a tallship node: both bind UDP port 5353
//	h1  avahi-daemon only, publishing an _ipp._tcp service and, under the
//	    cluster subtype, a service with a tallship TXT
//	h2  tallship nodes only: one of the cluster, one of another cluster
//
// The tallship nodes are harness nodes (internal/testutil/node: mesh.Join
// with mDNS on the host's interface), so this is an external test: that
// harness imports discovery. The subtype name is computed here from
// docs/protocol.md, not taken from the package.
//
// What avahi 0.8 does that shapes this test: it ignores loopback, so
// everything runs on the LAN's veths; avahi-browse --parsable shows each
// instance once per interface and protocol mDNS ran over (IPv4, IPv6),
// resolved (=) to the first address it has of the SRV target, of either
// family, with the instance name's bytes other than letters, digits, '-'
// and '_' escaped and the TXT strings in the reverse of their order on
// the wire; --all browses the types service type enumeration lists. A
// tallship node is known here by the id in its TXT record: its instance
// label is the engine's to choose.

// avahiSubtype is the DNS-SD subtype a tallship node of cluster is
// browsable under: "_" and the first 80 bits of the SHA-256 of the name
// in lower-case base32 without padding (docs/protocol.md).
func avahiSubtype(cluster string) string {
	sum := sha256.Sum256([]byte(cluster))
	enc := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	return "_" + enc.EncodeToString(sum[:10]) + "._sub._tallship._tcp"
}

// TestAvahiInterop checks, on the LAN above:
//   - avahi beside a tallship node (h0): while the node runs, avahi-browse
//     --all there lists and resolves a service avahi publishes on another
//     host (h1), a tallship node of another host (h2) and the tallship
//     node beside it; and the tallship node there still finds and links
//     to the tallship node of h2;
//   - avahi on another host (h1): avahi-browse of _tallship._tcp lists and
//     resolves every tallship node of the LAN over IPv4 and IPv6, each to
//     its host name, port, address and TXT strings; of the cluster
//     subtype, only the cluster's nodes;
//   - a service avahi publishes under the cluster subtype with a tallship
//     TXT is found by the cluster's tallship nodes, at its port and
//     address: avahi's packets are understood, not dropped.
func TestAvahiInterop(t *testing.T) {
	avahi.Require(t)
	const (
		cluster   = "avahi-interop"
		peerID    = "avahi-peer"
		peerPort  = 7601
		printer   = "remote printer"
		printerTy = "_ipp._tcp"
	)
	subtype := avahiSubtype(cluster)
	l := lan.New(t, 3)
	h0, h1, h2 := l.Host(0), l.Host(1), l.Host(2)
	ifaces := []string{lan.HostIface}
	av0 := avahi.Launch(t, h0, avahi.Config{HostName: "avahi-h0", Interfaces: ifaces})
	av1 := avahi.Launch(t, h1, avahi.Config{HostName: "avahi-h1", Interfaces: ifaces})
	// h2 has an IPv6 address on the LAN besides its IPv4 one (the LAN's
	// hosts have only link-local ones, which a node does not announce),
	// and its node of the cluster listens on every address: it announces
	// an AAAA record as well as an A record. The others listen on the
	// LAN's IPv4 address only, and announce that alone.
	h2v6 := netip.MustParseAddr("fd77::3")
	if out, err := h2.Command("ip", "addr", "add", h2v6.String()+"/64", "dev", lan.HostIface, "nodad").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add on %s: %v: %s", h2, err, out)
	}
	n2 := l.Start(h2, node.Config{Cluster: cluster, ID: "node-h2", DiscoveryEvents: true, Listen: ":0"})
	o2 := l.Start(h2, node.Config{Cluster: "avahi-other", ID: "other-h2"})
	// The node on h0 starts once avahi runs there, as on a desktop where
	// avahi starts at boot: the node's socket is the last bound to port
	// 5353, the one that unicast to the port reaches (mdns_socket.go).
	av0.WaitStarted(t)
	n0 := l.Start(h0, node.Config{Cluster: cluster, ID: "node-h0", DiscoveryEvents: true})
	av1.WaitStarted(t)
	av1.Publish(t,
		avahi.Service{Name: printer, Type: printerTy, Port: 631, TXT: []string{"rp=queue"}},
		avahi.Service{Name: peerID, Type: "_tallship._tcp", Port: peerPort, Subtypes: []string{subtype},
			TXT: []string{"v=1", "c=" + cluster, "i=" + peerID}})

	type want struct {
		p    *lan.Proc
		host *lan.Host
		txt  []string // sorted
	}
	nodes := map[string]want{}
	for _, w := range []want{{n0, h0, nil}, {n2, h2, nil}, {o2, h2, nil}} {
		cl := cluster
		if w.p == o2 {
			cl = "avahi-other"
		}
		w.txt = slices.Sorted(slices.Values([]string{"v=1", "c=" + cl, "i=" + w.p.ID}))
		nodes[w.p.ID] = w
	}
	// A node is known by the id in its TXT record: its instance name is
	// the engine's to choose (a DNS label made from the id).
	byID := func(id, proto string) func(avahi.Entry) bool {
		return func(e avahi.Entry) bool {
			return e.Event == "=" && e.Type == "_tallship._tcp" && e.Protocol == proto && slices.Contains(e.TXT, "i="+id)
		}
	}
	service := func(name, typ, proto string) func(avahi.Entry) bool {
		return func(e avahi.Entry) bool {
			return e.Event == "=" && e.Name == name && e.Type == typ && e.Protocol == proto
		}
	}
	// checkNode checks a resolved entry of the tallship node id.
	checkNode := func(t *testing.T, id string, e avahi.Entry) {
		t.Helper()
		w := nodes[id]
		port := addrPort(t, w.p.Addrs[0]).Port()
		if e.Host != e.Name+".tallship.local" || e.Port != int(port) {
			t.Errorf("%v: want host %s.tallship.local port %d", e, e.Name, port)
		}
		if txt := slices.Sorted(slices.Values(e.TXT)); !slices.Equal(txt, w.txt) {
			t.Errorf("%v: TXT %q, want %q (in any order)", e, e.TXT, w.txt)
		}
		// A node sends its A and AAAA records both, over either
		// protocol, and avahi resolves to whichever it has first.
		if a, err := netip.ParseAddr(e.Addr); err != nil || a != w.host.IP && (w.p != n2 || a != h2v6) {
			t.Errorf("%v: address %v, want one of the node's", e, e.Addr)
		}
	}
	has := func(es []avahi.Entry, match ...func(avahi.Entry) bool) bool {
		for _, m := range match {
			if !slices.ContainsFunc(es, m) {
				return false
			}
		}
		return true
	}
	pick := func(es []avahi.Entry, m func(avahi.Entry) bool) avahi.Entry { return es[slices.IndexFunc(es, m)] }

	t.Run("avahi beside a tallship node sees remote services", func(t *testing.T) {
		b := av0.Browse(t, "--all")
		es := b.WaitFor(t, 5*time.Second, "h1's printer, h2's and h0's tallship nodes", func(es []avahi.Entry) bool {
			return has(es, service(printer, printerTy, "IPv4"), byID(n2.ID, "IPv4"), byID(n0.ID, "IPv4"))
		})
		// avahi publishes its host's AAAA record (link-local) over IPv4
		// too, so that is where it may resolve it.
		if e := pick(es, service(printer, printerTy, "IPv4")); e.Host != "avahi-h1.local" || e.Port != 631 || !isHostAddr(e.Addr, h1) {
			t.Errorf("%v: want avahi-h1.local [%s or link-local] port 631", e, h1.IP)
		}
		checkNode(t, n2.ID, pick(es, byID(n2.ID, "IPv4")))
		checkNode(t, n0.ID, pick(es, byID(n0.ID, "IPv4")))
	})

	t.Run("a tallship node beside avahi finds remote nodes", func(t *testing.T) {
		lan.Eventually(t, 5*time.Second, "linked", func() error { return lan.FullMesh(n0, n2) })
		if _, ok := n0.WaitEvent(5*time.Second, func(e node.Event) bool { return e.Ev == "found" && e.Peer == n2.ID }); !ok {
			t.Errorf("h0's node: mDNS never reported h2's node; events: %v", n0.Events())
		}
	})

	t.Run("avahi on another host resolves tallship nodes", func(t *testing.T) {
		b := av1.Browse(t, "_tallship._tcp")
		var match []func(avahi.Entry) bool
		for id := range nodes {
			match = append(match, byID(id, "IPv4"), byID(id, "IPv6"))
		}
		es := b.WaitFor(t, 5*time.Second, "every tallship node resolved over IPv4 and IPv6", func(es []avahi.Entry) bool {
			return has(es, match...)
		})
		for id, w := range nodes {
			for _, proto := range []string{"IPv4", "IPv6"} {
				checkNode(t, id, pick(es, byID(id, proto)))
			}
			// The host name resolves by its A record, and h2's node's
			// by its AAAA record too.
			host := pick(es, byID(id, "IPv4")).Host
			if a := av1.ResolveHost(t, host, false); a != w.host.IP {
				t.Errorf("avahi resolves %s to %v, want %v", host, a, w.host.IP)
			}
			if w.p != n2 {
				continue
			}
			if a := av1.ResolveHost(t, host, true); a != h2v6 {
				t.Errorf("avahi resolves %s by AAAA to %v, want %v", host, a, h2v6)
			}
		}
	})

	t.Run("avahi browses the cluster subtype", func(t *testing.T) {
		b := av1.Browse(t, subtype)
		es := b.WaitFor(t, 5*time.Second, "the cluster's nodes under its subtype", func(es []avahi.Entry) bool {
			return has(es, byID(n0.ID, "IPv4"), byID(n2.ID, "IPv4"))
		})
		for _, e := range es {
			if slices.Contains(e.TXT, "i="+o2.ID) {
				t.Errorf("the subtype of %q lists a node of another cluster: %v", cluster, e)
			}
		}
	})

	t.Run("tallship nodes find a service avahi publishes under their subtype", func(t *testing.T) {
		// avahi announces the A record over IPv4 and the AAAA record
		// over IPv6: the addresses may come in two reports.
		want := netip.AddrPortFrom(h1.IP, peerPort).String()
		for _, p := range []*lan.Proc{n0, n2} {
			e, ok := p.WaitEvent(5*time.Second, func(e node.Event) bool {
				return e.Ev == "found" && e.Peer == peerID && slices.Contains(e.Addrs, want)
			})
			if !ok {
				t.Errorf("%s: mDNS never reported avahi's %s at %s; events: %v", p, peerID, want, p.Events())
				continue
			}
			for _, a := range e.Addrs {
				if ap := addrPort(t, a); a != want && (!ap.Addr().IsLinkLocalUnicast() || ap.Port() != peerPort) {
					t.Errorf("%s: mDNS reported %s at %v, want %s and IPv6 link-local addresses only", p, peerID, e.Addrs, want)
				}
			}
		}
		for _, p := range []*lan.Proc{n0, n2, o2} {
			for _, e := range p.Events() {
				if e.Ev == "discovery-error" || (p == o2 && e.Ev == "found" && e.Peer == peerID) {
					t.Errorf("%s: %+v", p, e)
				}
			}
		}
	})
}

// isHostAddr reports whether s is h's IPv4 address or an IPv6 link-local
// address, which is all an avahi of the LAN publishes.
func isHostAddr(s string, h *lan.Host) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && (a == h.IP || a.IsLinkLocalUnicast())
}

func addrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	return ap
}

// TestAvahiServiceOfAnotherHost publishes, through avahi on h1, a service
// under the cluster subtype with a tallship TXT whose SRV target is a
// host name whose address avahi on h0 publishes (avahi-publish --host
// and --address: a proxy publishing for a device, RFC 6763 allows any
// target). h1's announcements and answers then carry the PTR, SRV and TXT
// records but no address record, which travels only in h0's packets: its
// announcements and its answers to queries for the name. A tallship node
// on h2, running before both are published, must find the service at
// that address: RFC 6763 §12 asks a client to work with responders that
// leave the additional records out, by asking for them.
func TestAvahiServiceOfAnotherHost(t *testing.T) {
	avahi.Require(t)
	const (
		cluster = "avahi-relay"
		id      = "relayed"
		port    = 7611
		target  = "relayed-device.local"
	)
	l := lan.New(t, 3)
	h0, h1, h2 := l.Host(0), l.Host(1), l.Host(2)
	ifaces := []string{lan.HostIface}
	av0 := avahi.Launch(t, h0, avahi.Config{HostName: "avahi-h0", Interfaces: ifaces})
	av1 := avahi.Launch(t, h1, avahi.Config{HostName: "avahi-h1", Interfaces: ifaces})
	n := l.Start(h2, node.Config{Cluster: cluster, ID: "node-h2", DiscoveryEvents: true})
	av0.WaitStarted(t)
	av1.WaitStarted(t)
	av0.PublishAddress(t, target, h0.IP)
	av1.Publish(t, avahi.Service{Name: id, Type: "_tallship._tcp", Port: port, Host: target,
		Subtypes: []string{avahiSubtype(cluster)}, TXT: []string{"v=1", "c=" + cluster, "i=" + id}})
	// A querier that asks for what an answer leaves out, avahi, resolves
	// it.
	es := av1.Browse(t, avahiSubtype(cluster)).WaitFor(t, 5*time.Second, "avahi resolves the service", func(es []avahi.Entry) bool {
		return slices.ContainsFunc(es, func(e avahi.Entry) bool { return e.Event == "=" && e.Name == id && e.Protocol == "IPv4" })
	})
	for _, e := range es {
		if e.Event == "=" && e.Name == id && (e.Host != target || e.Addr != h0.IP.String() || e.Port != port) {
			t.Errorf("avahi resolves %v, want %s [%s] port %d", e, target, h0.IP, port)
		}
	}
	want := netip.AddrPortFrom(h0.IP, port).String()
	if _, ok := n.WaitEvent(5*time.Second, func(e node.Event) bool {
		return e.Ev == "found" && e.Peer == id && slices.Contains(e.Addrs, want)
	}); !ok {
		t.Errorf("mDNS never reported the service %s at %s (its SRV target %s's address); events: %v", id, want, target, n.Events())
	}
}
