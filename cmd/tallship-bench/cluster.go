package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

var quiet = benchLogger()

// benchLogger discards log lines unless TALLSHIP_BENCH_LOG names a level
// (debug, info, warn), then writes them to stderr.
func benchLogger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("TALLSHIP_BENCH_LOG"))); err != nil || os.Getenv("TALLSHIP_BENCH_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// benchNode is a node whose events are logged with their times, so that a
// measure can ask when something happened on it.
type benchNode struct {
	*mesh.Node
	notify chan struct{} // shared by a group of nodes: poked on every event

	ctx       context.Context // ends with close
	wg        sync.WaitGroup  // the loggers
	mu        sync.Mutex
	log       []entry
	up        map[string]bool
	upChanged time.Time // when the set of peers up last changed

	cancel context.CancelFunc
}

// entry is one logged event: the node's own (Event) or, from Watch, a
// service's (Service set).
type entry struct {
	mesh.Event
	Service *mesh.ServiceEvent
}

// newBenchNode makes a node that has not started and logs its events.
func newBenchNode(cluster string, cfg mesh.Config, notify chan struct{}) (*benchNode, error) {
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	n, err := mesh.New(cluster, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &benchNode{Node: n, notify: notify, up: map[string]bool{}, ctx: ctx, cancel: cancel}
	events := n.Events(ctx)
	b.wg.Go(func() {
		for e := range events {
			b.mu.Lock()
			b.log = append(b.log, entry{Event: e})
			switch e.Kind {
			case mesh.PeerUp:
				if !b.up[e.Peer] {
					b.up[e.Peer] = true
					b.upChanged = e.Time
				}
			case mesh.PeerDown:
				if b.up[e.Peer] {
					delete(b.up, e.Peer)
					b.upChanged = e.Time
				}
			}
			b.mu.Unlock()
			b.poke()
		}
	})
	return b, nil
}

// start starts the node and logs its services' events too.
func (b *benchNode) start(ctx context.Context) error {
	if err := b.Start(ctx); err != nil {
		return err
	}
	services, err := b.Watch(b.ctx, "")
	if err != nil {
		return err
	}
	b.wg.Go(func() {
		for e := range services {
			b.mu.Lock()
			b.log = append(b.log, entry{Event: mesh.Event{Time: time.Now()}, Service: &e})
			b.mu.Unlock()
			b.poke()
		}
	})
	return nil
}

func (b *benchNode) poke() {
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// leave shuts the node down gracefully (at most 5 s) and ends its event
// log.
func (b *benchNode) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	b.Shutdown(ctx)
	cancel()
	b.close()
}

// close closes the node at once and ends its event log.
func (b *benchNode) close() {
	b.Node.Close()
	b.cancel()
	b.wg.Wait()
}

// mark is the position in the log from which a measure looks for events.
func (b *benchNode) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.log)
}

// find returns the first event at or after position from that matches.
func (b *benchNode) find(from int, match func(entry) bool) (entry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.log[min(from, len(b.log)):] {
		if match(e) {
			return e, true
		}
	}
	return entry{}, false
}

// count returns how many events from position from match.
func (b *benchNode) count(from int, match func(entry) bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := 0
	for _, e := range b.log[min(from, len(b.log)):] {
		if match(e) {
			c++
		}
	}
	return c
}

func (b *benchNode) peersUp() (int, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.up), b.upChanged
}

var errTimeout = errors.New("timed out")

// group is a set of nodes sharing one notification channel.
type group struct {
	nodes  []*benchNode
	notify chan struct{}
}

func newGroup() *group { return &group{notify: make(chan struct{}, 1)} }

func (g *group) add(cluster string, cfg mesh.Config) (*benchNode, error) {
	b, err := newBenchNode(cluster, cfg, g.notify)
	if err != nil {
		return nil, err
	}
	g.nodes = append(g.nodes, b)
	return b, nil
}

// closeAll closes every node, in parallel.
func (g *group) closeAll() {
	var wg sync.WaitGroup
	for _, b := range g.nodes {
		wg.Go(b.close)
	}
	wg.Wait()
	g.nodes = nil
}

func (g *group) marks() []int {
	m := make([]int, len(g.nodes))
	for i, b := range g.nodes {
		m[i] = b.mark()
	}
	return m
}

// waitAll waits until every node of nodes (with log positions marks) has
// an event that matches, and returns the latest of those events' times.
func (g *group) waitAll(nodes []*benchNode, marks []int, timeout time.Duration, match func(entry) bool) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		var latest time.Time
		missing := 0
		for i, b := range nodes {
			e, ok := b.find(marks[i], match)
			if !ok {
				missing++
				continue
			}
			if e.Time.After(latest) {
				latest = e.Time
			}
		}
		if missing == 0 {
			return latest, nil
		}
		select {
		case <-g.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("%w after %v: %d of %d nodes without the event", errTimeout, timeout, missing, len(nodes))
		}
	}
}

// waitFull waits until every node of nodes has want peers up and returns
// when the last of them got there.
func (g *group) waitFull(nodes []*benchNode, want int, timeout time.Duration) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		var latest time.Time
		missing, least := 0, want
		for _, b := range nodes {
			n, at := b.peersUp()
			least = min(least, n)
			if n != want {
				missing++
			} else if at.After(latest) {
				latest = at
			}
		}
		if missing == 0 {
			return latest, nil
		}
		select {
		case <-g.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("%w after %v: least-linked node %d of %d peers, %d of %d nodes short", errTimeout, timeout, least, want, missing, len(nodes))
		}
	}
}

