package registry

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// spyOn attaches a bus to h that is no registry: what is sent or
// published to id comes to the returned channel.
func spyOn(h *memHub, id string) chan []byte {
	b := &memBus{hub: h, id: id, ch: make(chan []byte, 4096), cut: make(chan struct{})}
	h.mu.Lock()
	h.buses[id] = b
	h.mu.Unlock()
	return b.ch
}

// snapsIn counts the messages on ch within d that carry a snapshot.
func snapsIn(ch chan []byte, d time.Duration) int {
	n := 0
	end := time.After(d)
	for {
		select {
		case m := <-ch:
			var bm busMessage
			if decodeBusMessage(m, 1<<20, &bm) != nil {
				continue
			}
			for _, f := range bm.frames {
				if f.typ == msgSnap {
					n++
					break
				}
			}
		case <-end:
			return n
		}
	}
}

// TestBusAnswersBounded: a node answers an asker's Sync at most once a
// Heartbeat, however many come, and a Sync replayed from long ago not at
// all: one small message cannot make it publish all it owns, again and
// again.
func TestBusAnswersBounded(t *testing.T) {
	h := newHub()
	a := onBusNode(t, h, "a-0", "a")
	for i := range 20 {
		a.register(t, "svc@1.0.0", 1000+i, nil)
	}
	spy := spyOn(h, "b-0")
	asker := newBusOwner(t, "b", "b-0", nil)
	for range 10 {
		feed(a, asker.msg(encodeSync(time.Now())))
	}
	if n := snapsIn(spy, 300*time.Millisecond); n != 1 {
		t.Fatalf("10 Syncs within a heartbeat answered %d times, want once", n)
	}
	time.Sleep(2 * a.cfg.Heartbeat)
	feed(a, asker.msg(encodeSync(time.Now().Add(-time.Hour)))) // recorded an hour ago
	want, _ := encodeBusWant("a-0", time.Now().Add(-time.Hour), 1<<20)
	feed(a, asker.msg(want))
	if n := snapsIn(spy, 300*time.Millisecond); n != 0 {
		t.Fatalf("an old Sync and Want replayed: answered %d times", n)
	}
	want, _ = encodeBusWant("a-0", time.Now(), 1<<20)
	feed(a, asker.msg(want))
	if n := snapsIn(spy, 300*time.Millisecond); n != 1 {
		t.Fatalf("a fresh Want answered %d times", n)
	}
}

// TestBusAnswersDoNotOverflow: answers to many askers while the bus
// takes nothing stop short of the queue's bound: they do not end the
// node's run (which would greet, and ask everyone, again).
func TestBusAnswersDoNotOverflow(t *testing.T) {
	h := newHub()
	a := onBusNode(t, h, "a-0", "a")
	meta := map[string]string{"k": strings.Repeat("x", 4000)}
	for i := range 300 { // 1.2 MB an answer: 64 answers are past maxQueueBytes
		a.register(t, "svc@1.0.0", 1000+i, meta)
	}
	stuck, held := make(chan struct{}), make(chan struct{}, 1)
	h.mu.Lock()
	h.drop = func(from, to string, msg []byte) bool {
		if from == "a-0" && to == "spy" {
			select {
			case held <- struct{}{}:
			default:
			}
			<-stuck // the bus takes nothing more
		}
		return false
	}
	h.mu.Unlock()
	spyOn(h, "spy")
	feed(a, newBusOwner(t, "a", "x", nil).msg(encodeSync(time.Now()))) // own site: dropped
	feed(a, newBusOwner(t, "b", "spy", nil).msg(encodeSync(time.Now())))
	<-held // the writer is stuck in Send
	for i := range 64 {
		feed(a, newBusOwner(t, "b", "b-"+string(rune('A'+i)), nil).msg(encodeSync(time.Now())))
	}
	failed := locked(a, func(r *Registry) error { return r.sites.link.failure() })
	close(stuck)
	if failed != nil {
		t.Fatalf("answers overflowed the queue: %v", failed)
	}
}

