package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// testCA issues toy credentials: an Ed25519 key and the CA's signature
// binding it to a node id. It stands in for the mesh's certificates.
type testCA struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{pub, priv}
}

// testIdentity is a node's Identity under a testCA.
type testIdentity struct {
	ca   *testCA
	priv ed25519.PrivateKey
	cred []byte // public key, then the CA's signature of id and key
}

func (ca *testCA) identity(id string) *testIdentity {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	cred := append([]byte(nil), pub...)
	cred = append(cred, ed25519.Sign(ca.priv, append([]byte(id+"\x00"), pub...))...)
	return &testIdentity{ca: ca, priv: priv, cred: cred}
}

func (i *testIdentity) Credential() []byte              { return i.cred }
func (i *testIdentity) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(i.priv, msg), nil }
func (i *testIdentity) Verifier(owner string, cred []byte) (func(msg, sig []byte) bool, error) {
	if len(cred) != ed25519.PublicKeySize+ed25519.SignatureSize {
		return nil, fmt.Errorf("credential of %d bytes", len(cred))
	}
	pub := ed25519.PublicKey(append([]byte(nil), cred[:ed25519.PublicKeySize]...))
	if !ed25519.Verify(i.ca.pub, append([]byte(owner+"\x00"), pub...), cred[ed25519.PublicKeySize:]) {
		return nil, fmt.Errorf("the credential does not name %q", owner)
	}
	return func(msg, sig []byte) bool { return ed25519.Verify(pub, msg, sig) }, nil
}

// signedBy makes a node sign with a credential of ca for its id.
func signedBy(ca *testCA) func(*Config) {
	return func(c *Config) { c.Identity = ca.identity(c.ID) }
}

// TestSignedChainConverges: with signatures, a chain a — b — c converges
// as without: a's records reach c through b (in b's sync, a snapshot of
// b's making, and then relayed changes), and are freed at c when a is
// cut off.
func TestSignedChainConverges(t *testing.T) {
	ca := newTestCA(t)
	a, b, c := newNode(t, "a", signedBy(ca)), newNode(t, "b", signedBy(ca)), newNode(t, "c", signedBy(ca))
	r1 := a.register(t, "web@1.0.0", 80, map[string]string{"zone": "x", "w": "1"})
	r2 := a.register(t, "db@2.0.0", 5432, nil)
	ab := connectSynced(t, a, b)
	connectSynced(t, b, c)
	c.waitEvent(t, Registered, r1.ID)
	c.waitEvent(t, Registered, r2.ID)
	if _, err := a.Update(r1.ID, map[string]string{"zone": "y"}); err != nil {
		t.Fatal(err)
	}
	c.waitEvent(t, Updated, r1.ID)
	if err := a.Free(r2.ID); err != nil {
		t.Fatal(err)
	}
	c.waitEvent(t, Freed, r2.ID)
	r3 := c.register(t, "api@1.0.0", 9, nil)
	a.waitEvent(t, Registered, r3.ID)
	if got := c.ids(t, "web"); len(got) != 1 || got[0] != r1.ID {
		t.Fatalf("c sees web %v, want %s", got, r1.ID)
	}
	ab.cut()
	c.waitEvent(t, Freed, r1.ID)
}

// closedBy returns the error Serve returned for f, failing the test if
// Serve still runs after 10 s.
func closedBy(t testing.TB, f *fakePeer) error {
	t.Helper()
	select {
	case err := <-f.errc:
		f.errc <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the link to the forger is still up after 10 s")
		return nil
	}
}

// forgeryCase is a message a peer p relays to a about owner y, y's
// frames at hand (y two hops from a, p in between).
type forgeryCase struct {
	name   string
	frames func(y *node, yc []byte, p *testIdentity) [][]byte
	forged bool // else a applies it
}

