package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tallship-go/tallship/internal/wire"
)

// fakePeer speaks the protocol by hand, to play a peer that misbehaves or
// goes silent.
type fakePeer struct {
	id   string
	inc  uint64
	conn net.Conn
	errc chan error
}

// newFakePeer runs n.Serve with a fake peer id; what n writes is discarded.
func newFakePeer(t testing.TB, n *node, id string, inc uint64) *fakePeer {
	t.Helper()
	c1, c2 := net.Pipe()
	f := &fakePeer{id: id, inc: inc, conn: c2, errc: make(chan error, 1)}
	go func() { f.errc <- n.Serve(context.Background(), id, c1) }()
	go drain(c2)
	t.Cleanup(func() { c2.Close(); <-f.errc; f.errc <- nil })
	return f
}

// send writes frames, stopping at the first error.
func (f *fakePeer) send(frames ...[]byte) error {
	for _, fr := range frames {
		if _, err := f.conn.Write(fr); err != nil {
			return err
		}
	}
	return nil
}

// serveErr waits for Serve to return.
func (f *fakePeer) serveErr() error {
	err := <-f.errc
	f.errc <- err
	return err
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// fakeRecord is a record of the fake owner at seq.
func fakeRecord(owner string, inc, seq uint64, name string, meta map[string]string) *entry {
	v := must(parseVersion("1.0.0"))
	return &entry{rec: Record{
		ID: owner + "/" + name, Name: name, Version: "1.0.0", Owner: owner,
		Host: "10.0.0.9", Port: 7, Meta: meta, Rev: Rev{inc, seq},
	}, ver: v}
}

// join makes f a live owner holding recs, adjacent to n.
func (f *fakePeer) join(t testing.TB, n *node, recs ...*entry) {
	t.Helper()
	const max = DefaultMaxMessageBytes
	seq := uint64(len(recs))
	frames := [][]byte{must(encodeHello(f.id, []digestEntry{{owner: f.id, inc: f.inc, seq: seq, beat: 1}}, max))}
	frames = append(frames, must(encodeSnap(f.id, f.inc, seq, recs, max))...)
	frames = append(frames,
		must(encodeState(f.id, f.inc, seq, 1, false, []peerRef{{id: n.ID(), inc: n.self.inc}}, max)),
		encodeSynced())
	if err := f.send(frames...); err != nil {
		t.Fatal(err)
	}
}

// TestExpiryWhenOwnerStopsRenewing: an owner that goes silent while its
// link stays up (a line ghost—b—c—d) keeps its records on b, its
// neighbour, whose link to it stands for its heartbeat, and on c, which
// has b's word for that link; d, which knows it only through relays,
// expires them after the owner's lifetime. When the link drops, b and c
// free them at once.
func TestExpiryWhenOwnerStopsRenewing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 100 ms heartbeat, 500 ms lifetime
		b, c, d := newNode(t, "b"), newNode(t, "c"), newNode(t, "d")
		connect(t, b, c)
		connect(t, c, d)
		synctest.Wait()
		ghost := newFakePeer(t, b, "ghost", 7)
		rec := fakeRecord("ghost", 7, 1, "old", nil)
		ghost.join(t, b, rec)                      // then never renews
		time.Sleep(2 * (coalesceMin + relayDelay)) // b announces its new link, b and c relay ghost's state
		synctest.Wait()
		if !b.has(t, rec.rec.ID) || !c.has(t, rec.rec.ID) || !d.has(t, rec.rec.ID) {
			t.Fatal("the record did not arrive")
		}
		time.Sleep(b.cfg.Lifetime - b.cfg.Heartbeat)
		synctest.Wait()
		if !d.has(t, rec.rec.ID) {
			t.Fatal("the record expired before its lifetime")
		}
		time.Sleep(3 * b.cfg.Heartbeat)
		synctest.Wait()
		if d.has(t, rec.rec.ID) {
			t.Fatal("the record outlived its lifetime by more than a heartbeat three hops away")
		}
		time.Sleep(10 * b.cfg.Lifetime)
		synctest.Wait()
		if !b.has(t, rec.rec.ID) || b.count(Freed, rec.rec.ID) != 0 {
			t.Fatal("the owner's neighbour expired it while their link was up")
		}
		if !c.has(t, rec.rec.ID) || c.count(Freed, rec.rec.ID) != 0 {
			t.Fatal("the neighbour's neighbour expired it while b named the link")
		}
		// The expired owner is forgotten after another lifetime.
		known := locked(d, func(r *Registry) bool { _, ok := r.owners["ghost"]; return ok })
		if known {
			t.Error("expired owner still stored")
		}
		ghost.conn.Close()
		ghost.serveErr()
		synctest.Wait()
		if b.has(t, rec.rec.ID) {
			t.Error("the record stayed on the neighbour after their link dropped")
		}
		if c.has(t, rec.rec.ID) {
			t.Error("the record stayed two hops away after the link dropped")
		}
	})
}

