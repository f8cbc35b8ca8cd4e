package registry

import (
	"fmt"
	"log/slog"
	"time"
)

// Default values for the zero fields of a Config.
const (
	DefaultHeartbeat          = time.Second
	DefaultLifetimeBeats      = 5 // Lifetime = DefaultLifetimeBeats × Heartbeat
	DefaultMaxRecordsPerOwner = 4096
	DefaultMaxMetadataBytes   = 4 << 10
	DefaultMaxMessageBytes    = 1 << 20
	DefaultWatchBuffer        = 1024

	// MinLifetimeBeats is the smallest allowed Lifetime/Heartbeat ratio:
	// a record survives at least two lost or late heartbeats, so a busy
	// machine never makes the registry flap.
	MinLifetimeBeats = 3

	// How long links coming up are merged into one new state (see
	// announce and mergeWindow): coalescePerOwner per owner known, at
	// least coalesceMin, at most the heartbeat.
	coalesceMin      = 10 * time.Millisecond
	coalescePerOwner = 10 * time.Millisecond

	// maxLifetime bounds the record lifetime a peer may announce.
	maxLifetime = 24 * time.Hour

	// MaxIDBytes bounds a node id (Config.ID, a peer's id).
	MaxIDBytes = 255
	// MaxHostBytes bounds a record's host.
	MaxHostBytes = 255
)

// Config configures a Registry. Only ID is required; every other zero field
// takes the default its doc names. New works on a copy and never changes
// the caller's Config.
type Config struct {
	// ID is this node's id: the owner of the records it registers and its
	// name in the replication protocol. Required; at most MaxIDBytes bytes.
	// Ids are compared as byte strings. Two nodes must never run with the
	// same id at the same time; a restart with the same id is fine (its new
	// incarnation replaces the records of the old one everywhere).
	ID string

	// Host is the default host of the records this node registers (its
	// address as others should dial it). Empty means none: a Register
	// without a Host then records an empty host, and Listen records its
	// bind address when that is specific.
	Host string

	// Site names the site of this node: the LAN its links join. Its
	// records, and those its links bring, carry it (Record.Site); a bus
	// across sites (ServeBus) needs it, and drops what comes from this
	// site (the links carry that). Empty means none: records carry no
	// site, and ServeBus refuses to run. See CheckSite for what a name
	// may hold.
	Site string

	// Observer marks a node that only reads the cluster for a while (the
	// mesh's Config.Observer): on a bus (ServeBus) its Beats say so, and
	// other sites leave it out of Remotes. Its records, if any, show as
	// any node's.
	Observer bool

	// Heartbeat is how often this node renews its liveness state with the
	// nodes that know it only through relays (its peers' links stand for
	// it with its peers: in a full mesh, nothing is sent). Zero means
	// DefaultHeartbeat (1 s).
	Heartbeat time.Duration

	// Lifetime is how long the records of a node that stopped renewing
	// (and that is still reachable, else they go at once) stay registered
	// on the nodes that know it only through relays; a node with a link
	// to it keeps them while the link is up. A node announces its Lifetime
	// with its state, and the others expire its records by it, so nodes
	// with different timings can mix.
	// Zero means DefaultLifetimeBeats × Heartbeat (5 s with the default
	// heartbeat). It must be at least MinLifetimeBeats × Heartbeat, so
	// that late heartbeats never make records flap; New refuses less.
	Lifetime time.Duration

	// MaxRecordsPerOwner bounds the records one node may hold, both for
	// this node's own registrations and for what peers send. Zero means
	// DefaultMaxRecordsPerOwner (4096). Use the same value on every node.
	MaxRecordsPerOwner int

	// MaxMetadataBytes bounds one record's metadata, counted as the sum of
	// the lengths of its keys and values. Zero means
	// DefaultMaxMetadataBytes (4 KiB). Use the same value on every node.
	MaxMetadataBytes int

	// MaxMessageBytes bounds one protocol message, in both directions.
	// Zero means DefaultMaxMessageBytes (1 MiB). It must leave room for
	// one record of MaxMetadataBytes plus 4 KiB.
	MaxMessageBytes int

	// WatchBuffer is the number of events held for each Watch channel
	// (memory is taken as they wait, not up front). A watcher that falls
	// this far behind gets a final Overflowed event and its channel is
	// closed. Zero means DefaultWatchBuffer (1024).
	WatchBuffer int

	// Identity, when set, makes every owner prove what it says about
	// itself to every node, however many relays it crossed: this node
	// signs its states and record changes and sends its credential ahead
	// of them, and applies what another owner says only when that
	// owner's credential (checked by Identity.Verifier) signed it. A
	// peer that sends a message with a signature that fails, or a
	// credential that does not prove its owner, has its link closed
	// (ErrForged). Nil means none: records rest on the word of the nodes
	// that relay them. Set it on every node of a cluster or none. The
	// mesh sets it when links run TLS (see docs/registry-protocol.md,
	// "Owners' signatures").
	Identity Identity

	// Logger receives the registry's logs (link up/down at Debug,
	// refused peers at Warn). Nil means slog.Default().
	Logger *slog.Logger

	// OnEvent, when set, receives every event of this registry: record
	// registered, updated and freed (as seen by this node, each once) and
	// a peer's initial sync applied. It is called from one goroutine, in
	// order, never concurrently; it must not block for long (events queue
	// behind it) and may call the Registry's methods. The Event is the
	// callee's to keep.
	OnEvent func(Event)
}