// TestSignedRefusesForgedRelays: a node two hops from an owner refuses
// what the node between them changed or made up in the owner's name — a
// record changed, one left out of a snapshot, a state changed, a
// credential for a run the owner did not sign, or of another node — and
// closes the link to it (ErrForged). What the owner signed, relayed
// unchanged, is applied.
func TestSignedRefusesForgedRelays(t *testing.T) {
	ca := newTestCA(t)
	y := newNode(t, "y", signedBy(ca))
	y.register(t, "web@1.0.0", 80, nil)
	y.register(t, "db@1.0.0", 81, nil)
	const max = DefaultMaxMessageBytes
	type yHas struct {
		inc, seq uint64
		recs     []*entry
		sig      []byte
		state    []byte
		cred     []byte
	}
	h := locked(y, func(r *Registry) yHas {
		st, _ := r.stateFrame(r.self)
		var recs []*entry
		for _, e := range r.self.records {
			recs = append(recs, e)
		}
		return yHas{r.self.inc, r.self.seq, recs, r.self.recSig, st, r.self.creds[0].frame}
	})
	snap := func(recs []*entry, sig []byte) [][]byte {
		return must(encodeSnapSigned("y", h.inc, h.seq, recs, sig, max))
	}
	changed := func(e *entry) *entry {
		c := *e
		c.rec.Port++
		c.summed = false
		return &c
	}
	for _, tc := range []forgeryCase{
		{"snapshot as signed", func(*node, []byte, *testIdentity) [][]byte { return snap(h.recs, h.sig) }, false},
		{"state as signed", func(*node, []byte, *testIdentity) [][]byte { return [][]byte{h.state} }, false},
		{"snapshot without a record", func(*node, []byte, *testIdentity) [][]byte { return snap(h.recs[:1], h.sig) }, true},
		{"snapshot with a record changed", func(*node, []byte, *testIdentity) [][]byte {
			return snap([]*entry{h.recs[0], changed(h.recs[1])}, h.sig)
		}, true},
		{"snapshot signed by the relay", func(_ *node, _ []byte, p *testIdentity) [][]byte {
			return snap(h.recs, must(p.Sign(recordsSigned("y", h.inc, h.seq, recordsDigest(map[string]*entry{h.recs[0].rec.ID: h.recs[0], h.recs[1].rec.ID: h.recs[1]}, "", nil)))))
		}, true},
		{"snapshot unsigned", func(*node, []byte, *testIdentity) [][]byte { return snap(h.recs, nil) }, true},
		{"put of a changed record", func(*node, []byte, *testIdentity) [][]byte {
			// On top of y's records, the next change, signed with the
			// signature of the last.
			return append(snap(h.recs, h.sig), must(encodePutSigned("y", h.inc, fakeRecord("y", h.inc, h.seq+1, "evil", nil), h.sig, max)))
		}, true},
		{"del signed by the relay", func(_ *node, _ []byte, p *testIdentity) [][]byte {
			id := h.recs[0].rec.ID
			rest := map[string]*entry{h.recs[1].rec.ID: h.recs[1]}
			sig := must(p.Sign(recordsSigned("y", h.inc, h.seq+1, recordsDigest(rest, "", nil))))
			return append(snap(h.recs, h.sig), must(encodeDelSigned("y", h.inc, h.seq+1, id, sig, max)))
		}, true},
		{"state leaving, with the signature of the state", func(*node, []byte, *testIdentity) [][]byte {
			var m message
			d := decoder{maxMeta: DefaultMaxMetadataBytes}
			typ, p := splitFrame(h.state)
			if err := d.decode(typ, p, &m); err != nil {
				panic(err)
			}
			m.leaving, m.beat = true, m.beat+1
			return [][]byte{must(encodeStateOf(&m, max))}
		}, true},
		{"credential for a later run, not signed by its key", func(_ *node, _ []byte, p *testIdentity) [][]byte {
			c := locked(y, func(r *Registry) []byte { return r.cfg.Identity.Credential() })
			return [][]byte{must(encodeCred("y", h.inc+1, c, must(p.Sign(credSigned("y", h.inc+1, c))), max))}
		}, true},
		{"credential of another node", func(_ *node, _ []byte, p *testIdentity) [][]byte {
			return [][]byte{must(encodeCred("y", h.inc+1, p.cred, must(p.Sign(credSigned("y", h.inc+1, p.cred))), max))}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newNode(t, "a", signedBy(ca))
			pid := ca.identity("p")
			p := newFakePeer(t, a, "p", 9)
			frames := [][]byte{must(encodeHello("p", []digestEntry{{owner: "p", inc: 9, beat: 1}}, max)), h.cred}
			frames = append(frames, tc.frames(y, h.cred, pid)...)
			if err := p.send(frames...); err != nil && !tc.forged {
				t.Fatal(err)
			}
			if !tc.forged {
				waitFor(t, "y applied at a", func() bool {
					return locked(a, func(r *Registry) bool { o := r.owners["y"]; return o != nil && (o.seq == h.seq || o.beat > 0) })
				})
				return
			}
			if err := closedBy(t, p); !errors.Is(err, ErrForged) {
				t.Fatalf("Serve = %v, want ErrForged", err)
			}
			// Nothing of the forgery: at most y's credential, or its
			// snapshot as signed ahead of a forged change.
			bad := locked(a, func(r *Registry) string {
				o := r.owners["y"]
				if o == nil || o.beat == 0 && !o.leaving && (o.seq == 0 && len(o.records) == 0 || o.seq == h.seq && len(o.records) == 2) {
					return ""
				}
				return fmt.Sprintf("run %d seq %d beat %d leaving %v, %d records", o.inc, o.seq, o.beat, o.leaving, len(o.records))
			})
			if bad != "" {
				t.Fatalf("a holds y at %s after the forgery", bad)
			}
		})
	}
}