// TestBusSnapshotChunkLost: a snapshot whose first chunk is lost shows
// none of its records (not part of them), and the whole snapshot sent
// again shows them all.
func TestBusSnapshotChunkLost(t *testing.T) {
	h := newHub()
	b := onBusNode(t, h, "b-0", "b")
	o := newBusOwner(t, "a", "a-0", nil)
	o.put("r1")
	o.put("r2")
	o.put("r3")
	chunks := o.snap(110)
	if len(chunks) != 3 {
		t.Fatalf("%d chunks, want 3", len(chunks))
	}
	beat := o.beatNow()
	feed(b, o.msg(chunks[1]))
	feed(b, o.msg(chunks[2], beat))
	for _, id := range []string{"r1", "r2", "r3"} {
		if b.has(t, id) {
			t.Fatalf("%s shows from a snapshot missing its first chunk (%s)", id, remoteState(b, "a-0"))
		}
	}
	feed(b, o.msg(chunks...))
	feed(b, o.msg(o.beatNow()))
	for _, id := range []string{"r1", "r2", "r3"} {
		if !b.has(t, id) {
			t.Fatalf("%s missing after the whole snapshot (%s)", id, remoteState(b, "a-0"))
		}
	}
	if n := b.count(Freed, "r1") + b.count(Freed, "r2") + b.count(Freed, "r3"); n != 0 {
		t.Fatalf("%d records freed", n)
	}
}

// TestBusSnapshotRepairedAtSameSeq: a set held at the owner's seq that
// differs from the owner's (a snapshot cut short by an older node) is
// replaced by the owner's whole snapshot at that seq.
func TestBusSnapshotRepairedAtSameSeq(t *testing.T) {
	h := newHub()
	b := onBusNode(t, h, "b-0", "b")
	o := newBusOwner(t, "a", "a-0", nil)
	o.put("r1")
	o.put("r2")
	o.put("r3")
	short := *o
	short.recs = map[string]*entry{"r2": o.recs["r2"]} // what a cut snapshot left
	feed(b, o.msg(append(short.snap(1<<20), o.beatNow())...))
	if !b.has(t, "r2") || b.has(t, "r1") {
		t.Fatalf("setup: %s", remoteState(b, "a-0"))
	}
	feed(b, o.msg(o.snap(110)...))
	if !b.has(t, "r1") || !b.has(t, "r3") {
		t.Fatalf("not repaired at the same seq: %s", remoteState(b, "a-0"))
	}
}

// TestBusReplayKeepsNoDeadOwner: what an owner said before it died,
// replayed (its greeting: a snapshot and a Beat), keeps it no longer
// than its lifetime; its Beats replayed once it is forgotten bring it
// back not at all.
func TestBusReplayKeepsNoDeadOwner(t *testing.T) {
	h := newHub()
	b := onBusNode(t, h, "b-0", "b")
	o := newBusOwner(t, "a", "a-0", nil)
	o.put("r1")
	greeting := o.msg(append(o.snap(1<<20), o.beatNow())...)
	var later [][]byte // Beats it sent before it died, recorded
	for range 20 {
		later = append(later, o.msg(o.beatNow()))
	}
	diedAt := time.Now()
	feed(b, greeting)
	b.waitEvent(t, Registered, "r1")
	lifetime := b.cfg.Lifetime
	for time.Since(diedAt) < 3*lifetime {
		feed(b, greeting) // replayed, again and again
		time.Sleep(lifetime / 5)
	}
	if b.has(t, "r1") || b.count(Registered, "r1") != 1 {
		t.Fatalf("a dead owner's greeting replayed: shown %v, registered %d times", b.has(t, "r1"), b.count(Registered, "r1"))
	}
	waitFor(t, "a-0 forgotten", func() bool { return remoteState(b, "a-0") == "" })
	for _, m := range later {
		feed(b, greeting)
		feed(b, m)
	}
	if b.has(t, "r1") {
		t.Fatalf("its Beats replayed after it was forgotten show it again: %s", remoteState(b, "a-0"))
	}
}

