package mesh

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/sites"
	"github.com/tallship-go/tallship/transport"
)

// Node is one member of a mesh. Its methods are safe for concurrent use.
type Node struct {
	cfg         Config
	cluster     string
	id          string
	chosenID    bool        // the caller chose the id: Start waits until mDNS has claimed it
	claiming    atomic.Bool // Start waits for that
	incarnation int64
	log         *slog.Logger
	tcfg        transport.Config
	dialSeq     atomic.Uint64

	closing chan struct{}   // closed when Close starts
	ctx     context.Context // cancelled when Close starts
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	events  *hub
	recv    chan Message
	// handshakes holds a token per handshake in progress.
	handshakes chan struct{}
	// dials paces the dials to discovered peers (Config.MaxDials).
	dials *dialPacer
	// failures are the last failures of links reported, by address
	// (linkfail.go); failMu guards them.
	failMu   sync.Mutex
	failures map[string]string
	failIDs  map[string]int // by caller IP address: the ids its failures named

	mu        sync.Mutex
	started   bool
	closed    bool
	ln        net.Listener
	addrs     []netip.AddrPort
	peers     map[string]*peer         // peers with a link up, or being linked again (recover.go)
	links     map[uint64]*link         // every link past its handshake
	pending   map[uint64]chan struct{} // links accepted, handshake not finished
	inbound   map[string]int           // accepted handshakes in progress, by peer id
	claims    map[string]*claim        // runs admitted, their links not in the mesh yet (twin.go)
	deferred  atomic.Int64             // dials put off for a peer dialing in (for tests)
	targets   map[string]*target       // peers being dialed or kept, by id
	addrOwner map[netip.AddrPort]string
	// addrDialing counts the running dials of address-only targets, by
	// address, so that a discoverer reporting an address again while it
	// is dialed starts no second dial.
	addrDialing map[netip.AddrPort]int
	listeners   map[string]*listener
	discCancel  context.CancelFunc
	// redials cancel the dials of each peer whose link is being made
	// again (recover.go).
	redials   map[*peer]context.CancelFunc
	marks     map[string]recvMark // of peers declared down (delivery.go)
	probes    map[uint64]*probe   // questions about silent links (probe.go)
	probeSeq  uint64
	answering int // probes being answered
	// Member lists waiting to go to new peers, by when each is due, and
	// the one timer that sends them (see exchangeLaterLocked).
	exchangeDue   map[*peer]time.Time
	exchangeTimer *time.Timer
	exchangeArmed bool
	sweeping      bool // a sweep of relaxed links runs (watch.go)
	sweepAgain    bool
	reg           *registry.Registry
	bus           *sites.Bus             // the connection to NATS (Config.NATS), nil without
	remotes       *remoteSet             // messaging with the members of other sites, nil without NATS
	discoverers   []discovery.Discoverer // those started (stats.go)
	stats         nodeStats

	closeOnce sync.Once
	closeDone chan struct{} // closed once Shutdown or Close has finished
}

// Join starts a node in the named cluster with the default Config: it
// listens on an OS-chosen port and finds its peers over mDNS.
func Join(cluster string) (*Node, error) {
	return Config{}.Join(context.Background(), cluster)
}