// TestSignedLaterRunCannotHideRecords: a peer that claims a later run of
// an owner (a State, a Put, an empty snapshot of that run) cannot hide
// the owner's records: without the owner's credential for that run
// nothing of it applies, and a credential for it that the owner did not
// sign closes the link.
func TestSignedLaterRunCannotHideRecords(t *testing.T) {
	ca := newTestCA(t)
	a, b, y := newNode(t, "a", signedBy(ca)), newNode(t, "b", signedBy(ca)), newNode(t, "y", signedBy(ca))
	connectSynced(t, a, b)
	connectSynced(t, b, y)
	rec := y.register(t, "web@1.0.0", 80, nil)
	a.waitEvent(t, Registered, rec.ID)
	const max = DefaultMaxMessageBytes
	pid := ca.identity("p")
	later := y.self.inc + 1
	yc := locked(y, func(r *Registry) []byte { return r.cfg.Identity.Credential() })
	state := must(encodeStateOf(&message{typ: msgState, owner: "y", inc: later, beat: 1, base: 1}, max))
	p := newFakePeer(t, a, "p", 9)
	if err := p.send(
		must(encodeHello("p", []digestEntry{{owner: "p", inc: 9, beat: 1}}, max)),
		state,
		must(encodePutSigned("y", later, fakeRecord("y", later, 1, "evil", nil), must(pid.Sign([]byte("x"))), max)),
		must(encodeSnap("y", later, 0, nil, max))[0],
	); err != nil {
		t.Fatal(err)
	}
	flush(t, y, a)
	if !a.has(t, rec.ID) {
		t.Fatal("y's record is hidden at a by a later run that y never signed")
	}
	if err := p.send(must(encodeCred("y", later, yc, must(pid.Sign(credSigned("y", later, yc))), max)), state); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatal(err)
	}
	if err := closedBy(t, p); !errors.Is(err, ErrForged) {
		t.Fatalf("Serve = %v, want ErrForged", err)
	}
	flush(t, y, a)
	if !a.has(t, rec.ID) {
		t.Fatal("y's record is hidden at a after a forged credential")
	}
}

// warnings counts the Warn records logged through it.
type warnings struct {
	slog.Handler
	n *atomic.Int64
}

func (w warnings) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		w.n.Add(1)
	}
	return nil
}
func (w warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w warnings) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w warnings) WithGroup(string) slog.Handler            { return w }

// TestSignedMeshConverges: six signing nodes in a ring with chords form,
// relay (whole states, deltas, heartbeats, snapshots of their own
// making) and converge with no link refused; a node that leaves, and
// one cut off, are freed everywhere.
func TestSignedMeshConverges(t *testing.T) {
	ca := newTestCA(t)
	var warned atomic.Int64
	opts := func(c *Config) {
		signedBy(ca)(c)
		c.Logger = slog.New(warnings{slog.DiscardHandler, &warned})
	}
	var ns []*node
	var recs []Record
	for i := range 6 {
		n := newNode(t, fmt.Sprintf("n%d", i), opts)
		recs = append(recs, n.register(t, "svc@1.0.0", 100+i, map[string]string{"i": fmt.Sprint(i)}))
		ns = append(ns, n)
	}
	links := map[[2]int]*testLink{}
	for _, e := range [][2]int{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 0}, {0, 3}} {
		links[e] = connect(t, ns[e[0]], ns[e[1]])
	}
	for _, n := range ns {
		for _, r := range recs {
			n.waitEvent(t, Registered, r.ID)
		}
	}
	time.Sleep(5 * 100 * time.Millisecond) // heartbeats, relayed
	upd, err := ns[2].Update(recs[2].ID, map[string]string{"i": "two"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		n.waitEvent(t, Updated, upd.ID)
		if got := len(n.ids(t, "svc")); got != 6 {
			t.Fatalf("%s sees %d services, want 6", n.ID(), got)
		}
	}
	if err := ns[4].Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	links[[2]int{2, 3}].cut()
	links[[2]int{0, 3}].cut() // n3 is cut off (n4 left)
	for _, i := range []int{0, 1, 2, 5} {
		ns[i].waitEvent(t, Freed, recs[4].ID)
		ns[i].waitEvent(t, Freed, recs[3].ID)
	}
	if n := warned.Load(); n != 0 {
		t.Fatalf("%d warnings logged (a link refused?)", n)
	}
}