// TestBusRemoteOwnersBounded: the owners a node holds of other sites are
// bounded; with signatures it holds nothing of an owner whose credential
// it has not verified, however many snapshot chunks come.
func TestBusRemoteOwnersBounded(t *testing.T) {
	old := maxRemotes
	t.Cleanup(func() { maxRemotes = old }) // after the nodes close
	maxRemotes = 10
	h := newHub()
	b := onBusNode(t, h, "b-0", "b")
	for i := range 50 {
		o := newBusOwner(t, "x", "x-"+string(rune('A'+i)), nil)
		feed(b, o.msg(o.put("r"+string(rune('A'+i)))))
	}
	if n := locked(b, func(r *Registry) int { return len(r.sites.remotes) }); n != maxRemotes {
		t.Fatalf("%d remote owners held, bound %d", n, maxRemotes)
	}

	ca := newTestCA(t)
	s := onBusNode(t, h, "s-0", "s", signedBy(ca))
	for i := range 50 {
		o := newBusOwner(t, "x", "y-"+string(rune('A'+i)), ca.identity("mallory"))
		for j := range 20 {
			o.put("r" + string(rune('A'+j)))
		}
		chunks := o.snap(200)
		feed(s, o.msg(chunks[:len(chunks)-1]...)) // never the last
	}
	held, bytes := locked(s, func(r *Registry) int { return len(r.sites.remotes) }), locked(s, func(r *Registry) int { return r.sites.snapBytes })
	if held != 0 || bytes != 0 {
		t.Fatalf("signed: %d owners and %d bytes of snapshots held, none verified", held, bytes)
	}
}

// TestBusExpiredShowsNoStale: an owner expired here whose first Beat back
// announces records this node does not hold shows nothing until it has
// them: not the stale ones in between.
func TestBusExpiredShowsNoStale(t *testing.T) {
	h := newHub()
	b := onBusNode(t, h, "b-0", "b")
	o := newBusOwner(t, "a", "a-0", nil)
	feed(b, o.msg(o.put("r1"), o.beatNow()))
	b.waitEvent(t, Registered, "r1")
	b.waitEvent(t, Freed, "r1") // silent: expired
	o.del("r1")                 // lost in the outage
	feed(b, o.msg(o.beatNow()))
	if b.has(t, "r1") || b.count(Registered, "r1") != 1 {
		t.Fatalf("a Beat announcing seq %d shows r1 again (%s)", o.seq, remoteState(b, "a-0"))
	}
	feed(b, o.msg(o.snap(1<<20)...))
	if got := remoteState(b, "a-0"); got != "live=true recs=0 seq=2" {
		t.Fatalf("after its snapshot: %s", got)
	}
	if b.count(Registered, "r1") != 1 {
		t.Fatal("r1 registered again")
	}
}

// TestBusIDConflicts: a message with this node's own id (another node's:
// NATS does not echo) and one id heard in two sites are said at Error,
// once; the second site's owner of that id shows nothing.
func TestBusIDConflicts(t *testing.T) {
	h := newHub()
	warns := make(chan string, 100)
	b := onBusNode(t, h, "gw", "b", func(c *Config) { c.Logger = slog.New(warnLines(warns)) })
	twin := newBusOwner(t, "a", "gw", nil)
	feed(b, twin.msg(twin.put("t1"), twin.beatNow()))
	feed(b, twin.msg(twin.beatNow()))
	x := newBusOwner(t, "a", "x-0", nil)
	feed(b, x.msg(x.put("r1"), x.beatNow()))
	x2 := newBusOwner(t, "c", "x-0", nil)
	x2.inc = 9
	feed(b, x2.msg(x2.put("r2"), x2.beatNow()))
	feed(b, x2.msg(x2.put("r3"), x2.beatNow()))
	var said []string
	for len(warns) > 0 {
		said = append(said, <-warns)
	}
	if len(said) != 2 || !strings.Contains(said[0], "this node's id") || !strings.Contains(said[1], "two sites") {
		t.Fatalf("said %q", said)
	}
	waitFor(t, "the IDConflict event", func() bool { return len(b.eventsOf(IDConflict)) > 0 })
	if evs := b.eventsOf(IDConflict); len(evs) != 1 || evs[0].Peer != "gw" || evs[0].Site != "a" {
		t.Errorf("IDConflict events %+v", evs)
	}
	if b.has(t, "t1") || b.has(t, "r2") || !b.has(t, "r1") {
		t.Fatalf("shown: t1 %v, r2 %v, r1 %v", b.has(t, "t1"), b.has(t, "r2"), b.has(t, "r1"))
	}
}

// TestBusEnvelopeNames: an envelope whose site is no site name, or whose
// node id holds control characters, is dropped.
func TestBusEnvelopeNames(t *testing.T) {
	h := newHub()
	b := onBusNode(t, h, "b-0", "b")
	for _, o := range []*busOwner{newBusOwner(t, "a\x1b[2J", "z-0", nil), newBusOwner(t, "a b", "z-1", nil), newBusOwner(t, "a", "z\n2", nil)} {
		feed(b, o.msg(o.put("r-"+o.id), o.beatNow()))
		if b.has(t, "r-"+o.id) {
			t.Errorf("site %q node %q shows", o.site, o.id)
		}
	}
}

