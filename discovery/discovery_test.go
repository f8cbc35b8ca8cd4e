package discovery

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

func TestMain(m *testing.M) { netns.Main(m) }

// recorder collects the events of one discoverer. Its report never blocks.
type recorder struct {
	mu     sync.Mutex
	events []Event
	at     []time.Time
	notify chan struct{} // closed and replaced on every event
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{})} }

func (r *recorder) report(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	r.at = append(r.at, time.Now())
	close(r.notify)
	r.notify = make(chan struct{})
}

// snapshot returns the events so far.
func (r *recorder) snapshot() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor waits until cond holds for the events so far, or fails t after
// timeout. It returns when cond first held.
func (r *recorder) waitFor(t testing.TB, timeout time.Duration, what string, cond func([]Event) bool) time.Time {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for i := range r.events {
			if cond(r.events[:i+1]) {
				at := r.at[i]
				r.mu.Unlock()
				return at
			}
		}
		ch := r.notify
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("after %v, still waiting for %s; events: %v", timeout, what, r.snapshot())
			return time.Time{}
		}
	}
}

// peers replays events into the peers known at the end of them.
func peers(events []Event) map[string]Peer {
	out := map[string]Peer{}
	for _, ev := range events {
		switch ev.Kind {
		case Found:
			out[ev.Peer.ID] = ev.Peer
		case Lost:
			delete(out, ev.Peer.ID)
		}
	}
	return out
}

func knows(ids ...string) func([]Event) bool {
	return func(events []Event) bool {
		p := peers(events)
		for _, id := range ids {
			if _, ok := p[id]; !ok {
				return false
			}
		}
		return true
	}
}

func lost(id string) func([]Event) bool {
	return func(events []Event) bool {
		ev := events[len(events)-1]
		return ev.Kind == Lost && ev.Peer.ID == id
	}
}

// node is one running MDNS discoverer.
type node struct {
	self    Self
	rec     *recorder
	started time.Time
	cancel  context.CancelFunc
	done    chan error
}

// startNode runs d for self until the test ends (or stop is called). A
// zero self.Port gets an arbitrary one.
func startNode(t testing.TB, d Discoverer, self Self) *node {
	t.Helper()
	if self.Port == 0 && len(self.Addrs) == 0 {
		self.Port = 40000 + int(time.Now().UnixNano()%20000)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{self: self, rec: newRecorder(), cancel: cancel, done: make(chan error, 1), started: time.Now()}
	go func() { n.done <- d.Run(ctx, self, n.rec.report) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop cancels the node and waits for Run to return nil.
func (n *node) stop(t testing.TB) {
	t.Helper()
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok && err != nil {
			t.Errorf("Run(%q) = %v, want nil", n.self.ID, err)
		}
		if ok {
			close(n.done)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Run(%q) did not return 5 s after cancel", n.self.ID)
	}
}

// probe listens passively on the mDNS group, on loopback.
type probe struct {
	c    *net.UDPConn
	msgs chan probed
}

type probed struct {
	msg *dns.Msg
	src netip.AddrPort
	at  time.Time
}

func newProbe(t testing.TB) *probe {
	t.Helper()
	c, err := net.ListenMulticastUDP("udp4", netns.Loopback(t), group4)
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{c: c, msgs: make(chan probed, 4096)}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, maxReadSize)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) != nil {
				continue
			}
			select {
			case p.msgs <- probed{m, src, time.Now()}:
			default:
			}
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return p
}

// await returns the first packet, from now on, for which match holds.
func (p *probe) await(t testing.TB, timeout time.Duration, what string, match func(probed) bool) probed {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-p.msgs:
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("probe: no %s within %v", what, timeout)
			return probed{}
		}
	}
}

// announces matches an announcement of id in cluster.
func announces(cluster, id string) func(probed) bool {
	return func(p probed) bool {
		if !p.msg.Response {
			return false
		}
		ss, _ := parseResponse(p.msg, serviceName(cluster))
		for _, s := range ss {
			if s.txt.id == id && !s.goodbye {
				return true
			}
		}
		return false
	}
}

// awaitRunning waits until the probe hears n's first announcement: by then
// its responder and listeners are up.
func (p *probe) awaitRunning(t testing.TB, n *node) {
	t.Helper()
	p.await(t, 5*time.Second, "announcement of "+n.self.ID, announces(n.self.Cluster, n.self.ID))
}

// inject multicasts raw bytes to the mDNS group on loopback.
func inject(t testing.TB, b []byte) {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, group4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// fakeAnnouncement packs the announcement of a node that does not run,
// with 127.0.0.1:port.
func fakeAnnouncement(t testing.TB, cluster, id string, port uint16, ttl uint32) []byte {
	t.Helper()
	rs, err := newRecordSet(newNames(cluster, id), encodeTXT(cluster, id), port,
		[]netip.Addr{netip.MustParseAddr("127.0.0.1")}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rs.announcement().Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sync injects a marker node and waits until rec reports it: every packet
// multicast before has then been handled by the node behind rec.
func syncMarker(t testing.TB, rec *recorder, cluster, marker string) {
	t.Helper()
	inject(t, fakeAnnouncement(t, cluster, marker, 9, 120))
	rec.waitFor(t, 5*time.Second, "marker "+marker, knows(marker))
}
