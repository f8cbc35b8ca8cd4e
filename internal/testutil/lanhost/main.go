// Command lanhost is one host's mesh node in the multi-host LAN tests
// (internal/testutil/lan): it joins a cluster, prints what happens to it as JSON
// lines on standard output and takes commands on standard input.
//
// It refuses to run outside the private network namespaces the tests make
// (internal/testutil/netns), and on any interface not made by the tests, so that it
// never sends a packet on a real LAN.
//
//	lanhost -cluster C [-id ID] [-secret S] [-listen ADDR] [-iface NAME]...
//	        [-timers local|default] [-keepalive D] [-write-timeout D]
//	        [-heartbeat D] [-lifetime D] [-role NAME@VER]...
//
// Output, one JSON object a line (see event): "start" with the node's id
// and addresses once it has joined, then "peer-up", "peer-down",
// "synced", "registered", "updated", "freed", "discovery-error" and "msg"
// as they happen, "reply" for each command, and "fatal" when it cannot
// join (it then exits with status 1).
//
// Commands, one a line, each starting with a number the reply repeats:
//
//	N register NAME@VER [KEY=VALUE]...   reply: rec
//	N free RECORD-ID
//	N send PEER TEXT...                  TEXT arrives as one message
//	N connect HOST:PORT                  reply: peer (the id linked)
//	N peers                              reply: peers (ids, sorted)
//	N services [QUERY]                   reply: records (sorted by id)
//	N close                              leave gracefully and exit 0
//
// End of input also closes the node; SIGINT and SIGTERM too.
//
// With -proxy listen=ADDR,to=ADDR,delay=D it is instead a TCP proxy that
// adds D of latency in each direction (the kernel has no netem): it
// prints "start" with its address and runs until its input ends.
package main

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

