package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

// Bounds of the node's own waits.
const (
	startTimeout   = 10 * time.Second // mesh's Start, and each -connect
	commandTimeout = 5 * time.Second  // a send or connect command
	leaveTimeout   = 5 * time.Second  // the graceful leave (Shutdown)
)

// Main runs a harness node with the command line args (the flags of
// Config, without the program's name): it prints events to standard
// output and takes commands from standard input, as the package doc says,
// until a close command, the end of its input, SIGINT or SIGTERM. It
// refuses to run outside the tests' private network namespaces. When the
// node cannot start, Main prints a fatal event and returns why; the
// caller then exits with status 1.
func Main(args []string) error {
	out := &printer{enc: json.NewEncoder(os.Stdout)}
	err := run(args, out)
	if err != nil {
		out.print(Event{Ev: "fatal", Err: err.Error()})
	}
	return err
}

func run(args []string, out *printer) error {
	fs := flag.NewFlagSet("tsnode", flag.ContinueOnError)
	var c Config
	bind(fs, &c)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("no arguments are taken, only flags: %q", fs.Args())
	}
	if err := checkPrivate(); err != nil {
		return err
	}
	if c.Proxy != "" {
		return runProxy(out, c.Proxy)
	}
	if c.NATSServer != "" {
		return runNATSServer(out, c.NATSServer)
	}
	if c.Cluster == "" {
		return errors.New("-cluster is required")
	}
	cfg, err := c.mesh()
	if err != nil {
		return err
	}
	if c.DiscoveryEvents {
		for i, d := range cfg.Discovery {
			cfg.Discovery[i] = printing{d, out}
		}
	}
	meta := map[string]string{}
	for _, kv := range c.Meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("-meta %q: want key=value", kv)
		}
		meta[k] = v
	}

	node, err := mesh.New(c.Cluster, cfg)
	if err != nil {
		return err
	}
	defer leave(node)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := node.Events(ctx) // from before Start: every peer-up
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	st := &streams{ctx: ctx, node: node, out: out, wg: &wg}

	sctx, scancel := context.WithTimeout(ctx, startTimeout)
	defer scancel()
	if err := node.Start(sctx); err != nil {
		return err
	}
	services, err := node.Watch(ctx, "")
	if err != nil {
		return err
	}
	for _, addr := range c.Connect {
		if _, err := node.Connect(sctx, addr); err != nil {
			return fmt.Errorf("connect %s: %w", addr, err)
		}
	}
	start := Event{Ev: "start", ID: node.ID()}
	for _, a := range node.Addrs() {
		start.Addrs = append(start.Addrs, a.String())
	}
	for _, role := range c.Roles {
		r, err := node.Register(mesh.Service{Role: role, Meta: meta})
		if err != nil {
			return fmt.Errorf("register %s: %w", role, err)
		}
		start.Records = append(start.Records, toRecord(r))
	}
	out.print(start)

	wg.Add(3)
	go func() {
		defer wg.Done()
		for e := range events {
			out.print(fromMesh(e))
		}
	}()
	go func() {
		defer wg.Done()
		for e := range services {
			out.print(fromWatch(e))
		}
	}()
	go func() {
		defer wg.Done()
		for {
			m, err := node.Receive(ctx)
			if err != nil {
				return
			}
			out.print(Event{Ev: "msg", Peer: m.From, Data: string(m.Data)})
		}
	}()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	lines := make(chan string)
	go func() { // ends with standard input; never waited for
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-stop:
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			seq, done := command(ctx, node, st, out, line)
			if done {
				leave(node)
				out.print(Event{Ev: "reply", Seq: seq})
				return nil
			}
		}
	}
}

// mesh returns the mesh.Config of c.
func (c Config) mesh() (mesh.Config, error) {
	var cfg mesh.Config
	switch c.Timers {
	case "", "local":
		cfg = mesh.LocalConfig()
	case "default":
	default:
		return cfg, fmt.Errorf("-timers %q: want local or default", c.Timers)
	}
	set := func(d *time.Duration, v time.Duration) {
		if v > 0 {
			*d = v
		}
	}
	set(&cfg.KeepAliveInterval, c.KeepAlive)
	set(&cfg.WriteTimeout, c.WriteTimeout)
	set(&cfg.Heartbeat, c.Heartbeat)
	set(&cfg.Lifetime, c.Lifetime)
	set(&cfg.FallbackDelay, c.FallbackDelay)
	cfg.ID, cfg.Secret, cfg.Listen = c.ID, c.Secret, c.Listen
	if c.NATS != "" {
		cfg.NATS.URLs = strings.Split(c.NATS, ",")
	}
	cfg.Site = c.Site
	level := slog.LevelWarn
	if c.Debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Discovery = []discovery.Discoverer{}
	if !c.NoMDNS {
		md := &discovery.MDNS{Logger: cfg.Logger}
		for _, name := range c.Ifaces {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return cfg, fmt.Errorf("-iface %s: %w", name, err)
			}
			md.Interfaces = append(md.Interfaces, *ifi)
		}
		cfg.Discovery = append(cfg.Discovery, md)
	}
	if c.DNSName != "" {
		cfg.Discovery = append(cfg.Discovery, &discovery.DNS{Name: c.DNSName, Server: c.DNSServer, Interval: c.DNSInterval, Logger: cfg.Logger})
	}
	return cfg, nil
}