// TestSignedWithoutCredentialAsksForIt: a message of an owner's run whose
// credential this node does not hold (it forgot the owner, say) is not
// applied, and not taken for a forgery: the node asks the peer for the
// owner, and applies the answer, which brings the credential first.
func TestSignedWithoutCredentialAsksForIt(t *testing.T) {
	ca := newTestCA(t)
	y := newNode(t, "y", signedBy(ca))
	y.register(t, "web@1.0.0", 80, nil)
	const max = DefaultMaxMessageBytes
	type yHas struct{ state, cred []byte }
	h := locked(y, func(r *Registry) yHas {
		st, _ := r.stateFrame(r.self)
		return yHas{st, r.self.creds[0].frame}
	})
	a := newNode(t, "a", signedBy(ca))
	p := newTapPeer(t, a, "p", 9)
	if err := p.send(must(encodeHello("p", []digestEntry{{owner: "p", inc: 9, beat: 1}}, max)), h.state); err != nil {
		t.Fatal(err)
	}
	p.until(t, "a's want of y", func(m *message) bool { return m.typ == msgWant && m.owner == "y" })
	if beat := locked(a, func(r *Registry) uint64 { return r.owners["y"].beat }); beat != 0 {
		t.Fatalf("a applied y's state at beat %d without its credential", beat)
	}
	answer := locked(y, func(r *Registry) [][]byte { return must(r.snapFrames(r.self)) })
	if err := p.send(append(append([][]byte{h.cred}, answer...), h.state)...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "y's state and records at a", func() bool {
		return locked(a, func(r *Registry) bool { o := r.owners["y"]; return o.beat > 0 && len(o.records) == 1 })
	})
}

// TestSignedStateRebuiltByRelay: a relay that holds an owner's state as
// a delta, and the owner's records at a later change, sends a new peer
// the whole state of its own making: with the seq the owner signed in
// it, not the records' seq it holds, or the peer would refuse it.
func TestSignedStateRebuiltByRelay(t *testing.T) {
	ca := newTestCA(t)
	var warned atomic.Int64
	opts := func(c *Config) {
		signedBy(ca)(c)
		c.Logger = slog.New(warnings{slog.DiscardHandler, &warned})
	}
	y, b, z, c := newNode(t, "y", opts), newNode(t, "b", opts), newNode(t, "z", opts), newNode(t, "c", opts)
	connectSynced(t, y, b)
	settled(t, y, b)
	connectSynced(t, y, z) // y's next state goes to b as a delta
	waitFor(t, "y's delta at b", func() bool {
		return locked(b, func(r *Registry) bool { o := r.owners["y"]; return o.delta != nil && o.peers["z"] != 0 })
	})
	rec := y.register(t, "web@1.0.0", 80, nil)
	b.waitEvent(t, Registered, rec.ID)
	if ahead := locked(b, func(r *Registry) bool { o := r.owners["y"]; return o.seq > o.stateSeq && o.delta != nil }); !ahead {
		t.Fatal("b does not hold y's state as a delta behind y's records: the test covers nothing")
	}
	connectSynced(t, b, c)
	c.waitEvent(t, Registered, rec.ID)
	if n := warned.Load(); n != 0 {
		t.Fatalf("%d warnings logged (a link refused?)", n)
	}
}

