package discovery

import (
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// Packets counts what two nodes sent each other to meet, and the goodbye.
func TestMDNSPackets(t *testing.T) {
	netns.Require(t)
	ma, mb := &MDNS{}, &MDNS{}
	if sent, received := ma.Packets(); sent != 0 || received != 0 {
		t.Fatalf("a new MDNS counts %d sent, %d received, want 0", sent, received)
	}
	a := startNode(t, ma, Self{Cluster: "count", ID: "a"})
	b := startNode(t, mb, Self{Cluster: "count", ID: "b"})
	b.rec.waitFor(t, 5*time.Second, "b finds a", knows("a"))
	a.rec.waitFor(t, 5*time.Second, "a finds b", knows("b"))
	aSent, aReceived := ma.Packets()
	bSent, bReceived := mb.Packets()
	t.Logf("a sent %d, received %d; b sent %d, received %d", aSent, aReceived, bSent, bReceived)
	// Each announced (and probed, and queried), and each heard the other.
	if aSent == 0 || bSent == 0 || aReceived == 0 || bReceived == 0 {
		t.Fatalf("a sent %d, received %d; b sent %d, received %d; want some of each", aSent, aReceived, bSent, bReceived)
	}
	a.stop(t)
	if sent, _ := ma.Packets(); sent <= aSent {
		t.Errorf("a sent %d packets before its goodbye and %d after, want more", aSent, sent)
	}
}