// LocalConfig returns a Config with fast timers for tests and loopback
// meshes: 100 ms heartbeat, 500 ms lifetime.
func LocalConfig(id string) Config {
	return Config{ID: id, Heartbeat: 100 * time.Millisecond, Lifetime: 500 * time.Millisecond}
}

// withDefaults returns a copy of c with defaults filled in, or an error
// wrapping ErrConfig.
func (c Config) withDefaults() (Config, error) {
	if c.ID == "" {
		return c, fmt.Errorf("%w: empty ID", ErrConfig)
	}
	if len(c.ID) > MaxIDBytes {
		return c, fmt.Errorf("%w: ID longer than %d bytes", ErrConfig, MaxIDBytes)
	}
	if len(c.Host) > MaxHostBytes {
		return c, fmt.Errorf("%w: Host longer than %d bytes", ErrConfig, MaxHostBytes)
	}
	if c.Site != "" {
		if err := CheckSite(c.Site); err != nil {
			return c, err
		}
	}
	if c.Heartbeat < 0 || c.Lifetime < 0 || c.MaxRecordsPerOwner < 0 ||
		c.MaxMetadataBytes < 0 || c.MaxMessageBytes < 0 || c.WatchBuffer < 0 {
		return c, fmt.Errorf("%w: negative value", ErrConfig)
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.Lifetime == 0 {
		c.Lifetime = DefaultLifetimeBeats * c.Heartbeat
	}
	if c.Lifetime < MinLifetimeBeats*c.Heartbeat {
		return c, fmt.Errorf("%w: Lifetime %v is less than %d × Heartbeat %v",
			ErrConfig, c.Lifetime, MinLifetimeBeats, c.Heartbeat)
	}
	if c.MaxRecordsPerOwner == 0 {
		c.MaxRecordsPerOwner = DefaultMaxRecordsPerOwner
	}
	if c.MaxMetadataBytes == 0 {
		c.MaxMetadataBytes = DefaultMaxMetadataBytes
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxMessageBytes < c.MaxMetadataBytes+4096 {
		return c, fmt.Errorf("%w: MaxMessageBytes %d leaves no room for a record of MaxMetadataBytes %d",
			ErrConfig, c.MaxMessageBytes, c.MaxMetadataBytes)
	}
	if c.WatchBuffer == 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	if c.WatchBuffer < 2 {
		c.WatchBuffer = 2 // one event and the overflow marker
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
