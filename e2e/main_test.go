package e2e_test

// End-to-end tests of the whole library across real nodes, in a private
// network namespace with only loopback (internal/testutil/netns): nodes find each
// other by mDNS there unless a test links them with Connect, and no packet
// leaves the machine. This file has TestMain and the shared helpers; the
// tests are in registry_test.go, services_test.go, faults_test.go, the
// lan_*_test.go files (hosts of a private LAN) and the subnet_*_test.go
// files (two routed subnets). Nodes in processes of their own are the
// test-node harness (internal/testutil/node: startNode).

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/testutil/node"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

func TestMain(m *testing.M) { netns.Main(m) }

// Bounds of the waits. They are generous: a wait ends as soon as its
// condition holds, so they cost nothing when things work.
const (
	meshWait   = 10 * time.Second // nodes to find and link each other
	changeWait = 5 * time.Second  // a change to reach every node
)

// ---- helpers ----

var clusterSeq atomic.Int64

// clusterName returns a cluster name used by this test alone, so nodes of
// different tests never meet even though they share the namespace.
func clusterName(t *testing.T) string {
	name := strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
	return fmt.Sprintf("ts-%s-%d-%d", name, os.Getpid(), clusterSeq.Add(1))
}

// testLogger logs at Debug to stderr with TALLSHIP_DEBUG set, else nothing.
func testLogger() *slog.Logger {
	if os.Getenv("TALLSHIP_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// nodeConfig is mesh.LocalConfig listening on loopback, with mDNS
// discovery (Discovery nil), and with a keepalive and a record lifetime
// that tolerate a loaded machine: under -race on two busy cores,
// LocalConfig's 100 ms keepalive with a 200 ms answer bound declared live
// links dead by the dozen (and a 500 ms lifetime expired live owners).
// Neither matters to what these tests measure: a crash resets the links
// at once, and a close says goodbye. harnessConfig is the same for a
// harness node.
func nodeConfig(id string) mesh.Config {
	c := mesh.LocalConfig()
	c.ID = id
	c.Listen = "127.0.0.1:0"
	c.KeepAliveInterval = 250 * time.Millisecond
	c.WriteTimeout = time.Second
	c.Lifetime = time.Second
	c.Logger = testLogger()
	return c
}

// harnessConfig is nodeConfig for a harness node (startNode).
func harnessConfig(cluster, id string) node.Config {
	return node.Config{Cluster: cluster, ID: id, Listen: "127.0.0.1:0", KeepAlive: 250 * time.Millisecond, WriteTimeout: time.Second, Lifetime: time.Second}
}

// connectConfig is nodeConfig without discovery: links come from Connect
// (and peer exchange) only.
func connectConfig(id string) mesh.Config {
	c := nodeConfig(id)
	c.Discovery = mesh.NoDiscovery
	return c
}

// join starts a node that is closed when the test ends, recording its
// events from before it starts (see logOf).
func join(t *testing.T, cluster string, cfg mesh.Config) *mesh.Node {
	t.Helper()
	n, _ := startLogged(t, cluster, cfg)
	return n
}

// eventLogs holds the event log of every node join and startLogged made.
var eventLogs sync.Map // *mesh.Node → *eventLog

func logOf(n *mesh.Node) *eventLog {
	l, _ := eventLogs.Load(n)
	return l.(*eventLog)
}

// converge waits until the registry of every node has synced with every
// other node, then until what each announced has reached all (settle).
// Only then do the nodes agree on who is linked to whom; a link dropping
// before may free records that a node cannot yet know are reachable
// another way.
func converge(t *testing.T, nodes ...*mesh.Node) {
	t.Helper()
	for _, n := range nodes {
		for _, o := range nodes {
			if o != n {
				logOf(n).waitFor(t, meshWait, n.ID()+" synced with "+o.ID(), func(ev mesh.Event) bool {
					return ev.Kind == mesh.PeerSynced && ev.Peer == o.ID()
				})
			}
		}
	}
	settle(t, nodes...)
}

// addrOf returns a node's first address, for Connect.
func addrOf(t *testing.T, n *mesh.Node) string {
	t.Helper()
	as := n.Addrs()
	if len(as) == 0 {
		t.Fatalf("node %s has no address", n.ID())
	}
	return as[0].String()
}

// connect links a to the node at addr (a keeps it).
func connect(t *testing.T, a *mesh.Node, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Connect(ctx, addr); err != nil {
		t.Fatalf("%s connect %s: %v", a.ID(), addr, err)
	}
}

// eventually polls cond until it holds, failing t when d passes first.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func peerIDs(n *mesh.Node) []string {
	var ids []string
	for _, p := range n.Peers() {
		ids = append(ids, p.ID)
	}
	return ids
}

// fullMesh reports whether every node has exactly the others as peers.
func fullMesh(nodes ...*mesh.Node) bool {
	for _, n := range nodes {
		var want []string
		for _, o := range nodes {
			if o != n {
				want = append(want, o.ID())
			}
		}
		slices.Sort(want)
		if !slices.Equal(peerIDs(n), want) {
			return false
		}
	}
	return true
}

// missingLinks lists the pairs of nodes not linked, as each end sees it.
func missingLinks(nodes []*mesh.Node) []string {
	var out []string
	for _, n := range nodes {
		for _, o := range nodes {
			if o != n && !linked(n, o) {
				out = append(out, n.ID()+"↛"+o.ID())
			}
		}
	}
	return out
}

// discoveryErrors lists the DiscoveryError events of nodes.
func discoveryErrors(nodes []*mesh.Node) []string {
	var out []string
	for _, n := range nodes {
		for _, ev := range logOf(n).since(0) {
			if ev.Kind == mesh.DiscoveryError {
				out = append(out, n.ID()+": "+ev.Err.Error())
			}
		}
	}
	return out
}

func linked(a, b *mesh.Node) bool { return slices.Contains(peerIDs(a), b.ID()) }

// services returns n's records matching query, failing t on an error.
func services(t *testing.T, n *mesh.Node, query string) []mesh.Record {
	t.Helper()
	recs, err := n.Services(query)
	if err != nil {
		t.Fatalf("%s Services(%q): %v", n.ID(), query, err)
	}
	return recs
}

// has reports whether n sees the record id under query.
func has(t *testing.T, n *mesh.Node, query, id string) bool {
	t.Helper()
	return slices.ContainsFunc(services(t, n, query), func(r mesh.Record) bool { return r.ID == id })
}

func versions(recs []mesh.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Version)
	}
	slices.Sort(out)
	return out
}