// event is one line of output. Unset fields are left out.
type event struct {
	Ev    string   `json:"ev"`
	T     int64    `json:"t"` // Unix nanoseconds
	ID    string   `json:"id,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
	Peer  string   `json:"peer,omitempty"`
	Err   string   `json:"err,omitempty"`
	Rec   *record  `json:"rec,omitempty"`
	Data  string   `json:"data,omitempty"`
	Seq   int      `json:"seq,omitempty"`
	Peers []string `json:"peers,omitempty"`
	Recs  []record `json:"records,omitempty"`
}

// record is a registry record as printed.
type record struct {
	ID    string            `json:"id"`
	Role  string            `json:"role"`
	Owner string            `json:"owner"`
	Host  string            `json:"host,omitempty"`
	Port  int               `json:"port,omitempty"`
	Meta  map[string]string `json:"meta,omitempty"`
	Inc   uint64            `json:"inc"`
	Seq   uint64            `json:"seq"`
}

func toRecord(r registry.Record) record {
	return record{ID: r.ID, Role: r.Role(), Owner: r.Owner, Host: r.Host, Port: r.Port, Meta: r.Meta, Inc: r.Rev.Incarnation, Seq: r.Rev.Seq}
}

// printer writes events, one line each, from any goroutine.
type printer struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (p *printer) print(e event) {
	if e.T == 0 {
		e.T = time.Now().UnixNano()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enc.Encode(e) // a closed stdout means the harness is gone; nothing to do
}

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	out := &printer{enc: json.NewEncoder(os.Stdout)}
	if err := run(out); err != nil {
		out.print(event{Ev: "fatal", Err: err.Error()})
		fmt.Fprintln(os.Stderr, "lanhost:", err)
		os.Exit(1)
	}
}

func run(out *printer) error {
	var (
		cluster   = flag.String("cluster", "", "cluster to join (required)")
		id        = flag.String("id", "", "node id (empty: a random UUID)")
		secret    = flag.String("secret", "", "cluster secret")
		listen    = flag.String("listen", ":0", "address to accept links on")
		timers    = flag.String("timers", "local", "timer preset: local (mesh.LocalConfig) or default (zero Config)")
		keepalive = flag.Duration("keepalive", 0, "link keepalive interval (0: the preset's)")
		writeTO   = flag.Duration("write-timeout", 0, "link write and ping timeout (0: the preset's)")
		heartbeat = flag.Duration("heartbeat", 0, "registry heartbeat (0: the preset's)")
		lifetime  = flag.Duration("lifetime", 0, "registry record lifetime (0: the preset's)")
		mdnsTTL   = flag.Duration("mdns-ttl", 0, "mDNS record TTL (0: the default)")
		noMDNS    = flag.Bool("no-mdns", false, "run no discovery: links come from connect commands and peer exchange")
		proxy     = flag.String("proxy", "", "run as a delaying TCP proxy: listen=ADDR,to=ADDR,delay=D")
		debug     = flag.Bool("debug", false, "log at Debug level to standard error")
		ifaces    list
		roles     list
	)
	flag.Var(&ifaces, "iface", "interface to run mDNS on (repeatable; none: the default choice)")
	flag.Var(&roles, "role", "role name@version to register at start (repeatable)")
	flag.Parse()
	if *proxy != "" {
		if err := checkPrivate(); err != nil {
			return err
		}
		return runProxy(out, *proxy)
	}
	if *cluster == "" || flag.NArg() > 0 {
		flag.Usage()
		return errors.New("usage: -cluster is required and no arguments are taken")
	}
	if err := checkPrivate(); err != nil {
		return err
	}

	var cfg mesh.Config
	switch *timers {
	case "local":
		cfg = mesh.LocalConfig()
	case "default":
	default:
		return fmt.Errorf("-timers %q: want local or default", *timers)
	}
	set := func(d *time.Duration, v time.Duration) {
		if v > 0 {
			*d = v
		}
	}
	set(&cfg.KeepAliveInterval, *keepalive)
	set(&cfg.WriteTimeout, *writeTO)
	set(&cfg.Heartbeat, *heartbeat)
	set(&cfg.Lifetime, *lifetime)
	cfg.ID = *id
	cfg.Secret = *secret
	cfg.Listen = *listen
	level := slog.LevelWarn
	if *debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	md := &discovery.MDNS{TTL: *mdnsTTL, Logger: cfg.Logger}
	for _, name := range ifaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return fmt.Errorf("-iface %s: %w", name, err)
		}
		md.Interfaces = append(md.Interfaces, *ifi)
	}
	cfg.Discovery = []discovery.Discoverer{md}
	if *noMDNS {
		cfg.Discovery = mesh.NoDiscovery
	}

	node, err := mesh.New(*cluster, cfg)
	if err != nil {
		return err
	}
	defer leave(node)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := node.Events(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	err = node.Start(sctx)
	scancel()
	if err != nil {
		return err
	}
	var addrs []string
	for _, a := range node.Addrs() {
		addrs = append(addrs, a.String())
	}
	services, err := node.Watch(ctx, "")
	if err != nil {
		return err
	}
	out.print(event{Ev: "start", ID: node.ID(), Addrs: addrs})

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
			out.print(event{Ev: "msg", Peer: m.From, Data: string(m.Data)})
		}
	}()

	for _, role := range roles {
		if _, err := node.Register(mesh.Service{Role: role}); err != nil {
			return fmt.Errorf("register %s: %w", role, err)
		}
	}

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
			seq, done := command(ctx, node, out, line)
			if done {
				leave(node)
				out.print(event{Ev: "reply", Seq: seq})
				return nil
			}
		}
	}
}

// command runs one command line and prints its reply. done reports a
// "close" command, whose reply the caller prints once the node is closed.
func command(ctx context.Context, node *mesh.Node, out *printer, line string) (seq int, done bool) {
	f := strings.Fields(line)
	if len(f) < 2 {
		out.print(event{Ev: "reply", Err: fmt.Sprintf("bad command %q", line)})
		return 0, false
	}
	seq, err := strconv.Atoi(f[0])
	if err != nil {
		out.print(event{Ev: "reply", Err: fmt.Sprintf("bad command number in %q", line)})
		return 0, false
	}
	reply := event{Ev: "reply", Seq: seq}
	args := f[2:]
	switch f[1] {
	case "register":
		if len(args) < 1 {
			err = errors.New("register NAME@VER [KEY=VALUE]...")
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
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = node.Send(sctx, args[0], []byte(strings.Join(args[1:], " ")))
		cancel()
	case "connect":
		if len(args) != 1 {
			err = errors.New("connect HOST:PORT")
			break
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
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
	case "services":
		q := ""
		if len(args) > 0 {
			q = args[0]
		}
		var rs []registry.Record
		if rs, err = node.Services(q); err == nil {
			reply.Recs = []record{}
			for _, r := range rs {
				reply.Recs = append(reply.Recs, toRecord(r))
			}
			slices.SortFunc(reply.Recs, func(a, b record) int { return strings.Compare(a.ID, b.ID) })
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
func fromMesh(e mesh.Event) event {
	out := event{T: e.Time.UnixNano(), Peer: e.Peer}
	if e.Err != nil {
		out.Err = e.Err.Error()
	}
	switch e.Kind {
	case mesh.PeerUp:
		out.Ev = "peer-up"
	case mesh.PeerDown:
		out.Ev = "peer-down"
	case mesh.PeerSynced:
		out.Ev = "synced"
	case mesh.DiscoveryError:
		out.Ev = "discovery-error"
	default:
		out.Ev = e.Kind.String()
	}
	return out
}

// leave shuts node down gracefully, for at most leaveTimeout.
func leave(node *mesh.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	node.Shutdown(ctx)
}

const leaveTimeout = 5 * time.Second

// fromWatch turns a service event into an output line: "registered",
// "updated", "freed" (with the record, Peer its owner) or "overflowed".
func fromWatch(e mesh.ServiceEvent) event {
	out := event{T: time.Now().UnixNano(), Ev: e.Kind.String()}
	if e.Kind != registry.Overflowed {
		rec := toRecord(e.Record)
		out.Rec, out.Peer = &rec, e.Record.Owner
	}
	return out
}

// checkPrivate refuses to run outside the tests' private namespaces: the
// environment must say so, and every interface must be loopback or one
// the tests made (named "ts…").
func checkPrivate() error {
	if !netns.Inside() {
		return errors.New("refusing to run outside a private network namespace (run me from the tests)")
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback == 0 && !strings.HasPrefix(ifi.Name, "ts") {
			return fmt.Errorf("refusing to run: interface %q was not made by the tests", ifi.Name)
		}
	}
	return nil
}
