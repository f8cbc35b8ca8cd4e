package mesh

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/transport"
	"github.com/tallship-go/tallship/transport/tlsid"
)

// Config configures a node. The zero value is valid: every field says what
// its zero value means. Join and New copy it; they never change the
// caller's Config.
type Config struct {
	// ID is the node id. Empty means the id TLS's certificate names when
	// TLS is set (see TLS), else a new random UUID. Ids are compared as
	// byte strings; two live nodes with the same id never link
	// (docs/protocol.md, "Twins").
	ID string

	// Listen is the TCP address links are accepted on. Empty means ":0":
	// an OS-chosen port on every address, IPv4 and IPv6.
	Listen string

	// Interfaces, when set, names the network interfaces the node uses:
	// it advertises only their addresses (to peers, and through
	// discovery), and the default discovery runs mDNS on them only. Nil
	// means every interface that is up. Loopback counts only when named.
	// Start fails with an error wrapping ErrBadInterface for a name that
	// is not an interface. Listen still says where links are accepted:
	// with an unspecified host, on every address.
	Interfaces []string

	// Advertise, when set, are the addresses the node advertises instead
	// of the ones it found: for a node behind NAT or in a container with
	// mapped ports. Peers dial them in order.
	Advertise []netip.AddrPort

	// Discovery lists the discoverers to run. Nil means mDNS on every
	// multicast interface (discovery.MDNS{}); NoDiscovery, an empty list,
	// runs none (links then come from Connect and peer exchange).
	Discovery []discovery.Discoverer

	// Resolver looks up the host names of the addresses given to Connect,
	// at Connect and again before each redial of the kept peer. Nil means
	// net.DefaultResolver. Discoverers have their own (for example
	// discovery.Static.Resolver).
	Resolver *net.Resolver

	// HandshakeTimeout bounds a link's handshake. Zero means 2 s.
	HandshakeTimeout time.Duration
	// KeepAliveInterval is how often a quiet link beats. Zero means
	// 500 ms.
	KeepAliveInterval time.Duration
	// WriteTimeout: a peer nobody hears is declared dead within
	// KeepAliveInterval + WriteTimeout; a link silent for
	// KeepAliveInterval + WriteTimeout/2 makes the node ask other peers
	// whether they hear it (one that does keeps it). Zero means 1 s. A link whose
	// connection takes nothing more (a peer that stopped reading) is
	// closed after 4 × WriteTimeout. On a machine running late, both
	// allow that lateness too (see transport.Config).
	WriteTimeout time.Duration

	// DialBackoff is the first wait before redialing a kept peer or
	// retrying a discovered one; it doubles up to DialBackoffMax. Zero
	// means 100 ms; DialBackoffMax zero means 5 s.
	DialBackoff    time.Duration
	DialBackoffMax time.Duration
	// DialAttempts is how many times a discovered (not kept) peer is
	// dialed before giving up until discovery reports it again. Zero
	// means 5. Kept peers are redialed until Disconnect; a peer that a
	// discoverer reports present, or whose link was lost while other
	// nodes stay linked with it (the registry reaches it), as long as
	// that holds, DialBackoffMax apart at most.
	DialAttempts int
	// FallbackDelay is how long the node with the higher id waits for a
	// discovered peer with a lower id to dial it before it dials itself,
	// and, once this node has more than 16 peers, how long a new peer
	// waits for its member list (peer exchange), which names only the
	// members it is not linked to by then. Zero means 1 s.
	FallbackDelay time.Duration

	// MaxMessageSize bounds one message. Zero means 1 MiB. A larger Send
	// fails with ErrTooLarge; a larger frame from a peer closes its link.
	MaxMessageSize int
	// SendQueueBytes bounds the bytes queued for one peer together with
	// those written and not yet acknowledged; Send waits for room beyond
	// it. Zero means 16 MiB.
	SendQueueBytes int
	// ReceiveBuffer is how many received messages wait for Receive before
	// reading from links pauses (each link still buffers a yamux window).
	// Zero means 128.
	ReceiveBuffer int
	// EventBuffer is how many events wait for a slow Events consumer
	// before the oldest are dropped. Zero means 4096.
	EventBuffer int

	// MaxPeers bounds the peers a node links with; further links are
	// refused. Zero means 1024.
	MaxPeers int
	// MaxStreams bounds the open streams on one link; a peer opening more
	// has them refused (closed at once), and one that has twice as many
	// open, refused ones included (each stays until the peer closes its
	// side, or for a minute), loses the link, with a line at Warn. Zero
	// means 1024.
	MaxStreams int
	// MaxHandshakes bounds the handshakes in progress on accepted
	// connections; connections beyond it are dropped at once (their
	// dialers retry later). Zero means 256: a node joining a mesh of a
	// hundred or two is dialed by every member that discovers it, all at
	// once, and each handshake in progress holds only a goroutine and a
	// few KiB.
	MaxHandshakes int
	// MaxDials bounds the dials (connection and handshake) this node runs
	// at once to the peers it discovers; the others wait their turn, so
	// that a node meeting a large mesh never buries it, or itself, in
	// handshakes that time out and are redone. Within it the node adapts:
	// it starts with 8 at once, allows one more for each dial that links
	// within a sixteenth of HandshakeTimeout, and halves the number for
	// each whose handshake times out or that takes a quarter of it. A
	// dial that no address has answered within 250 ms gives its turn
	// back, and takes one again once its connection is made: peers that
	// do not answer (gone without a goodbye, beyond a partition) take no
	// turns from those that do. Turns go first come first, dials to
	// lower ids (which dial this node themselves) last. Zero means 32.
	// Connect is not counted.
	MaxDials int

	// Observer makes the node take part only to read the cluster for a
	// while, as the CLI's ls, query and ui do: it links, syncs the registry
	// and may send and receive like any node, but its peers do not count
	// it as a member. It is left out of their Peers, WaitPeers, Broadcast
	// and member lists (peer exchange), their Events mark it
	// (Event.Observer), and over mDNS it only looks: it announces nothing,
	// so nobody dials it (it dials the members it finds), and it leaves
	// nothing behind.
	Observer bool

	// Secret, when set, is the cluster secret (seaport's --secret): only
	// nodes that know it can link, everything on a link after the
	// handshake is sealed, and mDNS announces a keyed hash of the cluster
	// name instead of the name. Every node of the cluster must set it.
	// The secret proves membership, not identity: any holder of it may
	// claim any node id (and so free or replace that node's records),
	// and records are not signed by their owners; for ids that are
	// proven, and records signed, use TLS.
	Secret string
	// TLS, when set, runs mutual TLS on every link instead, for meshes
	// with certificates, and binds node ids to them: each node's
	// certificate must name its id in a URI SAN tallship:node/<id>
	// (transport/tlsid mints such certificates, or gives the URI for a
	// CA of one's own), and a peer whose hello claims an id its
	// certificate does not name is refused with transport.ErrAuth (see
	// transport.Config.TLS). With ID empty, the node takes the id its
	// certificate (Certificates[0]) names. Secret and TLS exclude each
	// other. With TLS every node also signs its registry records and
	// states with the key of Certificates[0] (which must be a
	// crypto.Signer), and a node applies another's only with that
	// node's signature, its chain verified against ClientCAs (else
	// RootCAs): no node can pass records off as another's, however many
	// nodes relayed them. So every node must trust every node's chain
	// (not only its peers'), and certificates are best renewed before
	// they expire: a node that checks an owner's chain after it expired
	// shows none of that run's records (docs/registry-protocol.md,
	// "Owners' signatures").
	TLS *tls.Config

	// NATS, when it names servers, joins the node to a NATS system as
	// well as to its LAN mesh: the records of every site of the cluster
	// show here, and this node's there (see NATSConfig). The zero value
	// joins none.
	NATS NATSConfig
	// Site names the node's site: the LAN mesh it is part of. Every node
	// of one LAN takes the same name, and each LAN its own: what comes
	// over NATS from this node's site is dropped (its links carry it).
	// Records carry their site (Record.Site), and DialService tries this
	// site's instances first. 1 to 64 ASCII letters, digits, '.', '-'
	// and '_', first a letter or a digit. Empty means DefaultSite when
	// NATS names servers, else none.
	Site string

	// ServiceHost is the host recorded by Register and ListenService when
	// the Service names none. Empty means the node's first address.
	ServiceHost string
	// Heartbeat is how often the node renews its records' liveness with
	// the nodes that know it only through others (a linked peer needs no
	// renewal: the link's keepalive stands for it, so an idle full mesh
	// sends none). Zero means 1 s (registry.DefaultHeartbeat).
	Heartbeat time.Duration
	// Lifetime is how long the records of a node that stopped renewing
	// them, while still reachable through others, stay registered (a node
	// that closes or dies has them freed at once; a linked one keeps them
	// while its link lives). Zero means 5 × Heartbeat; at least
	// 3 × Heartbeat (registry.MinLifetimeBeats), else Start fails.
	Lifetime time.Duration
	// MaxRecords bounds the records one node may hold, its own and each
	// peer's. Zero means 4096. Use the same value on every node.
	MaxRecords int
	// MaxMetadataBytes bounds one record's metadata (keys plus values).
	// Zero means 4 KiB. Use the same value on every node.
	MaxMetadataBytes int
	// WatchBuffer is how many events wait for a slow Watch consumer
	// (taking memory only while they wait); one that falls further behind
	// gets a final Overflowed event and its channel closes. Zero means
	// 1024.
	WatchBuffer int

	// Logger receives the node's log lines, routine ones at Debug. Nil
	// means slog.Default().
	Logger *slog.Logger
}