func register(t *testing.T, n *mesh.Node, s mesh.Service) mesh.Record {
	t.Helper()
	rec, err := n.Register(s)
	if err != nil {
		t.Fatalf("%s register %s: %v", n.ID(), s.Role, err)
	}
	return rec
}

// recorder collects a Watch channel's events until the channel closes.
type recorder struct {
	node string
	mu   sync.Mutex
	evs  []mesh.ServiceEvent
	wake chan struct{}
	done chan struct{}
}

// watch starts recording n's events for query; the recording stops when
// the test ends.
func watch(t *testing.T, n *mesh.Node, query string) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := n.Watch(ctx, query)
	if err != nil {
		cancel()
		t.Fatalf("%s Watch(%q): %v", n.ID(), query, err)
	}
	r := &recorder{node: n.ID(), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range ch {
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			r.mu.Unlock()
			select {
			case r.wake <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *recorder) events() []mesh.ServiceEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

// describe lists the recorded events, for failure messages.
func (r *recorder) describe() string {
	var b strings.Builder
	for _, ev := range r.events() {
		fmt.Fprintf(&b, "\n\t%v %s %s rev %v", ev.Kind, ev.Record.ID, ev.Record.Role(), ev.Record.Rev)
	}
	return b.String()
}

// count returns how many events of kind concern the record id.
func (r *recorder) count(kind registry.EventKind, id string) int {
	n := 0
	for _, ev := range r.events() {
		if ev.Kind == kind && ev.Record.ID == id {
			n++
		}
	}
	return n
}

// waitFor waits until cond holds on the recorded events, woken by each new
// event, failing t after d.
func (r *recorder) waitFor(t *testing.T, d time.Duration, what string, cond func([]mesh.ServiceEvent) bool) time.Time {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		if cond(r.events()) {
			return time.Now()
		}
		select {
		case <-r.wake:
		case <-r.done:
			if cond(r.events()) {
				return time.Now()
			}
			t.Fatalf("%s: watch ended waiting for %s", r.node, what)
		case <-timer.C:
			t.Fatalf("%s: timed out after %v waiting for %s; events: %v", r.node, d, what, r.events())
		}
	}
}

// latest returns the later of two times.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// freedAll reports whether events hold a Freed event for every id.
func freedAll(ids ...string) func([]mesh.ServiceEvent) bool {
	return func(evs []mesh.ServiceEvent) bool {
		for _, id := range ids {
			if !slices.ContainsFunc(evs, func(ev mesh.ServiceEvent) bool { return ev.Kind == registry.Freed && ev.Record.ID == id }) {
				return false
			}
		}
		return true
	}
}

// ---- the harness node ----

// nodeBinary builds the test-node harness (internal/testutil/node), once
// per test binary, and returns its path.
func nodeBinary(t *testing.T) string {
	t.Helper()
	bin, err := node.Binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startNode runs a harness node of cfg in the test's namespace and waits
// until it has started. It is killed when the test ends, and with the
// test binary.
func startNode(t *testing.T, cfg node.Config) *node.Proc {
	t.Helper()
	return runNode(t, exec.Command(nodeBinary(t), cfg.Args()...), cfg)
}

// startNodeIn is startNode in the network namespace ns.
func startNodeIn(t *testing.T, ns *netns.Namespace, cfg node.Config) *node.Proc {
	t.Helper()
	return runNode(t, ns.Command(nodeBinary(t), cfg.Args()...), cfg)
}

func runNode(t *testing.T, cmd *exec.Cmd, cfg node.Config) *node.Proc {
	t.Helper()
	p, err := node.Start(cmd)
	if err != nil {
		t.Fatalf("start node %s: %v", cfg.ID, err)
	}
	t.Cleanup(func() { stopNode(t, p) })
	return p
}

// stopNode kills p, logging its events and standard error when the test
// failed or TALLSHIP_DEBUG is set.
func stopNode(t *testing.T, p *node.Proc) {
	if err := p.Kill(); err != nil {
		t.Error(err)
	}
	if t.Failed() || os.Getenv("TALLSHIP_DEBUG") != "" {
		t.Logf("node %s: %v; last events:\n%s\nstderr:\n%s", p, p.ExitErr(), p.Log(40), p.Stderr())
	}
}

// peersOf returns p's linked peers now, failing t when p cannot say.
func peersOf(t *testing.T, p *node.Proc) []string {
	t.Helper()
	ps, err := p.Peers()
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// recordIDs returns the ids of the records p registered for its roles.
func recordIDs(p *node.Proc) []string {
	var ids []string
	for _, r := range p.Records {
		ids = append(ids, r.ID)
	}
	return ids
}