// command runs one command line and prints its reply. done reports a
// "close" command, whose reply the caller prints once the node is closed.
func command(ctx context.Context, node *mesh.Node, st *streams, out *printer, line string) (seq int, done bool) {
	f := strings.Fields(line)
	if len(f) < 2 {
		out.print(Event{Ev: "reply", Err: fmt.Sprintf("bad command %q", line)})
		return 0, false
	}
	seq, err := strconv.Atoi(f[0])
	if err != nil {
		out.print(Event{Ev: "reply", Err: fmt.Sprintf("bad command number in %q", line)})
		return 0, false
	}
	reply := Event{Ev: "reply", Seq: seq}
	args := f[2:]
	switch f[1] {
	case "register":
		if len(args) < 1 {
			err = errors.New("register NAME@VER [KEY=VALUE ...]")
			break
		}
		meta := map[string]string{}
		for _, kv := range args[1:] {
			k, v, _ := strings.Cut(kv, "=")
			meta[k] = v
		}
		var r registry.Record
		if r, err = node.Register(mesh.Service{Role: args[0], Meta: meta}); err == nil {
			rec := toRecord(r)
			reply.Rec = &rec
		}
	case "free":
		if len(args) != 1 {
			err = errors.New("free RECORD-ID")
			break
		}
		err = node.Free(args[0])
	case "send":
		if len(args) < 2 {
			err = errors.New("send PEER TEXT")
			break
		}
		sctx, cancel := context.WithTimeout(ctx, commandTimeout)
		err = node.Send(sctx, args[0], []byte(strings.Join(args[1:], " ")))
		cancel()
	case "connect":
		if len(args) != 1 {
			err = errors.New("connect HOST:PORT")
			break
		}
		cctx, cancel := context.WithTimeout(ctx, commandTimeout)
		var p mesh.Peer
		if p, err = node.Connect(cctx, args[0]); err == nil {
			reply.Peer = p.ID
		}
		cancel()
	case "peers":
		reply.Peers = []string{}
		for _, p := range node.Peers() {
			reply.Peers = append(reply.Peers, p.ID)
		}
		slices.Sort(reply.Peers)
	case "services":
		q := ""
		if len(args) > 0 {
			q = args[0]
		}
		var rs []registry.Record
		if rs, err = node.Services(q); err == nil {
			reply.Records = []Record{}
			for _, r := range rs {
				reply.Records = append(reply.Records, toRecord(r))
			}
			slices.SortFunc(reply.Records, func(a, b Record) int { return strings.Compare(a.ID, b.ID) })
		}
	case "stream-listen":
		if len(args) != 1 {
			err = errors.New("stream-listen NAME")
			break
		}
		err = st.listen(args[0])
	case "stream-send":
		var peer, protocol string
		var n int64
		var every time.Duration
		if peer, protocol, n, every, err = parseStreamSend(args); err == nil {
			err = st.send(peer, protocol, n, every)
		}
	case "close":
		return seq, true
	default:
		err = fmt.Errorf("unknown command %q", f[1])
	}
	if err != nil {
		reply.Err = err.Error()
	}
	out.print(reply)
	return seq, false
}

// fromMesh turns a node event into an output line.
func fromMesh(e mesh.Event) Event {
	out := Event{Ev: e.Kind.String(), T: e.Time.UnixNano(), Peer: e.Peer, Undelivered: e.Undelivered}
	if e.Err != nil {
		out.Err = e.Err.Error()
	}
	if e.Kind == mesh.PeerSynced {
		out.Ev = "synced"
	}
	return out
}

// fromWatch turns a service event into an output line: "registered",
// "updated", "freed" (with the record, Peer its owner) or "overflowed".
func fromWatch(e mesh.ServiceEvent) Event {
	out := Event{Ev: e.Kind.String()}
	if e.Kind != registry.Overflowed {
		rec := toRecord(e.Record)
		out.Rec, out.Peer = &rec, e.Record.Owner
	}
	return out
}

// leave shuts node down gracefully, for at most leaveTimeout.
func leave(node *mesh.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	node.Shutdown(ctx)
}

// printing prints what a discoverer reports (found, lost) before the node
// takes it. Errors are left to the node's discovery-error events.
type printing struct {
	d   discovery.Discoverer
	out *printer
}

func (p printing) Run(ctx context.Context, self discovery.Self, report func(discovery.Event)) error {
	return p.d.Run(ctx, self, func(e discovery.Event) {
		if e.Err == nil {
			ev := Event{Ev: e.Kind.String(), Peer: e.Peer.ID}
			for _, a := range e.Peer.Addrs {
				ev.Addrs = append(ev.Addrs, a.String())
			}
			p.out.print(ev)
		}
		report(e)
	})
}

// printer writes events, one line each, from any goroutine.
type printer struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (p *printer) print(e Event) {
	if e.T == 0 {
		e.T = time.Now().UnixNano()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enc.Encode(e) // a closed stdout means the harness is gone; nothing to do
}

// checkPrivate refuses to run outside the tests' private namespaces: the
// environment must say so (netns.Inside), and every interface must be
// loopback or one the tests made (named "ts…").
func checkPrivate() error {
	if !netns.Inside() {
		return errors.New("refusing to run outside a private network namespace (run me from the tests)")
	}
	if err := netns.CheckPrivate(); err != nil {
		return fmt.Errorf("refusing to run: %w", err)
	}
	return nil
}