// NoDiscovery, as Config.Discovery, runs no discoverer.
var NoDiscovery = []discovery.Discoverer{}

// LocalConfig returns a Config with fast timers for tests and loopback: a
// silent peer is noticed within 1 s, redials start after 20 ms.
func LocalConfig() Config {
	return Config{
		HandshakeTimeout:  time.Second,
		KeepAliveInterval: 250 * time.Millisecond,
		WriteTimeout:      750 * time.Millisecond,
		DialBackoff:       20 * time.Millisecond,
		DialBackoffMax:    500 * time.Millisecond,
		FallbackDelay:     200 * time.Millisecond,
		Heartbeat:         100 * time.Millisecond,
		Lifetime:          500 * time.Millisecond,
	}
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = ":0"
	}
	if c.ID == "" && c.TLS != nil {
		c.ID = certID(c.TLS)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HandshakeTimeout, 2*time.Second)
	def(&c.KeepAliveInterval, 500*time.Millisecond)
	def(&c.WriteTimeout, time.Second)
	def(&c.DialBackoff, 100*time.Millisecond)
	def(&c.DialBackoffMax, 5*time.Second)
	def(&c.FallbackDelay, time.Second)
	if c.DialAttempts <= 0 {
		c.DialAttempts = 5
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 1 << 20
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = 16 << 20
	}
	if c.SendQueueBytes < c.MaxMessageSize {
		c.SendQueueBytes = c.MaxMessageSize
	}
	if c.ReceiveBuffer <= 0 {
		c.ReceiveBuffer = 128
	}
	if c.MaxPeers <= 0 {
		c.MaxPeers = 1024
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 1024
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 256
	}
	if c.MaxDials <= 0 {
		c.MaxDials = 32
	}
	if c.EventBuffer <= 0 {
		c.EventBuffer = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Site == "" && len(c.NATS.URLs) > 0 {
		c.Site = DefaultSite
	}
	return c
}

