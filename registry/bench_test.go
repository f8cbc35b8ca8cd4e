package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func benchEntry() *entry {
	return fakeRecord("node-7f3c2a", 1700000000000000000, 42, "web",
		map[string]string{"zone": "eu-west-1a", "weight": "10"})
}

func BenchmarkEncodePut(b *testing.B) {
	e := benchEntry()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodePut(e.rec.Owner, e.rec.Rev.Incarnation, e, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePut(b *testing.B) {
	e := benchEntry()
	benchDecode(b, must(encodePut(e.rec.Owner, e.rec.Rev.Incarnation, e, 1<<20)), nil)
}

// benchDecode decodes frame f over and over with one link's decoder, whose
// registry knows the owners ids names.
func benchDecode(b *testing.B, f []byte, ids []string) {
	d := decoder{maxMeta: 4096, known: &idTable{}}
	for _, id := range ids {
		d.known.add(id)
	}
	var m message
	t, p := splitFrame(f)
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.decode(t, p, &m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadFrame reads Put frames from a stream of them, over and
// over, into one buffer, as a link's reader does.
func BenchmarkReadFrame(b *testing.B) {
	e := benchEntry()
	f := must(encodePut(e.rec.Owner, e.rec.Rev.Incarnation, e, 1<<20))
	stream := bytes.Repeat(f, 64<<10/len(f)+1)
	src := bytes.NewReader(stream)
	fr := newFrameReader(src, 1<<20)
	var buf []byte
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		_, _, frame, err := readFrame(fr, buf)
		if err == io.EOF {
			src.Reset(stream) // the reader reads on after an EOF
			_, _, frame, err = readFrame(fr, buf)
		}
		if err != nil {
			b.Fatal(err)
		}
		buf = frame
	}
}

// BenchmarkDecodeState decodes a State naming 49 neighbours, as each node
// of a 50-node mesh receives from every other while the mesh forms.
func BenchmarkDecodeState(b *testing.B) {
	var peers []peerRef
	ids := []string{"owner-0000-4000-8000-000000000000"}
	for i := range 49 {
		peers = append(peers, peerRef{id: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), inc: uint64(1795355667037148735 + i)})
		ids = append(ids, peers[i].id)
	}
	benchDecode(b, must(encodeStateLifetime(ids[0], 1795355667037148735, 3, 42, false, peers, 5*time.Second, 1<<20)), ids)
}

// BenchmarkApplyPutDel measures what a link's reader does per message: decode
// and apply under the lock, for a live owner (index, event to OnEvent and a
// watcher), alternating a register and a free.
func BenchmarkApplyPutDel(b *testing.B) {
	var events atomic.Int64
	cfg := LocalConfig("me")
	cfg.Heartbeat, cfg.Lifetime = time.Hour, 3*time.Hour // no expiry while measuring
	cfg.Logger = quiet
	cfg.OnEvent = func(Event) { events.Add(1) }
	r, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, _ := r.Watch(ctx, "web")
	go func() {
		for range ch {
		}
	}()

	const owner, inc = "peer", 9
	l := newLink(owner, nil)
	l.hello, l.ready = true, true
	var m message
	dec := decoder{maxMeta: r.cfg.MaxMetadataBytes}
	// apply takes a frame split beforehand, as readFrame returns it.
	type split struct {
		t              msgType
		payload, frame []byte
	}
	splitOf := func(f []byte) split {
		t, p := splitFrame(f)
		return split{t, p, f}
	}
	apply := func(s split) {
		if err := dec.decode(s.t, s.payload, &m); err != nil {
			b.Fatal(err)
		}
		r.mu.Lock()
		err := r.handle(l, &m, s.frame)
		if r.dirty {
			r.recompute()
		}
		r.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
	r.mu.Lock()
	r.self.peers[owner] = inc
	r.nameBit(r.self, owner, inc)
	r.mu.Unlock()
	apply(splitOf(must(encodeState(owner, inc, 0, 1, false, []peerRef{{"me", r.self.inc}}, 1<<20))))

	// 2,048 put/free pairs, replayed: the owner's version is rewound
	// between rounds (outside the measure's hot path, once per 4,096).
	const pairs = 2048
	var payloads []split
	for i := range pairs {
		e := fakeRecord(owner, inc, uint64(2*i+1), "web", map[string]string{"zone": "a", "weight": "10"})
		payloads = append(payloads,
			splitOf(must(encodePut(owner, inc, e, 1<<20))),
			splitOf(must(encodeDel(owner, inc, uint64(2*i+2), e.rec.ID, 1<<20))))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(payloads) {
			r.mu.Lock()
			r.owners[owner].seq = 0
			r.mu.Unlock()
			i = 0
		}
		apply(payloads[i])
		i++
	}
	b.StopTimer()
	r.mu.Lock()
	live := r.owners[owner].live
	r.mu.Unlock()
	if !live {
		b.Fatal("owner not live: nothing was shown")
	}
}

// BenchmarkPropagation measures, in a full mesh of 10 registries over
// net.Pipe, the time from Register on one node until all 9 others have
// emitted the Registered event, and the same for Free.
func BenchmarkPropagation(b *testing.B) {
	const n = 10
	var seen [n]atomic.Int64
	ping := make(chan struct{}, 1)
	var regs []*Registry
	for i := range n {
		cfg := LocalConfig(fmt.Sprintf("n%d", i))
		cfg.Logger = quiet
		cfg.OnEvent = func(ev Event) {
			if ev.Kind == Registered || ev.Kind == Freed {
				seen[i].Add(1)
				select {
				case ping <- struct{}{}:
				default:
				}
			}
		}
		r, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		regs = append(regs, r)
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			c1, c2 := net.Pipe()
			go regs[i].Serve(context.Background(), regs[j].ID(), c1)
			go regs[j].Serve(context.Background(), regs[i].ID(), c2)
		}
	}
	var want int64
	waitAll := func() {
		for {
			all := true
			for i := 1; i < n; i++ {
				if seen[i].Load() < want {
					all = false
				}
			}
			if all {
				return
			}
			<-ping
		}
	}
	// Let the mesh settle: a first record reaches everyone.
	rec, _ := regs[0].Register(Service{Role: "warmup@1.0.0"})
	want++
	waitAll()
	regs[0].Free(rec.ID)
	want++
	waitAll()

	var reg, free time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		rec, err := regs[0].Register(Service{Role: "svc@1.0.0", Port: 80})
		if err != nil {
			b.Fatal(err)
		}
		want++
		waitAll()
		mid := time.Now()
		regs[0].Free(rec.ID)
		want++
		waitAll()
		reg += mid.Sub(start)
		free += time.Since(mid)
	}
	b.ReportMetric(float64(reg.Nanoseconds())/float64(b.N), "ns/register-on-all")
	b.ReportMetric(float64(free.Nanoseconds())/float64(b.N), "ns/free-on-all")
}

// BenchmarkSync1000 measures a late joiner's initial sync of 1,000 records.
func BenchmarkSync1000(b *testing.B) {
	cfg := LocalConfig("a")
	cfg.Logger = quiet
	a, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	for i := range 1000 {
		a.Register(Service{Role: fmt.Sprintf("svc%d@1.0.%d", i%10, i), Port: 10000 + i, Meta: map[string]string{"i": fmt.Sprint(i)}})
	}
	b.ReportAllocs()
	for b.Loop() {
		synced := make(chan struct{})
		cfg := LocalConfig("b")
		cfg.Logger = quiet
		cfg.OnEvent = func(ev Event) {
			if ev.Kind == Synced {
				close(synced)
			}
		}
		r, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		c1, c2 := net.Pipe()
		done := make(chan struct{})
		go func() { a.Serve(context.Background(), "b", c1); close(done) }()
		go r.Serve(context.Background(), "a", c2)
		<-synced
		r.Close()
		<-done
	}
}

// lockedOf50 starts the registry "me" of a 50-node mesh, its timers an
// hour apart (it ticks only as the benchmark calls it), locked until the
// benchmark ends, and names the other 49 nodes with id(0) … id(48); ids
// holds "me" and those.
func lockedOf50(b *testing.B, id func(i int) string) (r *Registry, ids []string) {
	cfg := LocalConfig("me")
	cfg.Heartbeat, cfg.Lifetime = time.Hour, 3*time.Hour
	cfg.Logger = quiet
	r, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	r.mu.Lock()
	b.Cleanup(r.mu.Unlock)
	ids = []string{"me"}
	for i := range 49 {
		ids = append(ids, id(i))
	}
	return r, ids
}

// BenchmarkWholeWalk measures the reachability walk a lost link costs each
// node, in a full mesh of 50.
func BenchmarkWholeWalk(b *testing.B) {
	r, ids := lockedOf50(b, func(i int) string { return fmt.Sprintf("node-%08x-%02d", 0x5eed0000+i, i) })
	for i, id := range ids[1:] {
		o := r.owner(id)
		o.inc, o.beat = uint64(i+1), 1
	}
	for _, o := range r.owners {
		peers := make(map[string]uint64)
		for _, id := range ids {
			if id != o.id {
				peers[id] = r.owners[id].inc
			}
		}
		o.peers = peers
	}
	renameAll(r)
	b.ReportAllocs()
	for b.Loop() {
		r.recompute()
	}
	for _, o := range r.owners {
		if !o.live {
			b.Fatalf("%s not reached", o.id)
		}
	}
}

// renameAll sets every owner's names from its peers, for a benchmark
// that set runs and adjacencies by hand. r.mu is held.
func renameAll(r *Registry) {
	for _, w := range r.owners {
		clear(w.names)
		for id, inc := range w.peers {
			r.nameBit(w, id, inc)
		}
	}
}

// discardConn takes every write and never has anything to read.
type discardConn struct{}

func (discardConn) Read([]byte) (int, error)    { select {} }
func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (discardConn) Close() error                { return nil }

// BenchmarkIdleTick measures what one node of an idle 50-node full mesh
// does every Heartbeat (issue 17): renew its liveness and expire silent
// owners. Every peer is a neighbour with a ready link, renewed by it, so
// no heartbeat is sent (frames/tick).
func BenchmarkIdleTick(b *testing.B) {
	r, ids := lockedOf50(b, func(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012d", 0x5eed0000+i, i) })
	for i, id := range ids[1:] {
		o := r.owner(id)
		o.inc, o.beat = uint64(1795355667037148735+i), 1
		l := newLink(id, discardConn{})
		l.hello, l.ready, l.peerInc = true, true, o.inc
		r.links[id] = []*link{l}
		r.self.peers[id] = o.inc
	}
	for _, o := range r.owners {
		if o == r.self {
			continue
		}
		o.peers = map[string]uint64{}
		for _, id := range ids {
			if id != o.id {
				o.peers[id] = r.owners[id].inc
			}
		}
	}
	renameAll(r)
	r.recompute()
	beat := r.self.beat
	b.ReportAllocs()
	for b.Loop() {
		r.tick(time.Now())
	}
	b.StopTimer()
	b.ReportMetric(float64(r.self.beat-beat)*49/float64(b.N), "frames/tick")
	for _, o := range r.owners {
		if !o.live || o.expired {
			b.Fatalf("%s not live", o.id)
		}
	}
	clear(r.links) // no Serve runs them: Close must not wait on them
}

// BenchmarkRecordsDigest computes the digest an owner signs, and each
// receiver checks, for a change of an owner holding n records (the
// records' own hashes computed once, as they are kept).
func BenchmarkRecordsDigest(b *testing.B) {
	for _, n := range []int{1, 100, 4096} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			recs := map[string]*entry{}
			for i := range n {
				e := fakeRecord("node-7f3c2a", 1, uint64(i+1), fmt.Sprintf("svc-%d", i), map[string]string{"zone": "eu-west-1a"})
				recs[e.rec.ID] = e
			}
			put := fakeRecord("node-7f3c2a", 1, uint64(n+1), "new", nil)
			recordsDigest(recs, "", nil)
			b.ReportAllocs()
			for b.Loop() {
				recordsDigest(recs, put.rec.ID, put)
			}
		})
	}
}
