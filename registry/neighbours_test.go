package registry

import (
	"context"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// tapPeer plays a peer by hand, as fakePeer does, and decodes what the
// node sends it.
type tapPeer struct {
	*fakePeer
	got chan message
}

// newTapPeer runs n.Serve with a fake peer id and decodes what n writes.
func newTapPeer(t testing.TB, n *node, id string, inc uint64) *tapPeer {
	t.Helper()
	c1, c2 := net.Pipe()
	p := &tapPeer{
		fakePeer: &fakePeer{id: id, inc: inc, conn: c2, errc: make(chan error, 1)},
		got:      make(chan message, 64),
	}
	go func() { p.errc <- n.Serve(context.Background(), id, c1) }()
	go func() {
		defer close(p.got)
		fr := newFrameReader(c2, DefaultMaxMessageBytes)
		d := decoder{maxMeta: DefaultMaxMetadataBytes}
		for {
			typ, payload, _, err := readFrame(fr, nil)
			if err != nil {
				return
			}
			var m message
			if err := d.decode(typ, payload, &m); err != nil {
				return
			}
			p.got <- m
		}
	}()
	t.Cleanup(func() {
		c2.Close()
		for range p.got {
		}
		<-p.errc
		p.errc <- nil
	})
	return p
}

// until returns what the node sent, up to and including the first
// message for which stop holds; it fails the test after 10 s.
func (p *tapPeer) until(t testing.TB, what string, stop func(*message) bool) []message {
	t.Helper()
	var out []message
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-p.got:
			if !ok {
				t.Fatalf("%s: the link ended waiting for %s", p.id, what)
			}
			out = append(out, m)
			if stop(&m) {
				return out
			}
		case <-timeout:
			t.Fatalf("%s: timed out waiting for %s", p.id, what)
		}
	}
}

// about counts the messages about owner.
func about(msgs []message, owner string) (n int) {
	for _, m := range msgs {
		if m.owner == owner {
			n++
		}
	}
	return n
}

func isSynced(m *message) bool { return m.typ == msgSynced }

// TestSyncSkipsPeersNeighbours: the sync on a new link sends nothing of
// an owner that the peer's Hello marks as its neighbour (the owner syncs
// the peer itself), even though the owner's State, as this node holds
// it, does not name the peer; a peer that does not mark it gets the
// owner's records and State.
func TestSyncSkipsPeersNeighbours(t *testing.T) {
	a, o := newNode(t, "a"), newNode(t, "o")
	connectSynced(t, a, o)
	ro := o.register(t, "o@1.0.0", 1, nil)
	a.waitEvent(t, Registered, ro.ID)
	for _, tc := range []struct {
		peer      string
		neighbour bool
		want      int
	}{
		{"c", true, 0},
		{"d", false, 2}, // a Snap, a State
	} {
		p := newTapPeer(t, a, tc.peer, 9)
		hello := must(encodeHello(tc.peer, []digestEntry{
			{owner: tc.peer, inc: 9, beat: 1},
			{owner: "o", inc: o.self.inc, neighbour: tc.neighbour},
		}, DefaultMaxMessageBytes))
		if err := p.send(hello); err != nil {
			t.Fatal(err)
		}
		if got := about(p.until(t, "synced", isSynced), "o"); got != tc.want {
			t.Errorf("%s (o's neighbour: %v) had %d messages about o in its sync, want %d", tc.peer, tc.neighbour, got, tc.want)
		}
	}
}

