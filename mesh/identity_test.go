package mesh

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/pki"
	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/transport"
	"github.com/tallship-go/tallship/transport/tlsid"
)

// laxIdentity signs as the node it wraps and takes any credential: an
// attacker's build.
type laxIdentity struct{ *certIdentity }

func (laxIdentity) Verifier(string, []byte) (func(msg, sig []byte) bool, error) {
	return func([]byte, []byte) bool { return true }, nil
}

// With TLS a node with a valid certificate for "x" cannot get a record
// owned by "y" accepted by any node: here x runs a build of its own,
// whose registry links as x (its certificate proves it) and relays the
// records of a registry "y" that signs with x's key and credential.
// What x signs as x is taken; y's credential, which names x, closes x's
// link at the first node, and no node shows y's records.
func TestTLSRecordsSignedByTheirOwners(t *testing.T) {
	ca := pki.New(t)
	cfg := func(id string) Config {
		c := testConfig(id)
		c.TLS = ca.Config(t, id)
		return c
	}
	a, b := start(t, "c", cfg("a")), start(t, "c", cfg("b"))
	linkPair(t, b, a)

	xtls := ca.Config(t, "x")
	xid, err := newCertIdentity(xtls)
	if err != nil {
		t.Fatal(err)
	}
	newReg := func(id string) *registry.Registry {
		rc := registry.LocalConfig(id)
		rc.Identity = laxIdentity{xid}
		rc.Logger = a.log
		r, err := registry.New(rc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	x, y := newReg("x"), newReg("y")
	ctx := context.Background()
	l, err := transport.Dial(ctx, addr(t, a), transport.Hello{Version: transport.Version, Cluster: "c", ID: "x", Incarnation: time.Now().UnixNano()}, transport.Config{TLS: xtls}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s, err := l.OpenStream(ctx, protoRegistry)
	if err != nil {
		t.Fatal(err)
	}
	go x.Serve(ctx, "a", s)
	own, err := x.Register(registry.Service{Role: "own@1.0.0", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "x's own record at b", 5*time.Second, func() bool {
		recs, _ := b.Services("own")
		return len(recs) == 1 && recs[0].ID == own.ID
	})

	if _, err := y.Register(registry.Service{Role: "evil@1.0.0", Port: 2}); err != nil {
		t.Fatal(err)
	}
	p1, p2 := net.Pipe()
	go x.Serve(ctx, "y", p1)
	go y.Serve(ctx, "x", p2)
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a kept its link to x, which relayed records of y signed by x")
	}
	time.Sleep(200 * time.Millisecond) // anything in flight
	for _, n := range []*Node{a, b} {
		if recs, err := n.Services("evil"); err != nil || len(recs) != 0 {
			t.Fatalf("%s shows y's records %v (err %v)", n.ID(), recs, err)
		}
	}
	if !errors.Is(registry.ErrForged, registry.ErrProtocol) {
		t.Fatal("ErrForged does not wrap ErrProtocol: the mesh would keep the link")
	}
}

// BenchmarkCertIdentity measures what owners' signatures cost with TLS
// certificates of transport/tlsid (ECDSA P-256): an owner's signature of
// a state or a change, its check by a receiver, and the check of a
// credential (chain and id), once per owner's run.
func BenchmarkCertIdentity(b *testing.B) {
	ca := pki.New(b)
	id, err := newCertIdentity(ca.Config(b, "node-7f3c2a"))
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 120) // a state of a few neighbours, or a change's digest
	sig, err := id.Sign(msg)
	if err != nil {
		b.Fatal(err)
	}
	verify, err := id.Verifier("node-7f3c2a", id.Credential())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := id.Sign(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !verify(msg, sig) {
				b.Fatal("signature refused")
			}
		}
	})
	b.Run("credential", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := id.Verifier("node-7f3c2a", id.Credential()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A node whose certificate a peer cannot prove any more (here: expired
// by a's clock) is not a forger's doing: a keeps its link to the relay
// b, shows b's records, shows none of c's, and says why once.
func TestTLSUntrustedOwnerKeepsTheRelayLinked(t *testing.T) {
	ca, err := tlsid.NewCA("test CA", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(id string, validity time.Duration) Config {
		tc, err := ca.Config(id, validity)
		if err != nil {
			t.Fatal(err)
		}
		c := testConfig(id)
		c.TLS = tc
		return c
	}
	ac := cfg("a", 48*time.Hour)
	warns := &warnLog{}
	ac.Logger = slog.New(warns)
	ac.TLS.Time = func() time.Time { return time.Now().Add(2 * time.Hour) } // c's certificate (an hour) expired
	a, b, c := start(t, "c", ac), start(t, "c", cfg("b", 48*time.Hour)), start(t, "c", cfg("c", time.Hour))
	linkPair(t, a, b)
	if _, err := b.Connect(context.Background(), addr(t, c)); err != nil {
		t.Fatal(err)
	}
	// (c, told of a by b, cannot link to a: a finds c's certificate
	// expired.)
	if _, err := c.Register(Service{Role: "cs@1.0.0", Port: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Register(Service{Role: "bs@1.0.0", Port: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(context.Background(), "cs"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Lookup(ctx, "bs"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // c's states and records, relayed by b
	if recs, _ := a.Services("cs"); len(recs) != 0 {
		t.Fatalf("a shows c's records %v, whose certificate expired by a's clock", recs)
	}
	untrusted := 0
	for _, m := range warns.all() {
		switch {
		case strings.Contains(m, "refused, link closed"):
			t.Fatalf("a closed a link: %s", m)
		case strings.Contains(m, "not trusted here") && strings.Contains(m, "owner=c"):
			untrusted++
		}
	}
	if untrusted != 1 {
		t.Fatalf("a said %d times that c's credential is not trusted, want once: %q", untrusted, warns.all())
	}
}
