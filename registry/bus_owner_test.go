package registry

import (
	"fmt"
	"testing"
	"time"
)

// busOwner is an owner of another site played by the test: it builds the
// messages a node of its id would publish (and signs them, with an
// identity), so that a test can send them, drop them, change them, or
// replay them.
type busOwner struct {
	t        testing.TB
	site, id string
	inc, seq uint64
	beat     uint64
	id8y     *testIdentity // nil: owners do not sign
	recs     map[string]*entry
	lifetime time.Duration
}

func newBusOwner(t testing.TB, site, id string, ident *testIdentity) *busOwner {
	return &busOwner{t: t, site: site, id: id, inc: 1, id8y: ident, recs: map[string]*entry{}, lifetime: 500 * time.Millisecond}
}

// msg wraps frames in o's envelope.
func (o *busOwner) msg(frames ...[]byte) []byte {
	m := appendBusHeader(nil, o.site, o.id)
	for _, f := range frames {
		m = append(m, f...)
	}
	return m
}

func (o *busOwner) sign(b []byte) []byte {
	if o.id8y == nil {
		return nil
	}
	sig, err := o.id8y.Sign(b)
	if err != nil {
		o.t.Fatal(err)
	}
	return sig
}

// beatAt is o's next Beat, at clock at.
func (o *busOwner) beatAt(leaving bool, at time.Time) []byte {
	o.beat++
	sig := o.sign(beatSigned(o.id, o.inc, o.seq, o.beat, leaving, false, o.lifetime, at))
	f, err := encodeBeat(o.id, o.inc, o.seq, o.beat, leaving, false, o.lifetime, at, sig, 1<<20)
	if err != nil {
		o.t.Fatal(err)
	}
	return f
}

func (o *busOwner) beatNow() []byte { return o.beatAt(false, time.Now()) }

// cred is o's credential for its run.
func (o *busOwner) cred() []byte {
	f, err := encodeCred(o.id, o.inc, o.id8y.cred, o.sign(credSigned(o.id, o.inc, o.id8y.cred)), 1<<20)
	if err != nil {
		o.t.Fatal(err)
	}
	return f
}

// put registers (or updates) the record id at o's next seq.
func (o *busOwner) put(id string) []byte {
	o.seq++
	e := &entry{rec: Record{ID: id, Name: "svc", Version: "1.0.0", Owner: o.id, Port: 1, Rev: Rev{o.inc, o.seq}}}
	sig := o.sign(recordsSigned(o.id, o.inc, o.seq, recordsDigest(o.recs, id, e)))
	o.recs[id] = e
	f, err := encodePutSigned(o.id, o.inc, e, sig, 1<<20)
	if err != nil {
		o.t.Fatal(err)
	}
	return f
}

// del frees the record id at o's next seq.
func (o *busOwner) del(id string) []byte {
	o.seq++
	sig := o.sign(recordsSigned(o.id, o.inc, o.seq, recordsDigest(o.recs, id, nil)))
	delete(o.recs, id)
	f, err := encodeDelSigned(o.id, o.inc, o.seq, id, sig, 1<<20)
	if err != nil {
		o.t.Fatal(err)
	}
	return f
}

// snap is o's records as a bus snapshot, in chunks within limit.
func (o *busOwner) snap(limit int) [][]byte {
	recs := make([]*entry, 0, len(o.recs))
	for _, e := range o.recs {
		recs = append(recs, e)
	}
	sig := o.sign(recordsSigned(o.id, o.inc, o.seq, recordsDigest(o.recs, "", nil)))
	fs, err := encodeBusSnap(o.id, o.inc, o.seq, recs, sig, limit)
	if err != nil {
		o.t.Fatal(err)
	}
	return fs
}

// restart begins o's next run, with no records.
func (o *busOwner) restart() {
	o.inc++
	o.seq, o.beat = 0, 0
	o.recs = map[string]*entry{}
}

// feed applies msg on n as its bus would deliver it.
func feed(n *node, msg []byte) {
	n.Registry.mu.Lock()
	defer n.Registry.mu.Unlock()
	s := n.sites.link
	if s == nil {
		panic("feed: no bus runs on " + n.ID())
	}
	dec := decoder{maxMeta: n.cfg.MaxMetadataBytes, known: &n.Registry.ids}
	var bm busMessage
	n.onBus(s, msg, &dec, &bm, nil)
}

// onBusNode is a node of site on hub h, for a test that feeds it
// messages (feed).
func onBusNode(t testing.TB, h *memHub, id, site string, opts ...func(*Config)) *node {
	t.Helper()
	n := newNode(t, id, append([]func(*Config){inSite(site)}, opts...)...)
	h.attach(t, n)
	waitFor(t, id+" on the bus", func() bool { return locked(n, func(r *Registry) bool { return r.sites.link != nil }) })
	return n
}

// remoteState returns what n holds of remote id: "" when nothing, else
// live, records and seq.
func remoteState(n *node, id string) string {
	return locked(n, func(r *Registry) string {
		rm := r.sites.remotes[id]
		if rm == nil {
			return ""
		}
		return fmt.Sprintf("live=%v recs=%d seq=%d", rm.live, len(rm.records), rm.seq)
	})
}