// startAll starts every node at once and returns when the starts began.
func (g *group) startAll(nodes []*benchNode) (time.Time, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	t0 := time.Now()
	for i, b := range nodes {
		wg.Go(func() { errs[i] = b.start(context.Background()) })
	}
	wg.Wait()
	return t0, errors.Join(errs...)
}

// mdnsConfig is the default Config: mDNS, default timers, quiet.
func mdnsConfig() mesh.Config {
	return mesh.Config{Logger: quiet}
}

// startMesh makes n nodes of cluster with cfg and starts them at once; t0
// is when the starts began.
func startMesh(cluster string, n int, cfg mesh.Config) (g *group, t0 time.Time, err error) {
	g = newGroup()
	for range n {
		if _, err := g.add(cluster, cfg); err != nil {
			g.closeAll()
			return nil, t0, err
		}
	}
	if t0, err = g.startAll(g.nodes); err != nil {
		g.closeAll()
		return nil, t0, err
	}
	return g, t0, nil
}

// formMesh starts n nodes of cluster with cfg and waits for the full mesh.
func formMesh(cluster string, n int, cfg mesh.Config, timeout time.Duration) (*group, time.Duration, error) {
	g, t0, err := startMesh(cluster, n, cfg)
	if err != nil {
		return nil, 0, err
	}
	at, err := g.waitFull(g.nodes, n-1, timeout)
	if err != nil {
		g.closeAll()
		return nil, 0, err
	}
	return g, at.Sub(t0), nil
}

// onMesh forms an n-node mesh of cluster with the default Config, allowing
// it limit, says how long it took, runs measure on it and closes it. If it
// does not form, every row of rows fails with the reason.
func onMesh(rows []*row, cluster string, n int, limit time.Duration, measure func(g *group)) {
	g, d, err := formMesh(cluster, n, mdnsConfig(), limit)
	if err != nil {
		for _, r := range rows {
			r.err = fmt.Errorf("%d-node mesh: %w", n, err)
		}
		return
	}
	fmt.Printf("%d-node mesh formed in %v\n", n, d.Round(time.Millisecond))
	measure(g)
	g.closeAll()
}

// firstUps returns when each peer was first up on each node of g, from
// t0.
func (g *group) firstUps(t0 time.Time) []time.Duration {
	var ups []time.Duration
	for _, b := range g.nodes {
		b.mu.Lock()
		seen := map[string]bool{}
		for _, e := range b.log {
			if e.Service == nil && e.Kind == mesh.PeerUp && !seen[e.Peer] {
				seen[e.Peer] = true
				ups = append(ups, e.Time.Sub(t0))
			}
		}
		b.mu.Unlock()
	}
	return ups
}

// endsUp returns when each share of ends link ends had been up, as ups
// (firstUps, of every node) say; -1 for a share never reached.
func endsUp(ups []time.Duration, ends int, shares ...float64) []time.Duration {
	ups = slices.Sorted(slices.Values(ups))
	at := make([]time.Duration, len(shares))
	for i, share := range shares {
		k := int(math.Ceil(share * float64(ends)))
		at[i] = -1
		if k >= 1 && k <= len(ups) {
			at[i] = ups[k-1]
		}
	}
	return at
}

// downs counts the peer-downs of g's nodes, and them by reason (generic).
func (g *group) downs() (int, map[string]int) {
	downs, why := 0, map[string]int{}
	for _, b := range g.nodes {
		downs += b.count(0, func(e entry) bool {
			if !isDown(e) {
				return false
			}
			reason := "goodbye"
			if e.Err != nil {
				reason = generic(e.Err.Error())
			}
			why[reason]++
			return true
		})
	}
	return downs, why
}

// handshakes returns the links g's nodes took into the mesh (each link
// counts at both ends: a full mesh of N nodes made with no link redone
// and no duplicate is N(N−1)) and the handshakes they refused.
func (g *group) handshakes() (made, refused uint64) {
	for _, b := range g.nodes {
		s := b.Stats()
		made += s.LinksMade
		r := s.HandshakesRefused
		refused += r.Auth + r.Cluster + r.Version + r.DuplicateID + r.Self + r.Timeout + r.Other
	}
	return made, refused
}

// short returns the fewest peers a node of g has, and how many nodes have
// fewer than want.
func (g *group) short(want int) (least, missing int) {
	least = want
	for _, b := range g.nodes {
		n, _ := b.peersUp()
		least = min(least, n)
		if n != want {
			missing++
		}
	}
	return least, missing
}

func isPeer(kind mesh.EventKind, id string) func(entry) bool {
	return func(e entry) bool { return e.Service == nil && e.Kind == kind && e.Peer == id }
}

// isDown matches any peer-down.
func isDown(e entry) bool { return e.Service == nil && e.Kind == mesh.PeerDown }

func isService(kind registry.EventKind, recID string) func(entry) bool {
	return func(e entry) bool { return e.Service != nil && e.Service.Kind == kind && e.Service.Record.ID == recID }
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
