package main

// The sites group (issue 21): the registry and messages across sites
// through NATS. A nats-server runs in this process on 127.0.0.1; each
// site is a LAN of nodes on loopback linked with Connect (no mDNS: the
// sites must not find each other), with the default timers, joined to
// it. The raw reference of the latency and message rows is nats.go
// itself: one publish to one subscriber on the same server, in the same
// run.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

// sitesRows runs the group and returns its rows.
func sitesRows(runs int, quick bool) []*row {
	visible := &row{name: "register in site A → visible on every node of site B (3 + 3 nodes)", unit: "ms", target: "p99 ≤ 20 ms",
		note:  "raw: nats.go publish → subscriber",
		check: func(r *row) bool { return r.tail() <= 20 }}
	leave := &row{name: "graceful leave in site A → gone from every node of site B", unit: "ms"}
	syncRow := &row{name: "1000 records in each of 2 sites → all on a node of a 3rd site, from Start", unit: "ms", target: "≤ 1 s",
		check: func(r *row) bool { return percentile(r.samples, 100) <= 1000 }}
	pub := &row{name: "NATS messages published /s per node, idle (2 sites of 3)", unit: "/s", note: "Beats, every Heartbeat (1 s)"}
	recv := &row{name: "NATS messages delivered /s per node, idle (2 sites of 3)", unit: "/s"}
	bytes := &row{name: "NATS bytes delivered /s per node, idle (2 sites of 3)", unit: "B/s"}
	msgs := &row{name: "64 B messages site A → site B (Send → Receive)", unit: "/s", higher: true, target: "≥ 50% of nats.go",
		note:  "raw: nats.go, one publish per message → a subscriber",
		check: func(r *row) bool { return r.ratio() >= 0.5 }}
	rows := []*row{visible, leave, syncRow, msgs, pub, recv, bytes}
	srv, err := startNATS()
	if err != nil {
		for _, r := range rows {
			r.err = err
		}
		return rows
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	url := srv.ClientURL()
	cluster := "sites-" + strconv.FormatInt(time.Now().UnixNano(), 36)

	a, err := benchSite(cluster, "a", 3, url)
	if err == nil {
		defer closeAll(a)
		var b []*mesh.Node
		if b, err = benchSite(cluster, "b", 3, url); err == nil {
			defer closeAll(b)
			idle := 5 * time.Second
			if quick {
				idle = 2 * time.Second
			}
			measureSitesIdle(pub, recv, bytes, srv, len(a)+len(b), idle)
			measureSitesVisible(visible, a, b, 20*runs)
			measureRawNATS(visible, url, 20*runs)
			count := 200_000
			if quick {
				count = 50_000
			}
			measureSitesMessages(msgs, url, a[0], b[0], runs, count)
			measureSitesLeave(leave, cluster, url, b, runs)
			measureSitesSync(syncRow, cluster, url, a, b, 1000, runs)
		}
	}
	if err != nil {
		for _, r := range rows {
			if len(r.samples) == 0 {
				r.err = err
			}
		}
	}
	return rows
}

// startNATS starts a NATS server on 127.0.0.1 at a free port.
func startNATS() (*server.Server, error) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("nats-server not ready")
	}
	return srv, nil
}

// sitesConfig is a node of site on loopback, linked with Connect, on
// NATS at url, with the default timers.
func sitesConfig(site, url string) mesh.Config {
	return mesh.Config{Listen: "127.0.0.1:0", Discovery: mesh.NoDiscovery, Site: site, NATS: mesh.NATSConfig{URLs: []string{url}}, Logger: quiet}
}