// TestRelaySkipsPeersNeighbours: a node relays nothing of an owner to a
// peer that names the owner as its neighbour (in its Hello, then in its
// States). When the peer's next State no longer names the owner, the
// owner's newest State goes to it (it shows any change the peer missed),
// and the owner's changes are relayed to it from then on.
func TestRelaySkipsPeersNeighbours(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Hour, 3*time.Hour } // no heartbeats
		a, o := newNode(t, "a", slow), newNode(t, "o", slow)
		connect(t, a, o)
		synctest.Wait() // a and o have announced their link
		c := newTapPeer(t, a, "c", 9)
		if err := c.send(must(encodeHello("c", []digestEntry{
			{owner: "c", inc: 9, beat: 1},
			{owner: "o", inc: o.self.inc, neighbour: true},
		}, DefaultMaxMessageBytes))); err != nil {
			t.Fatal(err)
		}
		c.until(t, "synced", isSynced)
		isPutOf := func(id string) func(*message) bool {
			return func(m *message) bool { return m.typ == msgPut && m.recs[0].rec.ID == id }
		}

		// o's change and o's new State (as when o loses a link) reach a,
		// which relays them to c, or not, within the relay delay.
		o.register(t, "o@1.0.0", 1, nil)
		o.Registry.mu.Lock()
		o.bumpState()
		beat := o.self.beat
		o.Registry.mu.Unlock()
		time.Sleep(relayDelay)
		synctest.Wait()
		ra := a.register(t, "a@1.0.0", 2, nil)
		if got := about(c.until(t, "a's put", isPutOf(ra.ID)), "o"); got != 0 {
			t.Fatalf("a relayed %d messages of o to c, which its Hello names as o's neighbour", got)
		}

		// c's State, issued after its Hello, no longer names o.
		if err := c.send(must(encodeState("c", 9, 0, 2, false, []peerRef{{id: "a", inc: a.self.inc}}, DefaultMaxMessageBytes))); err != nil {
			t.Fatal(err)
		}
		msgs := c.until(t, "o's state", func(m *message) bool { return m.typ == msgState && m.owner == "o" })
		if m := msgs[len(msgs)-1]; m.beat != beat || m.seq != 1 {
			t.Fatalf("o's state relayed to c is at beat %d, seq %d; want o's newest, %d, showing seq 1", m.beat, m.seq, beat)
		}
		ro2 := o.register(t, "o2@1.0.0", 3, nil)
		c.until(t, "o's next put, relayed", isPutOf(ro2.ID))
	})
}

// TestSyncSendsNoSnapshotBeforeRecords: an owner that never had records
// (seq 0) has nothing to snapshot: the sync carries its State alone, and
// its first record, later, reaches a node that knows it only from that
// State.
func TestSyncSendsNoSnapshotBeforeRecords(t *testing.T) {
	a, o := newNode(t, "a"), newNode(t, "o")
	connectSynced(t, a, o)
	d := newTapPeer(t, a, "d", 9)
	d.send(must(encodeHello("d", []digestEntry{{owner: "d", inc: 9, beat: 1}}, DefaultMaxMessageBytes)))
	states := 0
	for _, m := range d.until(t, "synced", isSynced) {
		switch m.typ {
		case msgSnap:
			t.Errorf("the sync carried a snapshot of %s at seq %d", m.owner, m.seq)
		case msgState:
			states++
		}
	}
	if states != 2 {
		t.Errorf("the sync carried %d States, want a's and o's", states)
	}
	c := newNode(t, "c")
	connectSynced(t, a, c)
	rec := o.register(t, "o@1.0.0", 1, nil)
	c.waitEvent(t, Registered, rec.ID)
}

// TestWholeMeshKeepsNoTables: a peer's table of what it holds keeps the
// owners that are not its neighbours. Formed as a chain and then made
// whole, every owner is every peer's neighbour, and once adjacencies
// stand still no link keeps a table (forgetCovered, which waits for
// that while they change).
func TestWholeMeshKeepsNoTables(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	a.register(t, "web@1.0.0", 1, nil)
	c.register(t, "db@1.0.0", 2, nil)
	connectSynced(t, a, b)
	connectSynced(t, b, c)
	settled(t, a, b, c)
	held := func(n *node) int {
		return locked(n, func(r *Registry) int {
			k := 0
			for _, ls := range r.links {
				for _, l := range ls {
					k += l.knownCount
				}
			}
			return k
		})
	}
	// b relayed a's records and state to c, and c's to a.
	if held(b) == 0 {
		t.Fatal("b, the middle of a chain, keeps no table of what its peers hold")
	}
	connectSynced(t, a, c)
	settled(t, a, b, c)
	for _, n := range []*node{a, b, c} {
		waitFor(t, n.ID()+" keeps no table", func() bool { return held(n) == 0 })
	}
}
