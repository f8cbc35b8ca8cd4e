package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/transport"
)

// A link that fails is a LinkFailed event on each end that took part,
// naming the reason in its first words and wrapping the error.
func TestLinkFailedReasons(t *testing.T) {
	secret := func(s string) func(*Config) { return func(c *Config) { c.Secret = s } }
	for _, tc := range []struct {
		name             string
		dialer, acceptor func(*Config)
		dialerCluster    string
		want             error // the error both ends' events wrap
		why              string
	}{
		{name: "wrong secret", dialer: secret("one"), acceptor: secret("two"), want: transport.ErrAuth, why: "wrong cluster secret"},
		{name: "secret missing", dialer: secret(""), acceptor: secret("two"), want: transport.ErrAuth, why: "wrong cluster secret"},
		{name: "wrong cluster", dialerCluster: "other", want: transport.ErrWrongCluster, why: "wrong cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acfg, dcfg := testConfig("acceptor"), testConfig("dialer")
			if tc.acceptor != nil {
				tc.acceptor(&acfg)
			}
			if tc.dialer != nil {
				tc.dialer(&dcfg)
			}
			cluster := "c"
			if tc.dialerCluster != "" {
				cluster = tc.dialerCluster
			}
			a := start(t, "c", acfg)
			d := start(t, cluster, dcfg)
			aev, dev := a.Events(t.Context()), d.Events(t.Context())
			_, err := d.Connect(context.Background(), addr(t, a))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Connect: %v, want %v", err, tc.want)
			}
			e := nextEvent(t, dev, LinkFailed)
			checkFailure(t, "dialer", e, tc.want, tc.why)
			if e.Addrs[0].String() != addr(t, a) {
				t.Errorf("dialer's event names %v, want the address dialed %s", e.Addrs, addr(t, a))
			}
			e = nextEvent(t, aev, LinkFailed)
			checkFailure(t, "acceptor", e, tc.want, tc.why)
		})
	}
}

func checkFailure(t *testing.T, who string, e Event, want error, why string) {
	t.Helper()
	t.Logf("%s: %v %v %q: %v", who, e.Kind, e.Addrs, e.Peer, e.Err)
	if !errors.Is(e.Err, want) {
		t.Errorf("%s: LinkFailed error %v, want %v", who, e.Err, want)
	}
	if e.Err == nil || !strings.HasPrefix(e.Err.Error(), "link failed: "+why+":") {
		t.Errorf("%s: LinkFailed error %q does not start with %q", who, e.Err, "link failed: "+why+":")
	}
	if len(e.Addrs) != 1 || !e.Addrs[0].IsValid() {
		t.Errorf("%s: LinkFailed addresses %v, want the one address of the link", who, e.Addrs)
	}
}

// The protocol version: each end in turn is a node of another version
// (a bare transport handshake).
func TestLinkFailedVersion(t *testing.T) {
	other := transport.Hello{Version: transport.Version + 1, Cluster: "c", ID: "future"}
	t.Run("acceptor", func(t *testing.T) {
		a := start(t, "c", testConfig("a"))
		ev := a.Events(t.Context())
		conn, err := net.Dial("tcp", addr(t, a))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := transport.Client(t.Context(), conn, other, transport.Config{}, nil); !errors.Is(err, transport.ErrWrongVersion) {
			t.Fatalf("handshake of another version: %v, want ErrWrongVersion", err)
		}
		checkFailure(t, "acceptor", nextEvent(t, ev, LinkFailed), transport.ErrWrongVersion, "wrong protocol version")
	})
	t.Run("dialer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			transport.Server(context.Background(), conn, other, transport.Config{HandshakeTimeout: time.Second}, nil)
		}()
		d := start(t, "c", testConfig("d"))
		ev := d.Events(t.Context())
		if _, err := d.Connect(context.Background(), ln.Addr().String()); !errors.Is(err, transport.ErrWrongVersion) {
			t.Fatalf("Connect to another version: %v, want ErrWrongVersion", err)
		}
		checkFailure(t, "dialer", nextEvent(t, ev, LinkFailed), transport.ErrWrongVersion, "wrong protocol version")
	})
}