// Join starts a node in the named cluster with this Config. ctx bounds
// the start only; the node runs until Close.
func (c Config) Join(ctx context.Context, cluster string) (*Node, error) {
	n, err := New(cluster, c)
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// New returns a node of the named cluster that has not started: it has an
// id but no addresses and no links until Start.
func New(cluster string, cfg Config) (*Node, error) {
	if err := CheckClusterName(cluster); err != nil {
		return nil, err // ErrBadCluster, and ErrNoCluster for ""
	}
	if cfg.Secret != "" && cfg.TLS != nil {
		return nil, errors.New("mesh: set Config.Secret or Config.TLS, not both")
	}
	cfg = cfg.withDefaults()
	if cfg.Site != "" {
		if err := registry.CheckSite(cfg.Site); err != nil {
			return nil, fmt.Errorf("mesh: Config.Site %q: %w", cfg.Site, err)
		}
	}
	chosenID := cfg.ID != ""
	if !chosenID {
		cfg.ID = uuid.NewString()
	}
	n := &Node{
		cfg:         cfg,
		cluster:     cluster,
		id:          cfg.ID,
		chosenID:    chosenID,
		incarnation: newIncarnation(),
		tcfg:        cfg.transport(),
		closing:     make(chan struct{}),
		closeDone:   make(chan struct{}),
		recv:        make(chan Message, cfg.ReceiveBuffer),
		handshakes:  make(chan struct{}, cfg.MaxHandshakes),
		dials:       newDialPacer(cfg.MaxDials, cfg.HandshakeTimeout),
		peers:       make(map[string]*peer),
		links:       make(map[uint64]*link),
		pending:     make(map[uint64]chan struct{}),
		inbound:     make(map[string]int),
		targets:     make(map[string]*target),
		redials:     make(map[*peer]context.CancelFunc),
		addrOwner:   make(map[netip.AddrPort]string),
		addrDialing: make(map[netip.AddrPort]int),
		listeners:   make(map[string]*listener),
		marks:       make(map[string]recvMark),
		probes:      make(map[uint64]*probe),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.log = cfg.Logger.With("node", n.id, "cluster", cluster)
	n.tcfg.Logger = n.log
	n.tcfg.OnSilent = n.onSilent
	n.events = newHub(cfg.EventBuffer, &n.wg)
	return n, nil
}

// Start listens for links and starts discovery. It returns ErrStarted when
// called twice, and an error wrapping net.ErrClosed after Close.
//
// When the caller chose the node's id (Config.ID) and mDNS runs, Start
// also waits until mDNS has claimed the id on the network (about 750 ms,
// while the node already links with its peers): if another live node
// holds it, Start closes the node and returns an error wrapping
// ErrIDConflict that names that node's address. A random id (the
// default) cannot collide, and Start does not wait for it. ctx bounds the
// wait; when it ends first, Start closes the node and returns ctx's error.
//
// With Config.NATS, Start also connects to NATS: it fails, with an error
// wrapping sites.ErrConfig or sites.ErrRefused, for a URL that does not
// parse or credentials the server refuses; a server that cannot be
// reached is no error (it is logged once, and the node connects when it
// can: its LAN works without NATS).
func (n *Node) Start(ctx context.Context) error {
	bus, err := n.dialSites(ctx)
	if err != nil {
		return err
	}
	claims, err := n.start(ctx, bus)
	if err != nil {
		if bus != nil {
			bus.Close()
		}
		return err
	}
	n.claiming.Store(true) // Start returns the conflict: no log line for it
	defer n.claiming.Store(false)
	for _, claim := range claims {
		select {
		case err := <-claim:
			if errors.Is(err, discovery.ErrIDConflict) {
				n.Close()
				return idConflict(err)
			}
		case <-ctx.Done():
			n.Close()
			return ctx.Err()
		case <-n.closing:
			return errClosed
		}
	}
	return nil
}

// start is Start but for the wait: it returns a channel for each
// discoverer that claims the id, which receives nil once the id is
// claimed, or the error that ended the discoverer.
func (n *Node) start(ctx context.Context, bus *sites.Bus) ([]chan error, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return nil, errClosed
	case n.started:
		return nil, ErrStarted
	}
	ifaces, err := interfacesNamed(n.cfg.Interfaces)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", n.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("mesh: listen: %w", err)
	}
	n.addrs = slices.Clone(n.cfg.Advertise)
	if len(n.addrs) == 0 {
		n.addrs = reachableAddrs(ln.Addr(), ifaces)
	}
	discoverers := n.cfg.Discovery
	if discoverers == nil {
		discoverers = defaultDiscovery(ifaces)
	}
	if err := n.startRegistryLocked(); err != nil {
		ln.Close()
		n.addrs = nil
		return nil, fmt.Errorf("mesh: registry: %w", err)
	}
	n.started = true
	n.ln = ln
	n.discoverers = discoverers
	n.wg.Add(1)
	go n.acceptLoop(ln)
	if bus != nil {
		n.bus = bus
		n.wg.Add(1)
		go n.runSites(bus)
	}

	dctx, cancel := context.WithCancel(context.Background())
	n.discCancel = cancel
	self := discovery.Self{Cluster: n.announcedCluster(), ID: n.id, Port: ln.Addr().(*net.TCPAddr).Port, Addrs: slices.Clone(n.addrs),
		Passive: n.cfg.Observer}
	var claims []chan error
	for _, d := range discoverers {
		report := n.discovered
		var claim chan error
		if _, ok := d.(*discovery.MDNS); ok && n.chosenID && !n.cfg.Observer { // an observer claims no id: it announces none
			claim = make(chan error, 1)
			claims = append(claims, claim)
			report = func(e discovery.Event) {
				if e.Kind == discovery.Claimed {
					select {
					case claim <- nil:
					default:
					}
				}
				n.discovered(e)
			}
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			err := d.Run(dctx, self, report)
			if claim != nil && err != nil {
				select {
				case claim <- err:
				default:
				}
			}
			if err != nil {
				n.discoveryStopped(err)
			}
		}()
	}
	n.log.Debug("node started", "addr", ln.Addr().String())
	return claims, nil
}

