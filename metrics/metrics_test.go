package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/tallship-go/tallship/internal/testutil/natstest"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/metrics"
)

// startNode starts a node on loopback without discovery.
func startNode(t *testing.T, id, secret string) *mesh.Node {
	t.Helper()
	return startNodeWith(t, id, func(cfg *mesh.Config) { cfg.Secret = secret })
}

// startNodeWith starts a node on loopback without discovery, its Config
// as set says.
func startNodeWith(t *testing.T, id string, set func(*mesh.Config)) *mesh.Node {
	t.Helper()
	cfg := mesh.LocalConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Discovery = mesh.NoDiscovery
	cfg.ID = id
	set(&cfg)
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
	eventuallyIs(t, reg, fmt.Sprint(want), func(v float64) bool { return v == want }, name, node, labels...)
}

// eventuallyIs waits until name{node, labels...} in reg is present and
// ok accepts its value (what says what ok wants).
func eventuallyIs(t *testing.T, reg prometheus.Gatherer, what string, ok func(float64) bool, name, node string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, present := value(t, reg, name, node, labels...)
		if present && ok(got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{node=%q %v} = %v (present: %v), want %s", name, node, labels, got, present, what)
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
	for _, name := range []string{"tallship_links_redone_total", "tallship_accepts_failed_total", "tallship_mdns_packets_sent_total", "tallship_mdns_packets_received_total", "tallship_events_dropped_total"} {
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
	if want := 31; n != want { // 24 unlabelled series, 7 refusal reasons; no NATS server
		t.Errorf("%d series, want %d", n, want)
	}
}

// Two nodes of two sites joined through NATS: a scrape of one shows the
// connection (up, to which server, its traffic), the other site's member
// and record, and then an outage; the figures pass promlint with the
// server's info series present.
func TestNATS(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	onNATS := func(site string) func(*mesh.Config) {
		return func(cfg *mesh.Config) {
			cfg.Site = site
			cfg.NATS.URLs = []string{srv.URL()}
		}
	}
	a := startNodeWith(t, "a", onNATS("lab"))
	b := startNodeWith(t, "b", onNATS("office"))
	reg := prometheus.NewRegistry()
	register(t, reg, a)
	if _, err := b.Register(mesh.Service{Role: "db@2.0.0", Port: 5432}); err != nil {
		t.Fatal(err)
	}
	eventually(t, reg, 1, "tallship_remote_members", "a")
	eventually(t, reg, 1, "tallship_registry_remote_records", "a")
	eventually(t, reg, 1, "tallship_registry_records", "a")
	want := `
# HELP tallship_nats_connected 1 while the node is connected to NATS (sites), else 0.
# TYPE tallship_nats_connected gauge
tallship_nats_connected{node="a"} 1
# HELP tallship_nats_server_info The NATS server the node is connected to, by URL (credentials hidden); absent while not connected.
# TYPE tallship_nats_server_info gauge
tallship_nats_server_info{node="a",url="` + srv.URL() + `"} 1
# HELP tallship_nats_outages_total Times NATS went out of reach: the connection lost, no server answering, credentials refused.
# TYPE tallship_nats_outages_total counter
tallship_nats_outages_total{node="a"} 0
# HELP tallship_nats_messages_dropped_total Messages NATS delivered that the node dropped unread, what waited to be read being at its bound.
# TYPE tallship_nats_messages_dropped_total counter
tallship_nats_messages_dropped_total{node="a"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tallship_nats_connected", "tallship_nats_server_info", "tallship_nats_outages_total", "tallship_nats_messages_dropped_total"); err != nil {
		t.Error(err)
	}
	some := func(v float64) bool { return v > 0 }
	for _, name := range []string{"tallship_nats_messages_sent_total", "tallship_nats_bytes_sent_total",
		"tallship_nats_messages_received_total", "tallship_nats_bytes_received_total"} {
		eventuallyIs(t, reg, "some", some, name, "a")
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}

	srv.Stop()
	eventually(t, reg, 0, "tallship_nats_connected", "a")
	eventually(t, reg, 1, "tallship_nats_outages_total", "a")
	if v, ok := value(t, reg, "tallship_nats_server_info", "a", "url", srv.URL()); ok {
		t.Errorf("tallship_nats_server_info = %v while not connected, want absent", v)
	}
	eventuallyIs(t, reg, "some", some, "tallship_nats_outage_seconds_total", "a")
	srv.Restart()
	eventually(t, reg, 1, "tallship_nats_connected", "a")
	eventuallyIs(t, reg, "some", some, "tallship_nats_reconnects_total", "a")
}