// A second live run of a linked peer's id: the node holding the first
// refuses it (LinkFailed), and the second run learns that its id is taken
// (IDConflict, not LinkFailed).
func TestLinkFailedDuplicateID(t *testing.T) {
	a := start(t, "c", testConfig("a"))
	b := start(t, "c", testConfig("b"))
	linkPair(t, b, a)
	twin := start(t, "c", testConfig("b"))
	aev, tev := a.Events(t.Context()), twin.Events(t.Context())
	if _, err := twin.Connect(context.Background(), addr(t, a)); !errors.Is(err, transport.ErrDuplicateID) {
		t.Fatalf("twin's Connect: %v, want ErrDuplicateID", err)
	}
	e := nextEvent(t, aev, LinkFailed)
	checkFailure(t, "holder", e, transport.ErrDuplicateID, "duplicate node id")
	if e.Peer != "b" {
		t.Errorf("holder's event names peer %q, want b", e.Peer)
	}
	nextEvent(t, tev, IDConflict)
	twin.failMu.Lock()
	defer twin.failMu.Unlock()
	if len(twin.failures) != 0 {
		t.Errorf("the twin reported its refusal as a failed link too: %v", twin.failures)
	}
}

// Unreachable addresses and silent peers, on the end that sees them.
func TestLinkFailedUnreachable(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		ln.Close()
		d := start(t, "c", testConfig("d"))
		ev := d.Events(t.Context())
		if _, err := d.Connect(context.Background(), closed); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("Connect to a closed port: %v, want ECONNREFUSED", err)
		}
		e := nextEvent(t, ev, LinkFailed)
		checkFailure(t, "dialer", e, syscall.ECONNREFUSED, "unreachable (connection refused)")
		if e.Addrs[0].String() != closed {
			t.Errorf("event names %v, want %s", e.Addrs, closed)
		}
	})
	t.Run("closed during the handshake", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() { // reads the hello and closes, as a node too busy to handshake
			if conn, err := ln.Accept(); err == nil {
				conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				io.Copy(io.Discard, conn) // all of it: a close with unread bytes resets
				conn.Close()
			}
		}()
		d := start(t, "c", testConfig("d"))
		ev := d.Events(t.Context())
		_, err = d.Connect(context.Background(), ln.Addr().String())
		if !errors.Is(err, transport.ErrBadHandshake) || !errors.Is(err, io.EOF) {
			t.Fatalf("Connect to a node that closes at once: %v, want ErrBadHandshake and EOF", err)
		}
		e := nextEvent(t, ev, LinkFailed)
		checkFailure(t, "dialer", e, err, "closed by the peer during the handshake")
	})
	t.Run("handshake timeout, dialer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() { // accepts and says nothing
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			conn.Read(make([]byte, 1024))
			var b [1]byte
			conn.Read(b[:])
		}()
		d := start(t, "c", testConfig("d"))
		ev := d.Events(t.Context())
		_, err = d.Connect(context.Background(), ln.Addr().String())
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Connect to a silent node: %v, want a timeout", err)
		}
		e := nextEvent(t, ev, LinkFailed)
		checkFailure(t, "dialer", e, err, "handshake timed out")
	})
	t.Run("handshake timeout, acceptor", func(t *testing.T) {
		a := start(t, "c", testConfig("a"))
		ev := a.Events(t.Context())
		conn, err := net.Dial("tcp", addr(t, a)) // and says nothing
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		e := nextEvent(t, ev, LinkFailed)
		var ne net.Error
		if !errors.As(e.Err, &ne) || !ne.Timeout() {
			t.Errorf("acceptor's event: %v, want a timeout", e.Err)
		}
		checkFailure(t, "acceptor", e, e.Err, "handshake timed out")
		if want := conn.LocalAddr().String(); e.Addrs[0].String() != want {
			t.Errorf("acceptor's event names %v, want the dialer's %s", e.Addrs, want)
		}
	})
}

