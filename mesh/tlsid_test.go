package mesh

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/pki"
	"github.com/tallship-go/tallship/transport"
)

// With TLS a node can claim no id but its certificate's: a member with a
// trusted certificate for "m" that says it is "a" is refused with
// ErrAuth, whichever dials, and the error says what its certificate
// names. The id is judged only once proven: the liar cannot pass for a
// twin of "a" (which would make "a" yield) nor be refused as one.
func TestTLSNodeCannotClaimAnotherID(t *testing.T) {
	ca := pki.New(t)
	cfg := func(id, certID string) Config {
		c := testConfig(id)
		c.TLS = ca.Config(t, certID)
		return c
	}
	liar := start(t, "c", cfg("a", "m")) // earlier than the real a
	a := start(t, "c", cfg("a", "a"))
	b := start(t, "c", cfg("b", "b"))
	linkPair(t, b, a)
	aEvents := a.Events(context.Background())
	ctx := context.Background()
	for _, honest := range []*Node{b, a} {
		// The liar dials: refused (it may call a's proven id a twin of
		// its own; that is its view, not a's).
		if _, err := liar.Connect(ctx, addr(t, honest)); err == nil {
			t.Fatalf("the liar linked to %s", honest.ID())
		}
		_, err := honest.Connect(ctx, addr(t, liar))
		if !errors.Is(err, transport.ErrAuth) || errors.Is(err, transport.ErrDuplicateID) {
			t.Fatalf("%s → the liar: err = %v, want ErrAuth", honest.ID(), err)
		}
		if !strings.Contains(err.Error(), `"m"`) {
			t.Errorf("the error does not say what the certificate names: %v", err)
		}
	}
	if len(liar.Peers()) != 0 || !holds(b, "a", a) {
		t.Fatalf("the liar linked%s", meshState(a, b, liar))
	}
	// a took its refusals of the liar (it dialed last) before its next
	// event, a PeerUp: no IDConflict came before.
	c := start(t, "c", cfg("c", "c"))
	if _, err := c.Connect(ctx, addr(t, a)); err != nil {
		t.Fatal(err)
	}
	for e := range aEvents {
		if e.Kind == IDConflict {
			t.Fatalf("a got IDConflict from the liar: %v", e.Err)
		}
		if e.Kind == PeerUp && e.Peer == "c" {
			break
		}
	}
}

// A node with TLS and no id takes the id its certificate names.
func TestTLSIDFromCertificate(t *testing.T) {
	ca := pki.New(t)
	c := testConfig("")
	c.TLS = ca.Config(t, "node-7")
	n := start(t, "c", c)
	if n.ID() != "node-7" {
		t.Fatalf("ID() = %q, want the certificate's node-7", n.ID())
	}
	o := testConfig("o")
	o.TLS = ca.Config(t, "o")
	other := start(t, "c", o)
	linkPair(t, other, n)
	waitFor(t, "link", 5*time.Second, func() bool { return holds(other, "node-7", n) })
}