// benchSite starts a site of n nodes, linked in a full mesh and on NATS.
func benchSite(cluster, site string, n int, url string) ([]*mesh.Node, error) {
	var nodes []*mesh.Node
	for i := range n {
		nd, err := sitesConfig(site, url).Join(context.Background(), cluster)
		if err != nil {
			closeAll(nodes)
			return nil, err
		}
		nodes = append(nodes, nd)
		if i > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := nd.Connect(ctx, nodes[0].Addrs()[0].String())
			cancel()
			if err != nil {
				closeAll(nodes)
				return nil, err
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, nd := range nodes {
		for len(nd.Peers()) < n-1 || !nd.NATSConnected() {
			if time.Now().After(deadline) {
				closeAll(nodes)
				return nil, fmt.Errorf("site %s: no full mesh on NATS within 20 s", site)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nodes, nil
}

func closeAll(nodes []*mesh.Node) {
	for _, n := range nodes {
		n.Close()
	}
}

// watchAll returns a Watch of query on each node, until ctx ends.
func watchAll(ctx context.Context, nodes []*mesh.Node, query string) ([]<-chan mesh.ServiceEvent, error) {
	var ws []<-chan mesh.ServiceEvent
	for _, n := range nodes {
		w, err := n.Watch(ctx, query)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// waitKind waits on each watch for an event of kind for record id and
// returns when the last came, or an error after d.
func waitKind(ws []<-chan mesh.ServiceEvent, kind registry.EventKind, id string, d time.Duration) (time.Time, error) {
	var last time.Time
	timeout := time.After(d)
	for _, w := range ws {
		for {
			select {
			case ev := <-w:
				if ev.Kind != kind || ev.Record.ID != id {
					continue
				}
				if ev.Time.After(last) {
					last = ev.Time
				}
			case <-timeout:
				return last, fmt.Errorf("no %v of %s within %v", kind, id, d)
			}
			break
		}
	}
	return last, nil
}

// measureSitesVisible registers a record on a node of a (each in turn)
// and times it until every node of b has it (its Watch event's time),
// n times; each is freed before the next.
func measureSitesVisible(r *row, a, b []*mesh.Node, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws, err := watchAll(ctx, b, "probe")
	if err != nil {
		r.err = err
		return
	}
	for i := range n {
		owner := a[i%len(a)]
		start := time.Now()
		rec, err := owner.Register(mesh.Service{Role: "probe@1.0." + strconv.Itoa(i)})
		if err != nil {
			r.err = err
			return
		}
		last, err := waitKind(ws, registry.Registered, rec.ID, 10*time.Second)
		if err != nil {
			r.failed = append(r.failed, err)
			return
		}
		r.samples = append(r.samples, ms(last.Sub(start)))
		owner.Free(rec.ID)
		if _, err := waitKind(ws, registry.Freed, rec.ID, 10*time.Second); err != nil {
			r.failed = append(r.failed, err)
			return
		}
	}
}

// measureRawNATS times n messages from one nats.go connection to a
// subscriber on another, each sent when the last has arrived: the raw
// reference of the visible row.
func measureRawNATS(r *row, url string, n int) {
	pub, err := nats.Connect(url)
	if err != nil {
		r.err = err
		return
	}
	defer pub.Close()
	sub, err := nats.Connect(url)
	if err != nil {
		r.err = err
		return
	}
	defer sub.Close()
	ch := make(chan *nats.Msg, 1)
	s, err := sub.ChanSubscribe("bench.raw", ch)
	if err != nil {
		r.err = err
		return
	}
	defer s.Unsubscribe()
	sub.Flush()
	payload := make([]byte, 100) // about a Put's size
	for range n {
		start := time.Now()
		pub.Publish("bench.raw", payload)
		pub.Flush()
		select {
		case <-ch:
			r.raw = append(r.raw, ms(time.Since(start)))
		case <-time.After(5 * time.Second):
			r.raw = nil
			return
		}
	}
	// The row's ratio pairs each sample with a raw run: as many of each.
	if len(r.raw) != len(r.samples) {
		r.raw = nil
	}
}

// measureSitesLeave starts a node of site a with a record, closes it
// gracefully and times it until every node of b has freed the record.
func measureSitesLeave(r *row, cluster, url string, b []*mesh.Node, runs int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws, err := watchAll(ctx, b, "leaver")
	if err != nil {
		r.err = err
		return
	}
	for range runs {
		n, err := sitesConfig("a", url).Join(context.Background(), cluster)
		if err != nil {
			r.err = err
			return
		}
		rec, err := n.Register(mesh.Service{Role: "leaver@1.0.0"})
		if err != nil {
			n.Close()
			r.err = err
			return
		}
		if _, err := waitKind(ws, registry.Registered, rec.ID, 10*time.Second); err != nil {
			n.Close()
			r.failed = append(r.failed, err)
			continue
		}
		start := time.Now()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		n.Shutdown(sctx)
		scancel()
		last, err := waitKind(ws, registry.Freed, rec.ID, 10*time.Second)
		if err != nil {
			r.failed = append(r.failed, err)
			continue
		}
		r.samples = append(r.samples, ms(last.Sub(start)))
	}
}

// measureSitesSync gives sites a and b perSite records each (spread over
// their nodes), then, runs times, starts a node of a third site and
// times it from Start until it shows them all.
func measureSitesSync(r *row, cluster, url string, a, b []*mesh.Node, perSite, runs int) {
	for _, site := range [][]*mesh.Node{a, b} {
		for i := range perSite {
			n := site[i%len(site)]
			if _, err := n.Register(mesh.Service{Role: "bulk@1.0.0", Port: 1 + i, Meta: map[string]string{"i": strconv.Itoa(i)}}); err != nil {
				r.err = err
				return
			}
		}
	}
	want := 2 * perSite
	for _, n := range slices.Concat(a, b) { // every node has them all
		deadline := time.Now().Add(30 * time.Second)
		for countRole(n, "bulk") != want {
			if time.Now().After(deadline) {
				r.err = fmt.Errorf("%s has %d of %d records", n.ID(), countRole(n, "bulk"), want)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for range runs {
		start := time.Now()
		n, err := sitesConfig("c", url).Join(context.Background(), cluster)
		if err != nil {
			r.err = err
			return
		}
		// Polled: a Watch of 2000 records at once would overflow its
		// buffer; the figures are milliseconds.
		deadline := start.Add(10 * time.Second)
		got := 0
		for got = countRole(n, "bulk"); got < want && time.Now().Before(deadline); got = countRole(n, "bulk") {
			time.Sleep(200 * time.Microsecond)
		}
		d := time.Since(start)
		n.Close()
		if got < want {
			r.failed = append(r.failed, fmt.Errorf("%d of %d records after 10 s", got, want))
			continue
		}
		r.samples = append(r.samples, ms(d))
	}
}

func countRole(n *mesh.Node, name string) int {
	recs, _ := n.Services(name)
	return len(recs)
}

// measureSitesIdle counts what crosses NATS while nodes idle, per node
// and second, from the server's counters.
func measureSitesIdle(pub, recv, bytes *row, srv *server.Server, nodes int, d time.Duration) {
	time.Sleep(2 * time.Second) // the nodes' start (greetings, syncs) is over
	v0, err := srv.Varz(nil)
	if err != nil {
		pub.err = err
		return
	}
	time.Sleep(d)
	v1, err := srv.Varz(nil)
	if err != nil {
		pub.err = err
		return
	}
	per := float64(nodes) * d.Seconds()
	pub.samples = append(pub.samples, float64(v1.InMsgs-v0.InMsgs)/per)
	recv.samples = append(recv.samples, float64(v1.OutMsgs-v0.OutMsgs)/per)
	bytes.samples = append(bytes.samples, float64(v1.OutBytes-v0.OutBytes)/per)
}

// measureSitesMessages fills r with the rate of count 64-byte messages
// Sent by a (of one site) to b (of another) and taken with Receive,
// runs times, and in the same runs its raw reference: count 64-byte
// messages published with nats.go, one publish each, to a subscriber on
// another connection to the same server. Each is timed from the first
// send to the last message received.
func measureSitesMessages(r *row, url string, a, b *mesh.Node, runs, count int) {
	deadline := time.Now().Add(10 * time.Second)
	for !slices.ContainsFunc(a.Remotes(), func(p mesh.Peer) bool { return p.ID == b.ID() }) {
		if time.Now().After(deadline) {
			r.err = fmt.Errorf("%s does not list %s as a member of another site", a.ID(), b.ID())
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	msg := make([]byte, 64)
	for range runs {
		raw, err := rawNATSMessages(url, count, msg)
		if err != nil {
			r.err = fmt.Errorf("nats.go: %w", err)
			return
		}
		got, err := meshMessages(&pair{a, b}, count, msg) // the link group's measure, across sites
		if err != nil {
			r.err = err
			return
		}
		r.samples = append(r.samples, got)
		r.raw = append(r.raw, raw)
	}
}

// rawNATSMessages times count publishes of msg with nats.go, until a
// subscriber on another connection has received the last.
func rawNATSMessages(url string, count int, msg []byte) (float64, error) {
	pub, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	sub, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	var got atomic.Int64
	done := make(chan struct{})
	s, err := sub.Subscribe("bench.msgs", func(*nats.Msg) {
		if got.Add(1) == int64(count) {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	defer s.Unsubscribe()
	if err := s.SetPendingLimits(-1, -1); err != nil { // no drop: every message counts
		return 0, err
	}
	if err := sub.Flush(); err != nil {
		return 0, err
	}
	start := time.Now()
	for range count {
		if err := pub.Publish("bench.msgs", msg); err != nil {
			return 0, err
		}
	}
	if err := pub.Flush(); err != nil {
		return 0, err
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("%d of %d messages after 60 s", got.Load(), count)
	}
	return float64(count) / time.Since(start).Seconds(), nil
}