// TestRenewedRecordsNeverExpire: on a line a—b—c—d, c has a renewed by
// b's link to it, and d, three hops away, by a's heartbeats, relayed:
// neither ever expires a's record.
func TestRenewedRecordsNeverExpire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c, d := newNode(t, "a"), newNode(t, "b"), newNode(t, "c"), newNode(t, "d")
		connect(t, a, b)
		connect(t, b, c)
		connect(t, c, d)
		synctest.Wait()
		rec := a.register(t, "x@1.0.0", 1, nil)
		time.Sleep(50 * a.cfg.Lifetime)
		synctest.Wait()
		for _, n := range []*node{b, c, d} {
			if !n.has(t, rec.ID) || len(n.eventsOf(Freed)) != 0 {
				t.Fatalf("a renewed record flapped on %s: has it: %v, freed events: %v",
					n.ID(), n.has(t, rec.ID), n.eventsOf(Freed))
			}
		}
	})
}

func TestGoroutinesEndAfterClose(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		ns := nodes(t, 4)
		fullMesh(t, ns)
		ln, err := ns[0].Listen(t.Context(), Service{Role: "x@1.0.0"}, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for _, n := range ns {
			if _, err := n.Watch(ctx, "x"); err != nil {
				t.Fatal(err)
			}
			go n.Lookup(ctx, "never")
			waitFor(t, "record", func() bool { return n.has(t, ln.Record().ID) })
		}
		for _, n := range ns {
			n.Close()
		}
	}()
	waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base })
}

func TestPeerBreakingLimitsIsRefused(t *testing.T) {
	big := map[string]string{"k": "0123456789012345678901234567890123456789"}
	for _, tc := range []struct {
		name   string
		frames func(f *fakePeer) [][]byte
		want   error
	}{
		{"metadata", func(f *fakePeer) [][]byte {
			return [][]byte{must(encodePut(f.id, f.inc, fakeRecord(f.id, f.inc, 1, "big", big), 1<<20))}
		}, ErrMetadataTooLarge},
		{"records by puts", func(f *fakePeer) [][]byte {
			var out [][]byte
			for i := range 3 {
				out = append(out, must(encodePut(f.id, f.inc, fakeRecord(f.id, f.inc, uint64(i+1), "r"+string(rune('a'+i)), nil), 1<<20)))
			}
			return out
		}, ErrTooManyRecords},
		{"records by snapshot", func(f *fakePeer) [][]byte {
			recs := []*entry{fakeRecord(f.id, f.inc, 1, "a", nil), fakeRecord(f.id, f.inc, 2, "b", nil), fakeRecord(f.id, f.inc, 3, "c", nil)}
			return must(encodeSnap(f.id, f.inc, 3, recs, 1<<20))
		}, ErrTooManyRecords},
		{"frame size", func(f *fakePeer) [][]byte {
			return [][]byte{{byte(msgPut), 0x80, 0x80, 0x40}} // a 1 MiB payload follows
		}, ErrMessageTooLarge},
		{"garbage", func(f *fakePeer) [][]byte {
			return [][]byte{{99, 2, 1, 2}}
		}, ErrProtocol},
		{"second hello", func(f *fakePeer) [][]byte {
			return [][]byte{must(encodeHello(f.id, nil, 1<<20))}
		}, ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newNode(t, "b", func(c *Config) {
				c.MaxMetadataBytes = 16
				c.MaxRecordsPerOwner = 2
				c.MaxMessageBytes = 64 << 10
			})
			f := newFakePeer(t, b, "bad", 5)
			f.join(t, b)
			f.send(tc.frames(f)...)
			if err := f.serveErr(); !errors.Is(err, tc.want) {
				t.Fatalf("Serve = %v, want %v", err, tc.want)
			}
			if got := b.ids(t, ""); len(got) > 2 {
				t.Fatalf("b holds %v", got)
			}
		})
	}
}

func TestHandshakeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"not hello first", encodeSynced()},
		{"wrong id", must(encodeHello("mallory", nil, 1<<20))},
		{"wrong version", func() []byte {
			_, p := splitFrame(must(encodeHello("bad", nil, 1<<20)))
			p[0] = 99 // proto, the first field
			return wire.Frame(byte(msgHello), p)
		}()},
		{"unknown digest flag", func() []byte {
			_, p := splitFrame(must(encodeHello("bad", []digestEntry{{owner: "bad", inc: 1, beat: 1}}, 1<<20)))
			p[len(p)-1] = 2 // the flags of the last entry; bit 0 alone is defined
			return wire.Frame(byte(msgHello), p)
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newNode(t, "b")
			f := newFakePeer(t, b, "bad", 1)
			f.send(tc.frame)
			if err := f.serveErr(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("Serve = %v, want ErrProtocol", err)
			}
		})
	}
}

// A node with slower timers than its peer is not expired by the peer: its
// state says how long its records live.
func TestOwnersLifetimeRulesExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := newNode(t, "slow", func(c *Config) { c.Heartbeat, c.Lifetime = time.Second, 5*time.Second })
		fast := newNode(t, "fast") // 100 ms heartbeat, 500 ms lifetime
		connect(t, slow, fast)
		synctest.Wait()
		rec := slow.register(t, "web@1.0.0", 80, nil)
		synctest.Wait()
		for i := 0; i < 30; i++ {
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
			if !fast.has(t, rec.ID) {
				t.Fatalf("the fast node dropped the slow node's record after %v", time.Duration(i+1)*100*time.Millisecond)
			}
		}
		if n := fast.count(Freed, rec.ID); n != 0 {
			t.Fatalf("%d free events", n)
		}
	})
}

// TestLossesWithinWalkGap: a loss that other nodes' states announce
// within walkGap of another is walked at the end of the gap, not lost. The
// hub reaches l1 only through a, l2 only through b; both far links drop
// at once.
func TestLossesWithinWalkGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub, a, b := newNode(t, "hub"), newNode(t, "a"), newNode(t, "b")
		l1, l2 := newNode(t, "l1"), newNode(t, "l2")
		connect(t, hub, a)
		connect(t, hub, b)
		far := []*testLink{connect(t, a, l1), connect(t, b, l2)}
		recs := []Record{l1.register(t, "x@1.0.0", 1, nil), l2.register(t, "x@1.0.0", 2, nil)}
		time.Sleep(time.Second)
		synctest.Wait()
		for _, rec := range recs {
			if !hub.has(t, rec.ID) {
				t.Fatalf("%s's record did not arrive", rec.Owner)
			}
		}
		far[0].cut()
		far[1].cut()
		synctest.Wait()
		due := locked(hub, func(r *Registry) bool { return r.walkDue })
		if !due {
			t.Fatal("the second loss was not left to the end of the gap: this test no longer covers that")
		}
		if hub.has(t, recs[0].ID) == hub.has(t, recs[1].ID) {
			t.Fatal("the first loss was not walked at once")
		}
		time.Sleep(walkGap)
		synctest.Wait()
		for _, rec := range recs {
			if hub.has(t, rec.ID) {
				t.Fatalf("%s's record outlived the gap", rec.Owner)
			}
		}
	})
}

