package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/mesh"
)

// nodeFlags are the flags every command has: how its node joins.
type nodeFlags struct {
	listen   string
	connect  stringList
	id       string
	secret   string
	logLevel string
	mdns     bool
	fast     bool

	dns       stringList
	dnsServer string
	ifaces    stringList
	advertise stringList
	nats      natsFlags

	cmd      string      // the command's name, for the lines of failures
	failures *failureLog // set by startNode

	// observer: the command only reads the cluster for a while (ls,
	// query, ui): mesh.Config.Observer. Not a flag.
	observer bool
}

func (f *nodeFlags) register(fs *flagSet, e *env) {
	f.cmd = fs.Name()
	fs.StringVar(&f.listen, "listen", "", "`ADDR` to accept links on (default \":0\": any free port, every address)")
	fs.Var(&f.connect, "connect", "link to the node at `ADDR` (\"host:port\"); repeatable")
	fs.StringVar(&f.id, "id", "", "node `ID` (default a random UUID)")
	fs.StringVar(&f.secret, "secret", e.getenv("TALLSHIP_SECRET"),
		"cluster `SECRET`: only nodes that know it link, and links are sealed (default $TALLSHIP_SECRET)")
	fs.StringVar(&f.logLevel, "log-level", "off", "the library's log `LEVEL` on stderr: debug, info, warn, error or off")
	fs.BoolVar(&f.mdns, "mdns", true, "find peers over mDNS (--mdns=false: only --connect addresses)")
	fs.Var(&f.dns, "dns", "find peers through the DNS SRV records of `NAME` (Consul: tallship.service.consul; Kubernetes: _tallship._tcp.SVC.NS.svc.cluster.local); repeatable")
	fs.StringVar(&f.dnsServer, "dns-server", "", "DNS server `ADDR` (\"host[:port]\", a name resolved at start) for --dns (default the servers in /etc/resolv.conf)")
	fs.Var(&f.ifaces, "interface", "announce and advertise only on network interface `IFACE`; repeatable")
	fs.Var(&f.advertise, "advertise", "advertise `ADDR` (\"host:port\", a name's addresses resolved at start) instead of the interfaces' addresses, e.g. behind NAT; repeatable")
	fs.BoolVar(&f.fast, "fast", e.getenv("TALLSHIP_FAST") == "1",
		"fast timers (mesh.LocalConfig), for tests on loopback; every node of the cluster must use them")
	// The secret's default comes from the environment: never show it.
	if f.secret != "" {
		fs.Lookup("secret").DefValue = "$TALLSHIP_SECRET"
	}
	f.nats.register(fs, e)
}

// config returns the mesh configuration the flags ask for, with the host
// names of --advertise and --dns-server resolved.
func (f *nodeFlags) config(ctx context.Context, stderr io.Writer) (mesh.Config, error) {
	// Off by default: what matters reaches the user as events (join),
	// status lines (run) or the one line of an error.
	logger := slog.New(slog.DiscardHandler)
	if f.logLevel != "off" {
		var level slog.Level
		if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
			return mesh.Config{}, usageErrorf("--log-level %q: want debug, info, warn, error or off", f.logLevel)
		}
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	}
	var cfg mesh.Config
	staticInterval := time.Duration(0)
	if f.fast {
		cfg = mesh.LocalConfig()
		staticInterval = 500 * time.Millisecond
	}
	cfg.ID = f.id
	cfg.Listen = f.listen
	cfg.Secret = f.secret
	cfg.Observer = f.observer
	if err := f.nats.apply(&cfg); err != nil {
		return mesh.Config{}, err
	}
	cfg.Logger = logger
	cfg.Discovery = []discovery.Discoverer{}
	var ifaces []net.Interface
	for _, name := range f.ifaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return mesh.Config{}, usageErrorf("--interface %q: %v", name, err)
		}
		ifaces = append(ifaces, *ifi)
		cfg.Interfaces = append(cfg.Interfaces, name)
	}
	for _, a := range f.advertise {
		aps, err := resolveFlag(ctx, "advertise", a, a, "ip:port or name:port")
		if err != nil {
			return mesh.Config{}, err
		}
		cfg.Advertise = append(cfg.Advertise, aps...)
	}
	if f.mdns {
		cfg.Discovery = append(cfg.Discovery, &discovery.MDNS{Interfaces: ifaces, Logger: logger})
	}
	dnsServer := ""
	if f.dnsServer != "" {
		hostPort := f.dnsServer
		if _, _, err := net.SplitHostPort(hostPort); err != nil {
			hostPort = net.JoinHostPort(strings.Trim(hostPort, "[]"), "53")
		}
		aps, err := resolveFlag(ctx, "dns-server", f.dnsServer, hostPort, "ip[:port] or name[:port]")
		if err != nil {
			return mesh.Config{}, err
		}
		dnsServer = aps[0].String()
	}
	for _, name := range f.dns {
		interval := time.Duration(0)
		if f.fast {
			interval = 500 * time.Millisecond
		}
		cfg.Discovery = append(cfg.Discovery, &discovery.DNS{Name: name, Server: dnsServer, Interval: interval, Logger: logger})
	}
	if len(f.connect) > 0 {
		for _, a := range f.connect {
			if !strings.Contains(a, ":") {
				return mesh.Config{}, usageErrorf("--connect %q: want host:port", a)
			}
		}
		cfg.Discovery = append(cfg.Discovery, &discovery.Static{Addrs: f.connect, Interval: staticInterval, Logger: logger})
	}
	return cfg, nil
}