// discoveryStopped reports a discoverer that ended by itself: another
// live node holds this node's id (mDNS found it), or it could not run.
func (n *Node) discoveryStopped(err error) {
	if errors.Is(err, discovery.ErrIDConflict) {
		if !n.claiming.Load() {
			n.log.Error("another live node has this node's id; mDNS stopped announcing it", "err", err)
		}
		n.events.publish(Event{Kind: IDConflict, Err: idConflict(err)})
		return
	}
	n.log.Warn("discovery stopped", "err", err)
	n.events.publish(Event{Kind: DiscoveryError, Err: err})
}

// announcedCluster is the cluster name discovery announces: with a secret,
// a keyed hash of it, so that announcements do not reveal the name and
// only nodes with the same secret find each other.
func (n *Node) announcedCluster() string {
	if n.cfg.Secret == "" {
		return n.cluster
	}
	mac := hmac.New(sha256.New, []byte("tallship announce v1\x00"+n.cfg.Secret))
	mac.Write([]byte(n.cluster))
	return "s-" + hex.EncodeToString(mac.Sum(nil)[:16])
}

// ID returns the node's id.
func (n *Node) ID() string { return n.id }

// Cluster returns the node's cluster name.
func (n *Node) Cluster() string { return n.cluster }

// Addrs returns the addresses the node can be reached at: none before
// Start and after Close.
func (n *Node) Addrs() []netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.addrs)
}

// Peer describes a linked peer.
type Peer struct {
	ID string
	// Addrs are the addresses the peer advertises.
	Addrs []netip.AddrPort
	// Since is when the peer's link came up.
	Since time.Time
	// Kept reports whether the node redials the peer when its link drops.
	Kept bool
	// Site is the peer's site (Config.Site): this node's for a linked
	// peer, unless NATS says it is of another (sites linked by hand).
	Site string
	// Remote marks a member of another site, heard over NATS (Remotes):
	// not linked, no addresses.
	Remote bool
}