// TestIdleFullMeshIsSilent: in a full mesh every owner is every node's
// neighbour, and each link's liveness stands for the heartbeat: an idle
// mesh sends nothing, and no record expires. When one link drops after a
// long silence, its ends still reach each other through the others: no
// record is freed, and each renews the other by the links of their common
// neighbours (see vouched): once the loss has spread, the mesh is silent
// again.
func TestIdleFullMeshIsSilent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ns := nodes(t, 5) // 100 ms heartbeat, 500 ms lifetime
		links := fullMesh(t, ns)
		var recs []Record
		for i, n := range ns {
			recs = append(recs, n.register(t, "x@1.0.0", 100+i, nil))
		}
		time.Sleep(time.Second) // states and records settle
		synctest.Wait()
		sent := func() (total int64) {
			for _, l := range links {
				total += l.sent.Load()
			}
			return total
		}
		everyRecord := func(when string) {
			t.Helper()
			for _, n := range ns {
				for _, rec := range recs {
					if !n.has(t, rec.ID) || n.count(Freed, rec.ID) != 0 {
						t.Fatalf("%s: %s lost %s", when, n.ID(), rec.ID)
					}
				}
			}
		}
		before := sent()
		time.Sleep(20 * ns[0].cfg.Lifetime)
		synctest.Wait()
		if got := sent() - before; got != 0 {
			t.Errorf("an idle full mesh of %d nodes sent %d bytes in %v", len(ns), got, 20*ns[0].cfg.Lifetime)
		}
		everyRecord("idle")

		links[[2]int{0, 2}].cut()
		time.Sleep(time.Second) // the new states settle
		synctest.Wait()
		before = sent()
		time.Sleep(20 * ns[0].cfg.Lifetime)
		synctest.Wait()
		everyRecord("with a link cut")
		if got := sent() - before; got != 0 {
			t.Errorf("with n0—n2 cut, the idle mesh sent %d bytes in %v: n0 and n2 have n1, n3 and n4 in common", got, 20*ns[0].cfg.Lifetime)
		}
	})
}

// TestLeaveIsNotFlooded: when a node of a full mesh leaves, every other
// frees its records on its leaving state at once, and drops it from its
// adjacency without flooding that at once (N−1 nodes would each send a
// State to N−2 others while the leave spreads): the links between the
// others carry nothing until the merging window's upper bound, and then
// the states that say it.
func TestLeaveIsNotFlooded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ns := nodes(t, 5) // 100 ms heartbeat
		links := fullMesh(t, ns)
		rec := ns[0].register(t, "x@1.0.0", 100, nil)
		time.Sleep(time.Second) // states and records settle
		synctest.Wait()
		others := func() (total int64) {
			for k, l := range links {
				if k[0] != 0 {
					total += l.sent.Load()
				}
			}
			return total
		}
		before := others()
		if err := ns[0].Shutdown(t.Context()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		for _, l := range links {
			if l.a == ns[0] {
				l.cut()
			}
		}
		synctest.Wait()
		for _, n := range ns[1:] {
			if n.has(t, rec.ID) {
				t.Fatalf("%s still shows the record of a node that left", n.ID())
			}
			if slices.Contains(n.peersOf(n.ID()), "n0") {
				t.Fatalf("%s still names n0 as its peer", n.ID())
			}
		}
		if got := others() - before; got != 0 {
			t.Errorf("the links between the others carried %d bytes at once", got)
		}
		hi := locked(ns[1], func(r *Registry) time.Duration { return r.mergeWindow() })
		time.Sleep(hi)
		synctest.Wait()
		if others() == before {
			t.Error("no node announced that its link to n0 is gone")
		}
		for _, n := range ns[1:] {
			for _, m := range ns[1:] {
				if m != n && slices.Contains(n.peersOf(m.ID()), "n0") {
					t.Errorf("%s still holds %s's link to n0", n.ID(), m.ID())
				}
			}
		}
	})
}

