package sites

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/natstest"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// TestBusStats: Stats counts what a bus publishes and is delivered,
// names the server it is connected to without the token in its URL, and
// counts an outage and its time, and the connection made again.
func TestBusStats(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{Token: "t0ken"})
	host := strings.TrimPrefix(srv.URL(), "nats://")
	url := "nats://t0ken@" + host
	a, b := dial(t, config("a", "sa", url)), dial(t, config("b", "sb", url))
	sa, sb := session(t, a), session(t, b)
	settle(t, sa, sb, "b")
	for len(sb.b.in.q) > sb.b.in.head { // what settle left
		receive(sb, 10*time.Millisecond)
	}

	s := a.Stats()
	if want := "nats://xxxxx@" + host; !s.Connected || s.URL != want {
		t.Errorf("connected %v to %q, want true, %q", s.Connected, s.URL, want)
	}
	if s.Outages != 0 || s.Down != 0 || s.Reconnects != 0 || s.Dropped != 0 {
		t.Errorf("before any outage: %+v", s)
	}
	sentBefore, recvBefore := a.Stats(), b.Stats()
	msg := bytes.Repeat([]byte("x"), 100)
	for range 3 {
		if err := sa.Publish(msg); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if got := receive(sb, 5*time.Second); !bytes.Equal(got, msg) {
			t.Fatalf("b got %q", got)
		}
	}
	sent, recv := a.Stats(), b.Stats()
	if n, size := sent.MessagesSent-sentBefore.MessagesSent, sent.BytesSent-sentBefore.BytesSent; n != 3 || size != 300 {
		t.Errorf("a published 3 messages of 100 bytes; Stats counts %d, %d bytes", n, size)
	}
	if n, size := recv.MessagesReceived-recvBefore.MessagesReceived, recv.BytesReceived-recvBefore.BytesReceived; n != 3 || size != 300 {
		t.Errorf("b was delivered 3 messages of 100 bytes; Stats counts %d, %d bytes", n, size)
	}

	srv.Stop()
	waitFor(t, "the outage counted", func() bool { s = a.Stats(); return !s.Connected && s.Outages == 1 })
	if s.URL != "" {
		t.Errorf("URL %q while not connected", s.URL)
	}
	down := s.Down
	waitFor(t, "the outage's time growing", func() bool { return a.Stats().Down > down })
	srv.Restart()
	session(t, a)
	waitFor(t, "connected again", func() bool { s = a.Stats(); return s.Connected })
	if s.Outages != 1 || s.Reconnects == 0 || s.Down <= down {
		t.Errorf("after one outage: %d outages, %d reconnects, down %v (more than %v before the restart)", s.Outages, s.Reconnects, s.Down, down)
	}
	if later := a.Stats(); later.Down != s.Down {
		t.Errorf("the outages' time grew from %v to %v while connected", s.Down, later.Down)
	}
}