// Peers returns the peers, sorted by id: those with a link up, and those
// whose lost link is being made again (see Send: they are members still).
func (n *Node) Peers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Peer, 0, len(n.peers))
	for _, p := range n.peers {
		if !p.observer {
			out = append(out, n.peerInfo(p))
		}
	}
	slices.SortFunc(out, func(a, b Peer) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// peerInfo describes p; n.mu is held.
func (n *Node) peerInfo(p *peer) Peer {
	t := n.targets[p.id]
	return Peer{ID: p.id, Addrs: slices.Clone(p.addrs), Since: p.since, Kept: t != nil && t.kept, Site: n.peerSite(p.id)}
}

// Events returns the node's events from now on, in order: peers up, down
// and synced, refused ids, discovery errors. Services are followed with
// Watch. The channel is
// closed when ctx ends or the node closes. Events are queued for a slow
// reader, up to Config.EventBuffer; beyond that the oldest are dropped. To
// see every event from the start, make the node with New, call Events,
// then Start.
func (n *Node) Events(ctx context.Context) <-chan Event {
	return n.events.subscribe(ctx)
}

// Shutdown leaves the mesh gracefully: discovery says goodbye, the
// registry frees this node's records on every node at once, every peer
// gets what Send queued for it and then a goodbye (its PeerDown has a nil
// Err), and each link closes once the peer has read everything. It
// returns nil once all of that is done and every goroutine the node
// started has ended. When ctx ends first, the rest goes as in Close and
// Shutdown returns ctx.Err(); messages still queued may then be lost (a
// line at Warn says so). Pass a ctx with a deadline: a peer that stops
// reading can hold a graceful leave up for as long as ctx allows.
//
// Calls after the first Shutdown or Close wait for it and return nil.
func (n *Node) Shutdown(ctx context.Context) error {
	err := errAlreadyClosing
	n.closeOnce.Do(func() { err = n.close(ctx) })
	if err == errAlreadyClosing {
		<-n.closeDone
		return nil
	}
	return err
}

// Close closes the node now: its listener, discovery, registry and every
// link, without waiting for peers to read what is queued (messages Send
// accepted and not yet written are dropped; use Shutdown to deliver them).
// Peers see the links end at once and free this node's records. Close
// returns once every goroutine the node started has ended. It is
// idempotent and returns nil.
func (n *Node) Close() error {
	now, cancel := context.WithCancel(context.Background())
	cancel()
	n.Shutdown(now)
	return nil
}

// errAlreadyClosing marks a Shutdown or Close that found another running.
var errAlreadyClosing = errors.New("mesh: closing already")

// close shuts the node down, gracefully until ctx ends, then at once.
func (n *Node) close(ctx context.Context) error {
	defer close(n.closeDone)
	n.mu.Lock()
	n.closed = true
	close(n.closing)
	n.cancel()
	n.stopExchangesLocked()
	if n.ln != nil {
		n.ln.Close()
	}
	if n.discCancel != nil {
		n.discCancel()
	}
	peers := make([]*peer, 0, len(n.peers))
	for _, p := range n.peers {
		peers = append(peers, p)
	}
	for _, l := range n.listeners {
		l.closeLocked()
	}
	reg, bus := n.reg, n.bus
	n.mu.Unlock()

	// The registry says this node leaves, freeing its records, while the
	// goodbyes go: a peer shows this node down on its goodbye, and frees
	// its records on the registry's leaving state, which it reads as long
	// as the link is up. The links close only once both are written.
	regDone := make(chan struct{})
	if reg != nil {
		go func() {
			defer close(regDone)
			n.drainRemotes(ctx) // before the leaving Beat, after which other sites take nothing from this node
			reg.Shutdown(ctx)
		}()
	} else {
		close(regDone)
	}
	// Goodbye: each writer sends it after what is queued, then closes
	// its stream. Once ctx has ended, what is queued is dropped.
	for _, p := range peers {
		if ctx.Err() != nil {
			p.stop()
		} else {
			p.leave()
		}
	}
	for _, p := range peers {
		select {
		case <-p.writerDone:
		case <-ctx.Done():
		}
	}
	<-regDone
	if bus != nil {
		n.closeSites(bus) // after the registry's leaving Beat, which it hands NATS
	}
	n.mu.Lock()
	links := make([]*link, 0, len(n.links))
	for _, l := range n.links {
		links = append(links, l)
		if l.p == nil || isClosed(l.p.writerDone) {
			// Nothing more is written to it: a link its peer's writer
			// never wrote to, or that came as it ended (a duplicate to
			// retire), has no stream to end.
			l.finishOut()
		}
	}
	n.addrs = nil
	n.mu.Unlock()
	// Close each link once the peer has read what was sent on it.
	var drained sync.WaitGroup
	for _, l := range links {
		drained.Add(1)
		go func() {
			defer drained.Done()
			if ctx.Err() == nil {
				l.drain(ctx, n, false)
			}
			l.tl.Close()
		}()
	}
	drained.Wait()
	n.events.close()
	n.wg.Wait()
	n.log.Debug("node closed")
	return ctx.Err()
}

// running reports whether the node accepts new work; n.mu is held.
func (n *Node) runningLocked() bool { return n.started && !n.closed }

// interfacesNamed returns the interfaces of names; nil for nil.
func interfacesNamed(names []string) ([]net.Interface, error) {
	if names == nil {
		return nil, nil
	}
	out := make([]net.Interface, 0, len(names))
	for _, name := range names {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrBadInterface, name, err)
		}
		out = append(out, *ifi)
	}
	return out, nil
}

// reachableAddrs lists the addresses a listener on addr can be reached
// at: for an unspecified host, those of ifaces (nil: every interface) that
// are up, loopback last.
func reachableAddrs(addr net.Addr, ifaces []net.Interface) []netip.AddrPort {
	ap := addr.(*net.TCPAddr).AddrPort()
	port := ap.Port()
	if !ap.Addr().Unmap().IsUnspecified() {
		return []netip.AddrPort{netip.AddrPortFrom(ap.Addr().Unmap(), port)}
	}
	if ifaces == nil {
		var err error
		if ifaces, err = net.Interfaces(); err != nil {
			return nil
		}
	}
	var out, loop []netip.AddrPort
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp == 0 {
			continue
		}
		as, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.IsLinkLocalUnicast() {
				continue
			}
			if ip.IsLoopback() {
				loop = append(loop, netip.AddrPortFrom(ip, port))
			} else {
				out = append(out, netip.AddrPortFrom(ip, port))
			}
		}
	}
	return append(out, loop...)
}

var errNotRunning = errors.New("mesh: node not running")