// TestHeartbeatsOnlyWhereRelayed: a, b, c form a triangle and d hangs off
// c. An owner's heartbeat goes only to the neighbours that relay it to a
// node that is not its neighbour, and a state is relayed to a node once:
// the link a—b carries nothing while idle, and d's records and a's still
// never expire where they are known through relays.
func TestHeartbeatsOnlyWhereRelayed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c, d := newNode(t, "a"), newNode(t, "b"), newNode(t, "c"), newNode(t, "d")
		ab := connect(t, a, b)
		connect(t, a, c)
		connect(t, b, c)
		connect(t, c, d)
		ra, rd := a.register(t, "x@1.0.0", 1, nil), d.register(t, "x@1.0.0", 2, nil)
		time.Sleep(time.Second)
		synctest.Wait()
		before := ab.sent.Load()
		time.Sleep(20 * a.cfg.Lifetime)
		synctest.Wait()
		if got := ab.sent.Load() - before; got != 0 {
			t.Errorf("the idle link a—b carried %d bytes", got)
		}
		for _, n := range []*node{a, b, c, d} {
			for _, rec := range []Record{ra, rd} {
				if !n.has(t, rec.ID) || n.count(Freed, rec.ID) != 0 {
					t.Errorf("%s lost %s", n.ID(), rec.ID)
				}
			}
		}
	})
}

// TestRandomTopologiesKeepRenewing: in random connected topologies, idle
// for many lifetimes, every node keeps every record: heartbeats reach
// every node that knows an owner only through relays, whichever
// neighbours they go to. Then links drop, one at a time, while the graph
// stays connected, and the same holds.
func TestRandomTopologiesKeepRenewing(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { keepRenewing(t, seed) })
		})
	}
}

func keepRenewing(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 17))
	n := 5 + rng.IntN(4)
	ns := nodes(t, n)
	edges := map[[2]int]*testLink{}
	// A random tree, then random chords.
	for i := 1; i < n; i++ {
		edges[[2]int{rng.IntN(i), i}] = nil
	}
	for range n {
		i, j := rng.IntN(n), rng.IntN(n)
		if i != j {
			edges[[2]int{min(i, j), max(i, j)}] = nil
		}
	}
	for e := range edges {
		edges[e] = connect(t, ns[e[0]], ns[e[1]])
	}
	var recs []Record
	for i, nd := range ns {
		recs = append(recs, nd.register(t, "x@1.0.0", 100+i, nil))
	}
	check := func(when string) {
		t.Helper()
		time.Sleep(time.Second) // the mesh settles
		synctest.Wait()
		for _, nd := range ns {
			for _, rec := range recs {
				if !nd.has(t, rec.ID) {
					t.Fatalf("%s: %s does not see %s; links %v", when, nd.ID(), rec.ID, sortedEdges(edges))
				}
			}
		}
		time.Sleep(20 * ns[0].cfg.Lifetime)
		synctest.Wait()
		for _, nd := range ns {
			for _, rec := range recs {
				if !nd.has(t, rec.ID) || nd.count(Freed, rec.ID) != 0 {
					t.Fatalf("%s: %s lost %s; links %v", when, nd.ID(), rec.ID, sortedEdges(edges))
				}
			}
		}
	}
	check("idle")
	for _, e := range sortedEdges(edges) {
		l := edges[e]
		delete(edges, e)
		if !connected(n, edges) {
			edges[e] = l
			continue
		}
		l.cut()
		check(fmt.Sprintf("n%d—n%d cut", e[0], e[1]))
	}
}

// connected reports whether the edges join all n nodes.
func connected(n int, edges map[[2]int]*testLink) bool {
	seen := map[int]bool{0: true}
	for grew := true; grew; {
		grew = false
		for e := range edges {
			if seen[e[0]] != seen[e[1]] {
				seen[e[0]], seen[e[1]] = true, true
				grew = true
			}
		}
	}
	return len(seen) == n
}

func sortedEdges(edges map[[2]int]*testLink) [][2]int {
	return slices.SortedFunc(maps.Keys(edges), func(a, b [2]int) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
}
