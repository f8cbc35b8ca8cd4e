package registry

import (
	"testing"
	"time"
)

// TestBusSignedForgeries: with owners' signatures, no message about an
// owner that the owner did not sign changes anything over the bus: a
// forged Beat (leaving or not), Snap (whole, or one chunk in a real
// snapshot), Put or Del, a Cred not signed by the owner's key or not
// naming it, and a replay of its previous run.
func TestBusSignedForgeries(t *testing.T) {
	ca := newTestCA(t)
	mallory := ca.identity("mallory") // a member, with a credential of its own
	cases := []struct {
		name   string
		forge  func(o, f *busOwner) [][]byte // f: o's state, mallory's key
		after  func(o *busOwner) [][]byte    // what the owner sends next, genuine
		shown  []string
		hidden []string
	}{
		{name: "leaving beat", forge: func(o, f *busOwner) [][]byte { return [][]byte{f.beatAt(true, now())} },
			shown: []string{"r1", "r2"}},
		{name: "beat ahead", forge: func(o, f *busOwner) [][]byte { f.beat += 1000; return [][]byte{f.beatNow()} },
			// o's own next Beat, a leaving one, must still count.
			after: func(o *busOwner) [][]byte { return [][]byte{o.beatAt(true, now())} }, hidden: []string{"r1", "r2"}},
		{name: "snapshot", forge: func(o, f *busOwner) [][]byte {
			f.recs = map[string]*entry{}
			f.put("fake")
			return append(f.snap(1<<20), f.beatNow())
		}, shown: []string{"r1", "r2"}, hidden: []string{"fake"}},
		{name: "chunk in a real snapshot", forge: func(o, f *busOwner) [][]byte {
			real := o.snap(110)
			sig := o.sign(recordsSigned(o.id, o.inc, o.seq, recordsDigest(o.recs, "", nil)))
			fake := &entry{rec: Record{ID: "fake", Name: "svc", Version: "1.0.0", Owner: o.id, Port: 1, Rev: Rev{o.inc, o.seq}}}
			forged, err := encodeBusSnap(o.id, o.inc, o.seq, []*entry{o.recs["r1"], fake}, sig, 110)
			if err != nil || len(real) != 2 || len(forged) != 2 {
				t.Fatalf("chunks: %d real, %d forged, %v", len(real), len(forged), err)
			}
			return [][]byte{real[0], forged[1]} // the real signature, a record it does not sign
		}, shown: []string{"r1", "r2"}, hidden: []string{"fake"}},
		{name: "put", forge: func(o, f *busOwner) [][]byte { return [][]byte{f.put("fake"), f.beatNow()} },
			shown: []string{"r1", "r2"}, hidden: []string{"fake"}},
		{name: "del", forge: func(o, f *busOwner) [][]byte { return [][]byte{f.del("r1"), f.beatNow()} },
			shown: []string{"r1", "r2"}},
		{name: "cred of the owner's, signed by another key", forge: func(o, f *busOwner) [][]byte {
			f.restart()
			cred, _ := encodeCred(f.id, f.inc, o.id8y.cred, f.sign(credSigned(f.id, f.inc, o.id8y.cred)), 1<<20)
			return [][]byte{cred, f.put("fake"), f.beatNow()}
		}, shown: []string{"r1", "r2"}, hidden: []string{"fake"}},
		{name: "cred naming another", forge: func(o, f *busOwner) [][]byte {
			f.restart()
			return [][]byte{f.cred(), f.put("fake"), f.beatNow()}
		}, shown: []string{"r1", "r2"}, hidden: []string{"fake"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHub()
			b := onBusNode(t, h, "b-0", "b", signedBy(ca))
			o := newBusOwner(t, "a", "a-0", ca.identity("a-0"))
			feed(b, o.msg(o.cred(), o.put("r1"), o.put("r2"), o.beatNow()))
			if !b.has(t, "r1") || !b.has(t, "r2") {
				t.Fatalf("setup: %s", remoteState(b, "a-0"))
			}
			f := *o
			f.recs = map[string]*entry{}
			for k, v := range o.recs {
				f.recs[k] = v
			}
			f.id8y = mallory
			for _, fr := range c.forge(o, &f) {
				feed(b, o.msg(fr)) // each alone: one dropped takes no other
			}
			if c.after != nil {
				feed(b, o.msg(c.after(o)...))
			}
			for _, id := range c.shown {
				if !b.has(t, id) {
					t.Errorf("%s gone (%s)", id, remoteState(b, "a-0"))
				}
			}
			for _, id := range c.hidden {
				if b.has(t, id) {
					t.Errorf("%s shown (%s)", id, remoteState(b, "a-0"))
				}
			}
		})
	}
}

// TestBusSignedOldRunReplayed: what an owner signed in a run before its
// latest, replayed, changes nothing.
func TestBusSignedOldRunReplayed(t *testing.T) {
	ca := newTestCA(t)
	h := newHub()
	b := onBusNode(t, h, "b-0", "b", signedBy(ca))
	o := newBusOwner(t, "a", "a-0", ca.identity("a-0"))
	old := [][]byte{o.cred(), o.put("r1"), o.beatNow()}
	feed(b, o.msg(old...))
	o.restart()
	feed(b, o.msg(o.cred(), o.put("r2"), o.beatNow()))
	if !b.has(t, "r2") || b.has(t, "r1") {
		t.Fatalf("setup: %s", remoteState(b, "a-0"))
	}
	feed(b, o.msg(old...))
	for _, fr := range old {
		feed(b, o.msg(fr))
	}
	if !b.has(t, "r2") || b.has(t, "r1") {
		t.Fatalf("the old run replayed: r2 %v, r1 %v", b.has(t, "r2"), b.has(t, "r1"))
	}
}

func now() time.Time { return time.Now() }

// TestBusSigned: with owners' signatures, records cross sites as
// without, and a node that passes records off as another's, even with
// the cluster's secret (the bus carries it), gets nothing applied.
func TestBusSigned(t *testing.T) {
	h := newHub()
	ca := newTestCA(t)
	a := siteNodes(t, h, "a", 2, signedBy(ca))
	b := siteNodes(t, h, "b", 1, signedBy(ca))
	rec := a[1].register(t, "web@1.0.0", 80, nil)
	b[0].waitEvent(t, Registered, rec.ID)
	rb := b[0].register(t, "db@1.0.0", 5, nil)
	a[0].waitEvent(t, Registered, rb.ID)

	// mallory, with a credential of its own, publishes a Put of a-1's
	// next seq signed by itself, as a-1.
	inc := locked(a[1], func(r *Registry) uint64 { return r.self.inc })
	seq := locked(a[1], func(r *Registry) uint64 { return r.self.seq })
	fake := &entry{rec: Record{ID: "fake", Name: "web", Version: "6.6.6", Owner: "a-1", Rev: Rev{inc, seq + 1}}}
	bogus := ca.identity("mallory")
	sig, _ := bogus.Sign(recordsSigned("a-1", inc, seq+1, [32]byte{}))
	put, _ := encodePutSigned("a-1", inc, fake, sig, 1<<20)
	h.inject(append(appendBusHeader(nil, "a", "a-1"), put...))
	flush(t, a[1], b[0])
	if b[0].has(t, "fake") {
		t.Fatal("a record not signed by its owner shows")
	}
	if !b[0].has(t, rec.ID) {
		t.Fatal("a-1's record is gone")
	}
}