// resolveFlag returns the addresses of hostPort, the value of --name
// (with a default port added), looked up at start as --connect's are later
// (discovery.Resolve): a usage error saying what it wants when the value
// is not an address, and which name did not resolve.
func resolveFlag(ctx context.Context, name, value, hostPort, want string) ([]netip.AddrPort, error) {
	aps, err := discovery.Resolve(ctx, nil, hostPort)
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return aps, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.As(err, &dnsErr):
		return nil, usageErrorf("--%s %q: cannot resolve %q: %v", name, value, dnsErr.Name, dnsErr.Err)
	}
	return nil, usageErrorf("--%s %q: want %s", name, value, want)
}

// startNode starts a node of cluster with the flags' configuration and
// returns it with its events from the very start, until ctx ends or the
// node closes. Its failed links go to stderr (failureLog) until then:
// leave it with f.leave.
func (f *nodeFlags) startNode(ctx context.Context, e *env, cluster string) (*mesh.Node, <-chan mesh.Event, error) {
	if err := checkCluster(cluster); err != nil {
		return nil, nil, err
	}
	cfg, err := f.config(ctx, e.stderr)
	if err != nil {
		return nil, nil, err
	}
	n, err := mesh.New(cluster, cfg)
	if err != nil {
		return nil, nil, err
	}
	events := n.Events(ctx)
	f.failures = startFailureLog(e.stderr, f.cmd, n.Events(ctx))
	if err := n.Start(ctx); err != nil {
		n.Close()
		f.failures.wait()
		return nil, nil, err
	}
	return n, events, nil
}

// checkCluster returns a usage error unless name can name a cluster
// (mesh.CheckClusterName), saying what a name may hold. Commands call it
// before they act on their other flags; startNode calls it too.
func checkCluster(name string) error {
	if err := mesh.CheckClusterName(name); err != nil {
		return &usageError{msg: strings.TrimPrefix(err.Error(), "mesh: ")}
	}
	return nil
}

// leaveTimeout bounds a node's graceful leave (Node.Shutdown; join's help
// gives it too): after it the node closes at once, dropping what its
// peers have not read yet.
const leaveTimeout = 5 * time.Second

// leave makes n leave the cluster gracefully, its peers told and its
// records freed everywhere, within leaveTimeout; the node is closed once
// leave returns, in time or not.
func leave(n *mesh.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	n.Shutdown(ctx) // the node is closed all the same when ctx ends first
}

// leave leaves as leave does, then waits for the lines of the node's
// failed links to end.
func (f *nodeFlags) leave(n *mesh.Node) {
	leave(n)
	f.failures.wait()
}

// settle waits until the node has met the cluster: until every peer it
// linked with has sent its registry, NATS has answered or failed when
// the node joins it (nats), and nothing new happened for quiet, or
// until max has passed (a cluster with no other node takes all of max,
// unless NATS is up: its other sites have answered).
// It returns early with ctx's error.
func settle(ctx context.Context, events <-chan mesh.Event, max, quiet time.Duration, nats bool) error {
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	calm := time.NewTimer(quiet)
	defer calm.Stop()
	up := map[string]bool{}     // linked peers
	synced := map[string]bool{} // peers whose registry arrived
	natsPending := nats         // NATS has said neither up nor down yet
	natsUp := false             // NATS is up: the other sites answered
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		case <-calm.C:
			if natsPending || len(up) == 0 && !natsUp {
				continue // nothing heard yet
			}
			done := true
			for id := range up {
				done = done && synced[id]
			}
			if done {
				return nil
			}
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("node closed while meeting the cluster")
			}
			switch ev.Kind {
			case mesh.PeerUp:
				up[ev.Peer] = true
			case mesh.PeerSynced:
				synced[ev.Peer] = true
			case mesh.PeerDown:
				delete(up, ev.Peer)
				delete(synced, ev.Peer)
			case mesh.IDConflict:
				return conflictError(ev)
			case mesh.NATSUp:
				natsPending, natsUp = false, true // the other sites answer within a round trip
			case mesh.NATSDown:
				natsPending, natsUp = false, false
			}
			calm.Reset(quiet)
		}
	}
}

// conflictError is the error of an IDConflict event: peers refuse this
// node because another live node of the cluster has its id.
func conflictError(ev mesh.Event) error {
	if ev.Err != nil {
		return ev.Err
	}
	return errors.New("another live node of the cluster has this id")
}

// watchConflict reads events until they end and calls stop with the error
// of each IDConflict event among them. Use it where nothing else reads the
// node's events.
func watchConflict(events <-chan mesh.Event, stop func(error)) {
	for ev := range events {
		if ev.Kind == mesh.IDConflict {
			stop(conflictError(ev))
		}
	}
}