// A dial retried for the same reason is one event on each end, however
// often it is retried.
func TestLinkFailedOncePerReason(t *testing.T) {
	alog, dlog := &recordLog{}, &recordLog{}
	acfg, dcfg := testConfig("a"), testConfig("d")
	acfg.Logger, dcfg.Logger = slog.New(alog), slog.New(dlog)
	a := start(t, "c", acfg)
	aev := a.Events(t.Context())
	dcfg.Discovery = []discovery.Discoverer{&discovery.Static{Addrs: []string{addr(t, a)}, Interval: 20 * time.Millisecond}}
	d, err := New("other", dcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	dev := d.Events(t.Context())
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Each end has seen at least three refusals, the first two of them
	// fully handled (each logs before it reports).
	waitFor(t, "three refusals", 10*time.Second, func() bool {
		return alog.count("link refused") >= 3 && dlog.count("link failed") >= 3
	})
	for _, c := range []struct {
		who string
		n   *Node
		ev  <-chan Event
	}{{"acceptor", a, aev}, {"dialer", d, dev}} {
		if got := failuresUntilMark(t, c.n, c.ev); got != 1 {
			t.Errorf("%s: %d LinkFailed events for one reason, want 1", c.who, got)
		}
	}
	if alog.above("link failed") != 1 || dlog.above("link failed") != 1 {
		t.Errorf("want one line above Debug on each end, got\nacceptor:\n%s\ndialer:\n%s", alog, dlog)
	}
}

// failuresUntilMark counts the LinkFailed events ev delivers before a
// mark published now: all those n published so far.
func failuresUntilMark(t *testing.T, n *Node, ev <-chan Event) int {
	t.Helper()
	mark := errors.New("mark")
	n.events.publish(Event{Kind: DiscoveryError, Err: mark})
	count := 0
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-ev:
			switch {
			case e.Kind == DiscoveryError && e.Err == mark:
				return count
			case e.Kind == LinkFailed:
				count++
			}
		case <-timeout:
			t.Fatal("timed out waiting for the mark event")
		}
	}
}

// A dial that fails again after a link through the same address was made
// is reported again.
func TestLinkFailedAgainAfterLink(t *testing.T) {
	a := start(t, "c", testConfig("a"))
	d := start(t, "c", testConfig("d"))
	ap := netip.MustParseAddrPort(addr(t, a))
	d.linkFailed(ap, true, true, "a", transport.ErrWrongCluster)
	linkPair(t, d, a)
	ev := d.Events(t.Context())
	d.linkFailed(ap, true, true, "a", transport.ErrWrongCluster)
	checkFailure(t, "dialer", nextEvent(t, ev, LinkFailed), transport.ErrWrongCluster, "wrong cluster")
}

// recordLog is a slog.Handler that keeps every record.
type recordLog struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordLog) WithGroup(string) slog.Handler            { return h }
func (h *recordLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}

// count counts the records whose message starts with prefix; above
// counts only those above Debug.
func (h *recordLog) count(prefix string) int { return h.countLevel(prefix, slog.LevelDebug) }
func (h *recordLog) above(prefix string) int { return h.countLevel(prefix, slog.LevelInfo) }

func (h *recordLog) countLevel(prefix string, min slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if strings.HasPrefix(r.Message, prefix) && r.Level >= min {
			n++
		}
	}
	return n
}

func (h *recordLog) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, r := range h.records {
		b.WriteString(r.Level.String() + " " + r.Message + "\n")
	}
	return b.String()
}

// A caller that names another id at each try (each refused: here, the
// node is at its peer limit) is reported for a few ids apart, then as one
// caller: it cannot make a line, and an event, of every try. (With a
// secret, a caller without it is refused before any id it claims counts.)
func TestLinkFailedBoundedPerCaller(t *testing.T) {
	acfg := testConfig("a")
	acfg.MaxPeers = 1
	a := start(t, "c", acfg)
	linkPair(t, a, start(t, "c", testConfig("b")))
	ev := a.Events(t.Context())
	for i := range 3 * maxIDsPerCaller {
		h := transport.Hello{Cluster: "c", ID: fmt.Sprintf("caller-%d", i), Incarnation: int64(i + 1)}
		l, err := transport.Dial(context.Background(), addr(t, a), h, transport.Config{HandshakeTimeout: time.Second}, nil)
		if err == nil {
			l.Close()
			t.Fatalf("dial %d: linked past the peer limit", i)
		}
	}
	// The acceptor counts each refusal, then reports it.
	waitFor(t, "every refusal counted", 5*time.Second, func() bool { return a.Stats().HandshakesRefused.Other >= 3*maxIDsPerCaller })
	if got := failuresUntilMark(t, a, ev); got > maxIDsPerCaller+1 || got < maxIDsPerCaller {
		t.Errorf("%d LinkFailed events for %d tries from one address, want %d", got, 3*maxIDsPerCaller, maxIDsPerCaller+1)
	}
}
