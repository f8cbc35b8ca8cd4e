package registry

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// frameTally counts the frames written on links, by message type.
type frameTally struct {
	frames, bytes [msgWant + 1]atomic.Int64
}

// tallyConn counts the frames written to it. Only a link's writer
// writes, one batch after another.
type tallyConn struct {
	net.Conn
	t    *frameTally
	part []byte // the start of a frame not yet whole
}

func (c *tallyConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	b := append(c.part, p[:n]...)
	for len(b) > 1 {
		size, k := binary.Uvarint(b[1:])
		if k <= 0 || uint64(len(b)-1-k) < size {
			break
		}
		end := 1 + k + int(size)
		if t := b[0]; t <= byte(msgWant) {
			c.t.frames[t].Add(1)
			c.t.bytes[t].Add(int64(end))
		}
		b = b[end:]
	}
	c.part = append(c.part[:0], b...)
	return n, err
}

// connectTally links a and b as connect does, counting their frames.
func connectTally(t testing.TB, a, b *node, tally *frameTally) *testLink {
	t.Helper()
	pa, pb := net.Pipe()
	l := &testLink{a: a, b: b, errA: make(chan error, 1), errB: make(chan error, 1)}
	l.ca, l.cb = &tallyConn{Conn: pa, t: tally}, &tallyConn{Conn: pb, t: tally}
	go func() { l.errA <- a.Serve(t.Context(), b.ID(), l.ca) }()
	go func() { l.errB <- b.Serve(t.Context(), a.ID(), l.cb) }()
	t.Cleanup(l.cut)
	return l
}

// formMesh starts n nodes with the default timers, each with one record,
// and links every pair at a random time within spread, as nodes started
// together dial each other. It waits until the mesh has converged (every
// node sees every record, and nothing is left to relay), checks that no
// record was freed on the way, and returns the frames written meanwhile.
// It runs in a synctest bubble.
func formMesh(t testing.TB, n int, spread time.Duration, seed uint64) *frameTally {
	t.Helper()
	defaults := func(c *Config) { c.Heartbeat, c.Lifetime = 0, 0 }
	ns := make([]*node, n)
	var recs []Record
	for i := range ns {
		ns[i] = newNode(t, fmt.Sprintf("n%02d", i), defaults)
		recs = append(recs, ns[i].register(t, "x@1.0.0", 100+i, nil))
	}
	tally := &frameTally{}
	linkAll(t, ns, linkSchedule(n, spread, seed), tally)
	time.Sleep(2 * time.Second) // merged states go out, relays settle
	synctest.Wait()
	for _, nd := range ns {
		for _, rec := range recs {
			if !nd.has(t, rec.ID) || nd.count(Freed, rec.ID) != 0 {
				t.Fatalf("%s: %s missing or freed on the way", nd.ID(), rec.ID)
			}
		}
	}
	return tally
}

// linkStart is when a formation links nodes a and b, from its start.
type linkStart struct {
	at   time.Duration
	a, b int
}

// linkSchedule gives every pair of n nodes a random time within spread,
// in the order of those times.
func linkSchedule(n int, spread time.Duration, seed uint64) []linkStart {
	rng := rand.New(rand.NewPCG(seed, 17))
	var starts []linkStart
	for i := range n {
		for j := i + 1; j < n; j++ {
			starts = append(starts, linkStart{time.Duration(rng.Int64N(int64(spread))), i, j})
		}
	}
	slices.SortFunc(starts, func(x, y linkStart) int { return int(x.at - y.at) })
	return starts
}

// linkAll links the nodes ns as starts says, each pair at its time,
// counting their frames in tally.
func linkAll(t testing.TB, ns []*node, starts []linkStart, tally *frameTally) {
	begin := time.Now()
	for _, s := range starts {
		time.Sleep(s.at - time.Since(begin))
		connectTally(t, ns[s.a], ns[s.b], tally)
	}
}

// TestFormationStatesPerLink: while a full mesh forms, the States a link
// carries stay O(1): they do not grow with the size of the mesh (issue
// 17; before, 14 a link at 10 nodes and 47 at 30). A State names every
// neighbour of its owner, so its bytes do grow.
func TestFormationStatesPerLink(t *testing.T) {
	const max = 24
	for _, n := range []int{10, 30} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tally := formMesh(t, n, time.Duration(n)*40*time.Millisecond, 1)
				links := float64(n * (n - 1) / 2)
				states := float64(tally.frames[msgState].Load()) / links
				t.Logf("%d nodes: %.1f States (%.1f KiB), %.1f Snaps, %.1f Hellos a link",
					n, states, float64(tally.bytes[msgState].Load())/links/1024,
					float64(tally.frames[msgSnap].Load())/links, float64(tally.frames[msgHello].Load())/links)
				if states > max {
					t.Errorf("%.1f States a link, want at most %d", states, max)
				}
			})
		})
	}
}
