package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/natstest"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/transport"
)

// A link that breaks while both nodes live is made again: Stats counts it
// redone, and a new link made, with the peer still up.
func TestStatsLinksRedone(t *testing.T) {
	a := start(t, "stats", testConfig("a"))
	b := start(t, "stats", testConfig("b"))
	linkPair(t, b, a)
	before := a.Stats().LinksMade + b.Stats().LinksMade
	if before != 2 {
		t.Fatalf("links made after one link: %d on both ends, want 2", before)
	}
	if killLink(b, "a") == 0 {
		t.Fatal("no link to kill")
	}
	waitFor(t, "the link made again", 5*time.Second, func() bool {
		return a.Stats().LinksRedone+b.Stats().LinksRedone > 0 && settled(a, b)
	})
	if made := a.Stats().LinksMade + b.Stats().LinksMade; made < before+2 {
		t.Errorf("links made after a redone one: %d on both ends, want at least %d", made, before+2)
	}
	if s := b.Stats(); s.Peers != 1 {
		t.Errorf("peers after a redone link: %d, want 1", s.Peers)
	}
}

// A subscriber that does not read loses the oldest events beyond its
// queue, and each loss is counted.
func TestStatsEventsDropped(t *testing.T) {
	var wg sync.WaitGroup
	h := newHub(1, &wg)
	ctx, cancel := context.WithCancel(context.Background())
	h.subscribe(ctx) // never read
	const events = 5
	for range events {
		h.publish(Event{Kind: PeerUp})
	}
	// One event may be held by the subscription's goroutine, one waits
	// in its queue: the others were dropped.
	if got := h.dropped.Load(); got < events-2 || got > events-1 {
		t.Errorf("dropped %d of %d events with a queue of 1, want %d or %d", got, events, events-2, events-1)
	}
	cancel()
	h.close()
	wg.Wait()
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestRefusalReason(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("link to 10.0.0.1:4000: %w", err) }
	for _, tc := range []struct {
		err  error
		want int
	}{
		{wrap(transport.ErrAuth), refusedAuth},
		{wrap(transport.ErrWrongCluster), refusedCluster},
		{wrap(transport.ErrWrongVersion), refusedVersion},
		{wrap(&transport.TwinError{ID: "a"}), refusedDuplicateID},
		{wrap(transport.ErrDuplicateID), refusedDuplicateID},
		{wrap(transport.ErrSelfLink), refusedSelf},
		{wrap(timeoutErr{}), refusedTimeout},
		{wrap(os.ErrDeadlineExceeded), refusedTimeout},
		{wrap(transport.ErrBadHandshake), refusedOther},
		{wrap(ErrTooManyPeers), refusedOther},
		{errors.New("EOF"), refusedOther},
	} {
		if got := refusalReason(tc.err); got != tc.want {
			t.Errorf("refusalReason(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// Refused handshakes are counted by reason on both ends; a dial called
// off is not a refusal.
func TestStatsRefused(t *testing.T) {
	a := start(t, "stats", testConfig("a"))
	other := start(t, "another", testConfig("o"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := other.Connect(ctx, addr(t, a)); !errors.Is(err, transport.ErrWrongCluster) {
		t.Fatalf("Connect across clusters: %v, want ErrWrongCluster", err)
	}
	waitFor(t, "the refusal counted on both ends", 5*time.Second, func() bool {
		return a.Stats().HandshakesRefused.Cluster == 1 && other.Stats().HandshakesRefused.Cluster == 1
	})
	other.handshakeFailed(fmt.Errorf("link to x: %w", context.Canceled))
	other.handshakeFailed(fmt.Errorf("link to x: %w", context.DeadlineExceeded))
	if got, want := other.Stats().HandshakesRefused, (Refusals{Cluster: 1}); got != want {
		t.Errorf("refusals %+v, want %+v", got, want)
	}
}

// A node on NATS counts its connection's figures and the other sites it
// hears: their members and records, its traffic, an outage and the
// connection made again; the server's URL shows without its token. A
// node without NATS has them all zero, and a closed one keeps its
// counters and reads its gauges zero.
func TestStatsNATS(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	if s := start(t, "c", testConfig("lan")).Stats().NATS; s != (NATSStats{}) {
		t.Errorf("a node without NATS: %+v, want zero", s)
	}
	srv := natstest.Start(t, natstest.Options{Token: "t0ken"})
	host := strings.TrimPrefix(srv.URL(), "nats://")
	urls := []string{"nats://t0ken@" + host}
	a := site(t, "c", "a", 1, urls)[0]
	b := site(t, "c", "b", 2, urls)
	for i, n := range []int{2, 1} {
		for j := range n {
			if _, err := b[i].Register(Service{Role: "web@1.0.0", Port: 8000 + j}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var s NATSStats
	waitFor(t, "a hears b's 2 members and 3 records", 10*time.Second, func() bool {
		s = a.Stats().NATS
		return s.RemoteMembers == 2 && s.RemoteRecords == 3
	})
	if want := "nats://xxxxx@" + host; !s.Connected || s.URL != want {
		t.Errorf("connected %v to %q, want true, %q", s.Connected, s.URL, want)
	}
	if s.MessagesSent == 0 || s.BytesSent == 0 || s.MessagesReceived == 0 || s.BytesReceived == 0 {
		t.Errorf("no traffic counted: %+v", s)
	}
	if s.Outages != 0 || s.OutageTime != 0 || s.Reconnects != 0 || s.MessagesDropped != 0 {
		t.Errorf("before any outage: %+v", s)
	}
	if r := a.Stats().Records; r != 3 {
		t.Errorf("a sees %d records, want b's 3", r)
	}
	// b-0 hears a on its own time (a's Beat): wait for it, then check
	// that it counts a alone, with none of b's own as remote.
	var bs NATSStats
	waitFor(t, "b-0 hears a", 10*time.Second, func() bool {
		bs = b[0].Stats().NATS
		return bs.RemoteMembers >= 1
	})
	if bs.RemoteMembers != 1 || bs.RemoteRecords != 0 {
		t.Errorf("b-0 hears %d members of other sites, %d records; want a alone, none", bs.RemoteMembers, bs.RemoteRecords)
	}

	srv.Stop()
	waitFor(t, "the outage counted, b's members gone", 10*time.Second, func() bool {
		s = a.Stats().NATS
		return !s.Connected && s.Outages == 1 && s.RemoteMembers == 0 && s.RemoteRecords == 0
	})
	if s.URL != "" || s.OutageTime <= 0 {
		t.Errorf("during the outage: URL %q, outage time %v", s.URL, s.OutageTime)
	}
	srv.Restart()
	waitFor(t, "back, b's members again", 10*time.Second, func() bool {
		s = a.Stats().NATS
		return s.Connected && s.RemoteMembers == 2 && s.RemoteRecords == 3
	})
	if s.Outages != 1 || s.Reconnects == 0 || s.OutageTime <= 0 {
		t.Errorf("after one outage: %d outages, %d reconnects, %v without NATS", s.Outages, s.Reconnects, s.OutageTime)
	}

	a.Close()
	after := a.Stats().NATS
	if after.Connected || after.URL != "" || after.RemoteMembers != 0 || after.RemoteRecords != 0 {
		t.Errorf("gauges after Close: %+v", after)
	}
	if after.MessagesSent < s.MessagesSent || after.Outages != 1 || after.Reconnects < s.Reconnects {
		t.Errorf("counters after Close: %+v, before %+v", after, s)
	}
}
