package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/metrics"
)

// startNode starts a node on loopback without discovery.
func startNode(t *testing.T, id, secret string) *mesh.Node {
	t.Helper()
	cfg := mesh.LocalConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Discovery = mesh.NoDiscovery
	cfg.ID = id
	cfg.Secret = secret
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := cfg.Join(ctx, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// register registers n on reg under the label node=id.
func register(t *testing.T, reg prometheus.Registerer, n *mesh.Node) {
	t.Helper()
	if err := metrics.Register(prometheus.WrapRegistererWith(prometheus.Labels{"node": n.ID()}, reg), n); err != nil {
		t.Fatal(err)
	}
}

// value returns the value of the series name{node, labels...} in reg, and
// whether there is one.
func value(t *testing.T, reg prometheus.Gatherer, name, node string, labels ...string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"node": node}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return metricValue(f.GetType(), m), true
		}
	}
	return 0, false
}

func metricValue(typ dto.MetricType, m *dto.Metric) float64 {
	if typ == dto.MetricType_COUNTER {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// eventually waits until name{node, labels...} in reg is want.
func eventually(t *testing.T, reg prometheus.Gatherer, want float64, name, node string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, ok := value(t, reg, name, node, labels...)
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{node=%q %v} = %v (present: %v), want %v", name, node, labels, got, ok, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two linked nodes on one registry: the messages, links, peers, records
// and refused handshakes each did show in what a scrape reads.
func TestRegisterScrape(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := startNode(t, "a", "")
	b := startNode(t, "b", "")
	reg := prometheus.NewRegistry()
	register(t, reg, a)
	register(t, reg, b)

	eventually(t, reg, 0, "tallship_peers", "a")
	eventually(t, reg, 0, "tallship_links_made_total", "b")

	if _, err := b.Connect(ctx, a.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	msgs := []string{"one", "three", "fifteen"} // 15 bytes
	for _, m := range msgs {
		if err := b.Send(ctx, "a", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for range msgs {
		if _, err := a.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Register(mesh.Service{Role: "web@1.0.0", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(ctx, "web"); err != nil {
		t.Fatal(err)
	}

	// The scraped text, as Prometheus reads it.
	want := `
# HELP tallship_messages_sent_total Messages queued by Send, SendMany and Broadcast, counted once per peer.
# TYPE tallship_messages_sent_total counter
tallship_messages_sent_total{node="a"} 0
tallship_messages_sent_total{node="b"} 3
# HELP tallship_message_bytes_sent_total Bytes of the messages queued by Send, SendMany and Broadcast, counted once per peer, without framing.
# TYPE tallship_message_bytes_sent_total counter
tallship_message_bytes_sent_total{node="a"} 0
tallship_message_bytes_sent_total{node="b"} 15
# HELP tallship_messages_received_total Messages delivered to Receive.
# TYPE tallship_messages_received_total counter
tallship_messages_received_total{node="a"} 3
tallship_messages_received_total{node="b"} 0
# HELP tallship_message_bytes_received_total Bytes of the messages delivered to Receive.
# TYPE tallship_message_bytes_received_total counter
tallship_message_bytes_received_total{node="a"} 15
tallship_message_bytes_received_total{node="b"} 0
# HELP tallship_peers Peers the node is linked with, or is linking with again after a lost link.
# TYPE tallship_peers gauge
tallship_peers{node="a"} 1
tallship_peers{node="b"} 1
# HELP tallship_links_made_total Links that passed their handshake and were taken into the mesh.
# TYPE tallship_links_made_total counter
tallship_links_made_total{node="a"} 1
tallship_links_made_total{node="b"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tallship_messages_sent_total", "tallship_message_bytes_sent_total",
		"tallship_messages_received_total", "tallship_message_bytes_received_total",
		"tallship_peers", "tallship_links_made_total"); err != nil {
		t.Error(err)
	}
	eventually(t, reg, 1, "tallship_registry_records", "a")
	eventually(t, reg, 1, "tallship_registry_records", "b")
	// Once a has acknowledged them, nothing is left queued.
	eventually(t, reg, 0, "tallship_queue_bytes", "b")
	for _, name := range []string{"tallship_links_redone_total", "tallship_mdns_packets_sent_total", "tallship_mdns_packets_received_total", "tallship_events_dropped_total"} {
		eventually(t, reg, 0, name, "b")
	}

	// A node with a secret is refused by one without: both count it.
	c := startNode(t, "c", "another secret")
	register(t, reg, c)
	if _, err := c.Connect(ctx, a.Addrs()[0].String()); err == nil {
		t.Fatal("a node with a secret linked with one without")
	}
	eventually(t, reg, 1, "tallship_handshakes_refused_total", "c", "reason", "auth")
	eventually(t, reg, 1, "tallship_handshakes_refused_total", "a", "reason", "auth")
	for _, reason := range []string{"cluster", "version", "duplicate_id", "self", "timeout", "other"} {
		eventually(t, reg, 0, "tallship_handshakes_refused_total", "a", "reason", reason)
	}
	eventually(t, reg, 1, "tallship_peers", "a")
}

// A node queues what a peer has not acknowledged: tallship_queue_bytes
// shows it while the peer is gone and its link is being made again.
func TestQueueBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := startNode(t, "a", "")
	b := startNode(t, "b", "")
	reg := prometheus.NewRegistry()
	register(t, reg, b)
	if _, err := b.Connect(ctx, a.Addrs()[0].String()); err != nil {
		t.Fatal(err)
	}
	// a never reads: what b sends fills a's receive buffer, and then the
	// link's window, and stays queued and unacknowledged on b.
	msg := make([]byte, 64<<10)
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	for sctx.Err() == nil {
		if err := b.Send(sctx, "a", msg); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				break // the queue is full
			}
			t.Fatal(err)
		}
	}
	got, _ := value(t, reg, "tallship_queue_bytes", "b")
	if got < float64(len(msg)) {
		t.Errorf("tallship_queue_bytes = %v with a peer that does not read, want at least %d", got, len(msg))
	}
}

// Register refuses a second node on one registry without a label apart:
// their series would be the same.
func TestRegisterTwiceUnlabelled(t *testing.T) {
	a := startNode(t, "a", "")
	b := startNode(t, "b", "")
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg, a); err != nil {
		t.Fatal(err)
	}
	err := metrics.Register(reg, b)
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Fatalf("second Register without a label: %v, want an AlreadyRegisteredError", err)
	}
}

// The figures follow Prometheus's naming rules (promlint).
func TestLint(t *testing.T) {
	a := startNode(t, "a", "")
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg, a); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	if want := 19; n != want { // 12 unlabelled series, 7 refusal reasons
		t.Errorf("%d series, want %d", n, want)
	}
}
