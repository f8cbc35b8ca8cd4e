// Package discovery finds the peers of a tallship cluster and makes a node
// known to them.
//
// A Discoverer runs until its context is cancelled and reports peers as
// Events: Found (a new peer, or new addresses) and Lost (a goodbye, or
// records that lapsed). Several can run at once; the mesh merges them.
//
// MDNS, the default, works on the local network with no configuration:
//
//	err := (&discovery.MDNS{}).Run(ctx, discovery.Self{
//		Cluster: "my-cluster",
//		ID:      id,
//		Port:    port,
//	}, func(ev discovery.Event) {
//		queue.Push(ev) // report must not block: hand the event on
//	})
//
// Every field of MDNS has a documented default; a fully configured one:
//
//	d := &discovery.MDNS{
//		Interfaces:  []net.Interface{*eth0}, // default: every multicast interface
//		DisableIPv6: true,                   // default: IPv4 and IPv6
//		TTL:         30 * time.Second,       // default: 120 s; re-announced at half
//		QueryMin:    time.Second,            // default: 1 s after the first query
//		QueryMax:    time.Minute,            // default: 60 s at steady state
//		Logger:      slog.Default(),
//	}
//
// Static reports a fixed list of addresses, for peers that multicast does
// not reach; the handshake then tells their ids:
//
//	d := &discovery.Static{
//		Addrs:    []string{"10.0.0.7:7946", "db.example:7946"},
//		Interval: 5 * time.Second, // default; reported again so the mesh retries
//	}
//
// DNS reports the targets of a name's SRV records (Consul, a Kubernetes
// headless Service, a zone file), looked up through net.Resolver:
//
//	d := &discovery.DNS{
//		Name:     "tallship.service.consul",
//		Server:   "127.0.0.1:8600", // default: the servers of /etc/resolv.conf
//		Interval: 5 * time.Second,  // default; a target gone from the answer is Lost
//		Timeout:  2 * time.Second,  // default: one exchange with a server
//	}
//
// # On the wire
//
// MDNS publishes a node as a DNS-SD instance of _tallship._tcp under a
// subtype that hashes the cluster name:
//
//	_<hash>._sub._tallship._tcp.local.  PTR  <label>._tallship._tcp.local.
//	<label>._tallship._tcp.local.       SRV  <port> <label>.tallship.local.
//	<label>._tallship._tcp.local.       TXT  "v=1" "c=<cluster>" "i=<id>"
//	<label>.tallship.local.             A, AAAA
//
// <hash> is 80 bits of the SHA-256 of the cluster name in base32; <label>
// is the node id when that is a DNS-safe label, else a hash of it. TXT
// values are raw bytes in chunks of at most 253 bytes; a cluster name over
// 320 bytes travels as its SHA-256 ("ch=<hex>"). A receiver checks TXT
// against its own cluster, so clusters whose hashes collide never mix.
//
// The PTR is published under the base type _tallship._tcp too, and
// service type enumeration lists _tallship._tcp, so avahi-browse -a,
// python-zeroconf and Bonjour browsers see tallship nodes.
//
// A node announces its records twice at start (0 s and 1 s) and sends its
// first browse query 20–120 ms later (asking for unicast answers), so that
// a new node and the running ones learn of each other within
// milliseconds. It then re-announces at half the TTL (default 120 s),
// browses again after 1 s and then at doubling intervals up to 60 s
// (never under 2 s per node known), listing the answers it knows so that
// only what it lacks is sent, asks a peer by name for its records at 80%
// and 90% of their life, reports Lost when they lapse, and withdraws its
// own with a goodbye (TTL 0) when Run ends. It answers as RFC 6762 asks:
// multicast to QM questions, unicast to QU questions and to legacy
// queriers (id, question, TTL <= 10 s), known answers suppressed, each
// record multicast at most once a second, unicast answers rate-limited;
// only queries that arrive on an interface it runs on, from that link,
// with that interface's records; responses not from port 5353 are ignored.
// docs/protocol.md says why sharing port 5353 with avahi is safe. Every
// packet is at most 1,400 bytes; a record that does not decode is skipped
// and the rest of its packet used.
//
// It also claims the node's id (RFC 6762 §8): three probes 250 ms apart
// from the start, alongside the announcements, then Claimed is reported.
// A node that finds its id held by another live node on the link yields:
// Run returns an error wrapping ErrIDConflict that names that node's
// address. A node that holds its id defends it, and two nodes that each
// hold it when they meet (a healed partition) probe again until one
// yields. docs/protocol.md has the rules.
//
// # Tests
//
// Tests that send mDNS run inside a private network namespace (see
// internal/testutil/netns): nothing they send can leave the machine. DNS
// tests ask a DNS server of their own on loopback; the one that leaves
// Server empty takes every exchange net.Resolver makes to it as well.
package discovery