// registry is the configuration of the node's registry, with id as its
// ID and host as its default host.
func (c Config) registry(id, host string, log *slog.Logger, onEvent func(registry.Event)) registry.Config {
	if c.ServiceHost != "" {
		host = c.ServiceHost
	}
	rc := registry.Config{
		ID:                 id,
		Host:               host,
		Site:               c.Site,
		Observer:           c.Observer,
		Heartbeat:          c.Heartbeat,
		Lifetime:           c.Lifetime,
		MaxRecordsPerOwner: c.MaxRecords,
		MaxMetadataBytes:   c.MaxMetadataBytes,
		WatchBuffer:        c.WatchBuffer,
		Logger:             log,
		OnEvent:            onEvent,
	}
	// A registry message holds at least one record of MaxMetadataBytes.
	if c.MaxMetadataBytes > registry.DefaultMaxMessageBytes-registryMessageRoom {
		rc.MaxMessageBytes = c.MaxMetadataBytes + registryMessageRoom
	}
	return rc
}

// registryMessageRoom is what a registry message needs beyond one
// record's metadata (registry.Config.MaxMessageBytes).
const registryMessageRoom = 8 << 10

func (c Config) transport() transport.Config {
	return transport.Config{
		HandshakeTimeout:  c.HandshakeTimeout,
		KeepAliveInterval: c.KeepAliveInterval,
		WriteTimeout:      c.WriteTimeout,
		RelaxedInterval:   relaxedBeats * c.KeepAliveInterval,
		Secret:            c.Secret,
		TLS:               c.TLS,
		Logger:            c.Logger,
		Observer:          c.Observer,
	}
}

// certID returns the first node id that cfg's first certificate names,
// or "".
func certID(cfg *tls.Config) string {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return ""
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
			return ""
		}
	}
	if ids := tlsid.IDs(leaf); len(ids) > 0 {
		return ids[0]
	}
	return ""
}