// FuzzServeSigned feeds a handshaken link of a signing node arbitrary
// frames, from seeds that n1 signed: Serve must return an error or nil,
// never panic or hang, whatever credentials and signatures say.
func FuzzServeSigned(f *testing.F) {
	ca := newTestCA(f)
	n1 := ca.identity("n1")
	const max = DefaultMaxMessageBytes
	cred := n1.Credential()
	e := fakeRecord("n1", 5, 1, "web", map[string]string{"zone": "a"})
	seed := [][]byte{
		must(encodeCred("n1", 5, cred, must(n1.Sign(credSigned("n1", 5, cred))), max)),
		must(encodeStateOf(&message{typ: msgState, owner: "n1", inc: 5, beat: 1, base: 1, peers: []peerRef{{"me", 1}},
			sig: must(n1.Sign(stateSigned("n1", 5, 0, 1, false, 1, []peerRef{{"me", 1}}, 0)))}, max)),
		must(encodePutSigned("n1", 5, e, must(n1.Sign(recordsSigned("n1", 5, 1, recordsDigest(nil, e.rec.ID, e)))), max)),
		must(encodeDelSigned("n1", 5, 2, e.rec.ID, must(n1.Sign(recordsSigned("n1", 5, 2, recordsDigest(nil, "", nil)))), max)),
	}
	f.Add(bytes.Join(seed, nil))
	f.Add(bytes.Join(seedFrames()[1:], nil))
	// The signed seed is taken whole: the fuzzer starts from messages
	// that pass the checks.
	n := newNode(f, "me", func(c *Config) { c.Identity = ca.identity(c.ID) })
	p := newFakePeer(f, n, "n1", 5)
	if err := p.send(append([][]byte{must(encodeHello("n1", []digestEntry{{owner: "n1", inc: 5, beat: 1}}, max))}, seed[:3]...)...); err != nil {
		f.Fatal(err)
	}
	waitFor(f, "n1's signed record", func() bool {
		return locked(n, func(r *Registry) bool { o := r.owners["n1"]; return o != nil && o.beat == 1 && len(o.records) == 1 })
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		n := newNode(t, "me", func(c *Config) { c.Identity = ca.identity(c.ID) })
		c1, c2 := net.Pipe()
		errc := make(chan error, 1)
		go func() { errc <- n.Serve(context.Background(), "n1", c1) }()
		go drain(c2)
		c2.Write(must(encodeHello("n1", nil, max)))
		c2.Write(data)
		c2.Close()
		<-errc
		if _, err := n.Services(""); err != nil {
			t.Fatal(err)
		}
	})
}

// distrusting is an Identity that cannot prove one owner's credential
// here (as an expired certificate).
type distrusting struct {
	*testIdentity
	owner string
}

func (d distrusting) Verifier(owner string, cred []byte) (func(msg, sig []byte) bool, error) {
	if owner == d.owner {
		return nil, fmt.Errorf("%w: expired", ErrUntrusted)
	}
	return d.testIdentity.Verifier(owner, cred)
}

// TestSignedUntrustedCredential: a credential this node cannot prove
// (ErrUntrusted: an expired certificate, say, that the relay checked
// before) is not a forgery: the link stays, nothing of that run applies,
// and the node does not ask for it again and again.
func TestSignedUntrustedCredential(t *testing.T) {
	ca := newTestCA(t)
	y := newNode(t, "y", signedBy(ca))
	y.register(t, "web@1.0.0", 80, nil)
	const max = DefaultMaxMessageBytes
	frames := locked(y, func(r *Registry) [][]byte {
		st, _ := r.stateFrame(r.self)
		return append(append([][]byte{r.self.creds[0].frame}, must(r.snapFrames(r.self))...), st)
	})
	a := newNode(t, "a", func(c *Config) { c.Identity = distrusting{ca.identity(c.ID), "y"} })
	p := newTapPeer(t, a, "p", 9)
	if err := p.send(append([][]byte{must(encodeHello("p", []digestEntry{{owner: "p", inc: 9, beat: 1}}, max))}, frames...)...); err != nil {
		t.Fatal(err)
	}
	if err := p.send(frames[1:]...); err != nil { // and again, without the credential
		t.Fatal(err)
	}
	if err := p.send(must(encodeWant("a", max))); err != nil {
		t.Fatal(err)
	}
	for _, m := range p.until(t, "a's answer to p's want", func(m *message) bool { return m.typ == msgSnap && m.owner == "a" }) {
		if m.typ == msgWant && m.owner == "y" {
			t.Fatal("a asked for y, whose credential it cannot prove")
		}
	}
	if got := locked(a, func(r *Registry) string {
		o := r.owners["y"]
		return fmt.Sprintf("beat %d, %d records", o.beat, len(o.records))
	}); got != "beat 0, 0 records" {
		t.Fatalf("a holds y at %s", got)
	}
}