// TestBusNewRunNotCappedByOld: an owner that held MaxRecordsPerOwner
// records and restarts has its new run's first Put taken, not refused
// for the old run's records.
func TestBusNewRunNotCappedByOld(t *testing.T) {
	h := newHub()
	warns := make(chan string, 100)
	b := onBusNode(t, h, "b-0", "b", func(c *Config) { c.MaxRecordsPerOwner = 2; c.Logger = slog.New(warnLines(warns)) })
	o := newBusOwner(t, "a", "a-0", nil)
	feed(b, o.msg(o.put("r1"), o.put("r2"), o.beatNow()))
	o.restart()
	feed(b, o.msg(o.put("r3"), o.beatNow()))
	if !b.has(t, "r3") || b.has(t, "r1") {
		t.Fatalf("after the restart: r3 %v, r1 %v (%s)", b.has(t, "r3"), b.has(t, "r1"), remoteState(b, "a-0"))
	}
	if len(warns) != 0 {
		t.Fatalf("said %q", <-warns)
	}
}

// TestBusHostileMessages: garbled, truncated or lying messages are
// dropped whole and logged; nothing changes, nothing stops.
func TestBusHostileMessages(t *testing.T) {
	h := newHub()
	warns := make(chan string, 100)
	b := siteNodes(t, h, "b", 1, func(c *Config) { c.Logger = slog.New(warnLines(warns)) })
	a := siteNodes(t, h, "a", 1)
	rec := a[0].register(t, "web@1.0.0", 80, nil)
	b[0].waitEvent(t, Registered, rec.ID)

	put, _ := encodePut("a-0", a[0].self.inc, &entry{rec: Record{ID: "fake", Name: "web", Version: "9.0.0", Owner: "a-0", Rev: Rev{a[0].self.inc, 2}}}, 1<<20)
	forged := append(appendBusHeader(nil, "z", "z-0"), put...) // z-0 publishes a-0's record
	good := append(appendBusHeader(nil, "a", "a-0"), put...)
	for _, msg := range [][]byte{
		nil,
		{busVersion},
		[]byte("garbage that is not a message"),
		appendBusHeader(nil, "a", "a-0"), // no frames
		forged,
		good[:len(good)-3], // truncated
		append(appendBusHeader(nil, "a", "a-0"), 99, 0),               // unknown frame type
		append(appendBusHeader(nil, "a", "a-0"), byte(msgSynced), 0),  // a link-only frame
		append(appendBusHeader(nil, "a", "a-0"), byte(msgBeat), 2, 0), // a short beat
	} {
		h.inject(msg)
	}
	select {
	case w := <-warns:
		if w != "registry: bus message dropped" {
			t.Errorf("logged %q", w)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing logged")
	}
	flush(t, a[0], b[0])
	if b[0].has(t, "fake") {
		t.Fatal("a forged record shows")
	}
	if !b[0].has(t, rec.ID) {
		t.Fatal("a-0's record is gone")
	}
}

// TestBusEveryGreetingBeatIsNew: each greeting or answer carries a Beat
// of a new number, so a node back after an outage is shown again at
// once, not at its next Heartbeat (a Beat of the last number is a
// duplicate to those that heard it).
func TestBusEveryGreetingBeatIsNew(t *testing.T) {
	h := newHub()
	a := onBusNode(t, h, "a-0", "a", func(c *Config) { c.Heartbeat, c.Lifetime = time.Minute, 5*time.Minute })
	beatOf := func() uint64 {
		frames := locked(a, func(r *Registry) [][]byte { return r.ownFrames(r.sites.link) })
		f := busFrame{typ: msgBeat}
		p, err := framePayload(frames[len(frames)-1])
		if err != nil {
			t.Fatal(err)
		}
		f.payload = p
		var m message
		dec := decoder{maxMeta: 1 << 12}
		if err := dec.decodeBus(&f, &m); err != nil {
			t.Fatal(err)
		}
		return m.beat
	}
	first, second := beatOf(), beatOf()
	if second <= first {
		t.Fatalf("beats %d then %d: not new", first, second)
	}
}
