package mesh

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/testutil/pki"
	"github.com/tallship-go/tallship/transport"
)

func secretConfig(id, secret string) Config {
	c := testConfig(id)
	c.Secret = secret
	return c
}

func TestSecretKeepsStrangersOut(t *testing.T) {
	leakcheck.Goroutines(t)
	a := start(t, "c", secretConfig("a", "s3cret"))
	b := start(t, "c", secretConfig("b", "s3cret"))
	wrong := start(t, "c", secretConfig("w", "guess"))
	none := start(t, "c", testConfig("n"))
	ctx := context.Background()
	if _, err := b.Connect(ctx, addr(t, a)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(Service{Role: "vault@1.0.0", Port: 1}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{wrong, none} {
		_, err := n.Connect(ctx, addr(t, a))
		if !errors.Is(err, transport.ErrAuth) || !strings.Contains(err.Error(), "secret") {
			t.Fatalf("%s: err = %v, want ErrAuth naming the secret", n.ID(), err)
		}
		if _, err := n.Register(Service{Role: "intruder@1.0.0", Port: 2}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "b sees vault", 5*time.Second, func() bool {
		recs, _ := b.Services("vault")
		return len(recs) == 1
	})
	for _, n := range []*Node{wrong, none} {
		if recs, _ := n.Services("vault"); len(recs) != 0 || len(n.Peers()) != 0 {
			t.Fatalf("%s sees %v, peers %v", n.ID(), recs, n.Peers())
		}
	}
	for _, n := range []*Node{a, b} {
		if recs, _ := n.Services("intruder"); len(recs) != 0 || len(n.Peers()) != 1 {
			t.Fatalf("%s sees %v, peers %v", n.ID(), recs, peerIDs(n))
		}
	}
}

func TestSecretSealsTraffic(t *testing.T) {
	a := start(t, "c", secretConfig("a", "s3cret"))
	b := start(t, "c", secretConfig("b", "s3cret"))
	cp := newProxy(t, addr(t, a))
	ctx := context.Background()
	if _, err := b.Connect(ctx, cp.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link", 5*time.Second, func() bool { return settled(a, b) })
	const text, role = "attack at dawn, the password is swordfish", "confidential-payroll"
	if _, err := b.Register(Service{Role: role + "@1.0.0", Port: 9}); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(ctx, "a", []byte(text)); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, a); string(m.Data) != text {
		t.Fatalf("got %q", m.Data)
	}
	waitFor(t, "a sees the role", 5*time.Second, func() bool {
		recs, _ := a.Services(role)
		return len(recs) == 1
	})
	wire := cp.captured()
	if len(wire) == 0 {
		t.Fatal("nothing captured")
	}
	for _, secret := range []string{text, role, "swordfish"} {
		if bytes.Contains(wire, []byte(secret)) {
			t.Fatalf("%q appears on the wire", secret)
		}
	}
}

func TestTLSMesh(t *testing.T) {
	leakcheck.Goroutines(t)
	ca := pki.New(t)
	tlsConfig := func(id string, p *pki.CA) Config {
		c := testConfig(id)
		c.TLS = p.Config(t, id)
		return c
	}
	a := start(t, "c", tlsConfig("a", ca))
	b := start(t, "c", tlsConfig("b", ca))
	c := start(t, "c", tlsConfig("c", ca))
	ctx := context.Background()
	for _, n := range []*Node{b, c} {
		if _, err := n.Connect(ctx, addr(t, a)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "TLS mesh of three", 5*time.Second, func() bool { return settled(a, b, c) })
	rogue := start(t, "c", tlsConfig("r", pki.New(t)))
	if _, err := rogue.Connect(ctx, addr(t, a)); !errors.Is(err, transport.ErrAuth) {
		t.Fatalf("untrusted certificate: err = %v, want ErrAuth", err)
	}
	if len(rogue.Peers()) != 0 || len(a.Peers()) != 2 {
		t.Fatalf("rogue peers %v, a peers %v", rogue.Peers(), peerIDs(a))
	}
}

func TestSecretMDNSFindsOnlySameSecret(t *testing.T) {
	netns.Require(t)
	cfg := func(id, s string) Config { c := secretConfig(id, s); c.Discovery = nil; return c }
	a := start(t, "sec", cfg("a", "one"))
	b := start(t, "sec", cfg("b", "one"))
	x := start(t, "sec", cfg("x", "two"))
	waitFor(t, "same secret linked", 5*time.Second, func() bool { return settled(a, b) })
	if _, err := a.Register(Service{Role: "hidden@1.0.0", Port: 3}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := x.Lookup(ctx, "hidden"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("other secret looked up: %v", err)
	}
	if len(x.Peers()) != 0 {
		t.Fatalf("x linked to %v", peerIDs(x))
	}
}
