package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
	"github.com/tallship-go/tallship/internal/testutil/natstest"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/testutil/pki"
	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/sites"
)

// site starts a LAN of n nodes of site, linked to each other over
// loopback (Connect, peer exchange) and joined to NATS at urls; ids are
// site-0, site-1… It waits until the LAN is a full mesh.
func site(t *testing.T, cluster, site string, n int, urls []string, opts ...func(*Config)) []*Node {
	t.Helper()
	var nodes []*Node
	for i := range n {
		cfg := testConfig(fmt.Sprintf("%s-%d", site, i))
		cfg.Site = site
		cfg.NATS.URLs = urls
		for _, o := range opts {
			o(&cfg)
		}
		nd := start(t, cluster, cfg)
		if i > 0 {
			if _, err := nd.Connect(context.Background(), addr(t, nodes[0])); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, nd)
	}
	waitFor(t, site+" linked", 10*time.Second, func() bool { return settled(nodes...) })
	return nodes
}

// sees reports whether n shows the record id.
func sees(n *Node, id string) bool {
	recs, _ := n.Services("")
	return slices.ContainsFunc(recs, func(r Record) bool { return r.ID == id })
}

// waitSeen waits until every node shows record id (or, seen false, until
// none does).
func waitSeen(t *testing.T, id string, seen bool, d time.Duration, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, fmt.Sprintf("%s sees %s: %v", n.ID(), id, seen), d, func() bool { return sees(n, id) == seen })
	}
}

func remoteIDs(n *Node) []string {
	var ids []string
	for _, p := range n.Remotes() {
		if !p.Remote {
			return []string{"not marked remote: " + p.ID}
		}
		ids = append(ids, p.Site+"/"+p.ID)
	}
	return ids
}

// TestSitesRegistry: three sites, each a LAN of nodes, share one
// registry through one NATS server: a record registered in any site
// shows in every other with its site, in Services, Lookup and Watch
// (each event once), and DialService reaches it; members of other
// sites show as remote.
func TestSitesRegistry(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 3, urls)
	b := site(t, "c", "b", 2, urls)
	c := site(t, "c", "c", 1, urls)
	all := slices.Concat(a, b, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch, err := b[1].Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}

	ln, err := a[2].ListenService(ctx, Service{Role: "web@1.2.0", Host: "127.0.0.1"}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(conn, "hello from a")
			conn.Close()
		}
	}()
	rec := ln.Record()
	rb, err := b[0].Register(Service{Role: "db@3.0.0", Port: 5432})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c[0].Register(Service{Role: "cache@1.0.0", Port: 6379})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{rec.ID, rb.ID, rc.ID} {
		waitSeen(t, id, true, 10*time.Second, all...)
	}
	found, err := b[1].Lookup(ctx, "web@^1.2")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Site != "a" || found[0].Owner != "a-2" {
		t.Fatalf("b-1 Lookup(web@^1.2) = %+v", found)
	}
	if recs, _ := a[0].Services("db"); len(recs) != 1 || recs[0].Site != "b" {
		t.Fatalf("a-0 Services(db) = %+v", recs)
	}
	if recs, _ := a[0].Services("web"); len(recs) != 1 || recs[0].Site != "a" {
		t.Fatalf("a-0 sees its own site's record as %+v", recs)
	}
	// DialService across sites.
	conn, err := c[0].DialService(ctx, "web@1")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(conn)
	conn.Close()
	if string(got) != "hello from a" {
		t.Fatalf("dialed across sites, read %q", got)
	}
	// Members of other sites, marked remote with their site.
	want := []string{"a/a-0", "a/a-1", "a/a-2", "c/c-0"}
	waitFor(t, "b-1 lists the other sites' members", 10*time.Second, func() bool { return slices.Equal(remoteIDs(b[1]), want) })
	if p := b[1].Peers(); len(p) != 1 || p[0].ID != "b-0" || p[0].Site != "b" || p[0].Remote {
		t.Fatalf("b-1 Peers = %+v", p)
	}
	if b[1].Site() != "b" || !b[1].NATSConnected() {
		t.Fatalf("b-1: site %q, connected %v", b[1].Site(), b[1].NATSConnected())
	}

	// Free in a: b-1's watch sees the register and the free, once each.
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	waitSeen(t, rec.ID, false, 10*time.Second, all...)
	var events []string
	for len(events) < 2 {
		select {
		case ev := <-watch:
			events = append(events, ev.Kind.String()+" "+ev.Record.ID)
		case <-ctx.Done():
			t.Fatalf("watch: %v", events)
		}
	}
	if want := []string{"registered " + rec.ID, "freed " + rec.ID}; !slices.Equal(events, want) {
		t.Fatalf("watch: %v, want %v", events, want)
	}
	// A marker from a, seen by b-1 after everything before it: no
	// duplicate came in between.
	mark, err := a[0].Register(Service{Role: "web@9.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-watch:
		if ev.Record.ID != mark.ID || ev.Kind != registry.Registered {
			t.Fatalf("after the free, watch saw %v %s", ev.Kind, ev.Record.ID)
		}
	case <-ctx.Done():
		t.Fatal("no marker")
	}
}

// TestSitesLeaveAndDeath: a node closed in site a is gone from site b at
// once; one whose NATS connection goes silent without a goodbye (as a
// node killed, or cut off) is gone within its lifetime, while its own
// LAN still shows it.
func TestSitesLeaveAndDeath(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Second, 5*time.Second }
	a := site(t, "c", "a", 2, []string{srv.URL()}, slow)
	b := site(t, "c", "b", 1, []string{srv.URL()})
	// a-2 reaches NATS through a proxy that can go silent.
	p := newProxy(t, strings.TrimPrefix(srv.URL(), "nats://"))
	cfg := testConfig("a-2")
	cfg.Site = "a"
	cfg.NATS.URLs = []string{"nats://" + p.ln.Addr().String()}
	cfg.Heartbeat, cfg.Lifetime = 100*time.Millisecond, 600*time.Millisecond
	a2 := start(t, "c", cfg)
	if _, err := a2.Connect(context.Background(), addr(t, a[0])); err != nil {
		t.Fatal(err)
	}
	a = append(a, a2)
	waitFor(t, "a linked", 10*time.Second, func() bool { return settled(a...) })

	r0, _ := a[0].Register(Service{Role: "web@1.0.0", Port: 1})
	r2, _ := a2.Register(Service{Role: "web@1.0.0", Port: 2})
	waitSeen(t, r0.ID, true, 10*time.Second, b...)
	waitSeen(t, r2.ID, true, 10*time.Second, b...)

	// a-0 closes: gone from b at once, well within its 5 s lifetime.
	at := time.Now()
	a[0].Close()
	waitSeen(t, r0.ID, false, 2*time.Second, b...)
	t.Logf("closed node gone from the other site in %v", time.Since(at))

	// a-2's NATS goes silent: gone from b within its lifetime (600 ms,
	// and a heartbeat to notice), still shown in a.
	p.stall()
	at = time.Now()
	waitSeen(t, r2.ID, false, 5*time.Second, b...)
	d := time.Since(at)
	t.Logf("silent node gone from the other site in %v (lifetime 600 ms)", d)
	if d > 600*time.Millisecond+b[0].cfg.Heartbeat+300*time.Millisecond {
		t.Errorf("gone after %v: beyond its lifetime", d)
	}
	if !sees(a[1], r2.ID) {
		t.Fatal("a-1 lost a-2's record over their link")
	}
	p.resume()
	waitSeen(t, r2.ID, true, 10*time.Second, b...)
}

// TestSitesOutage: a site cut off from NATS keeps its LAN registry
// working; the other sites expire its records, and when NATS returns
// the sites reconverge: what changed meanwhile on either side shows on
// the other.
func TestSitesOutage(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 2, urls)
	b := site(t, "c", "b", 2, urls)
	ra, _ := a[0].Register(Service{Role: "web@1.0.0", Port: 1})
	rb, _ := b[0].Register(Service{Role: "db@1.0.0", Port: 2})
	waitSeen(t, ra.ID, true, 10*time.Second, b...)
	waitSeen(t, rb.ID, true, 10*time.Second, a...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := a[0].Events(ctx)
	srv.Stop()
	if ev := nextEvent(t, events, NATSDown); ev.Err == nil || !strings.Contains(ev.Err.Error(), "NATS") {
		t.Fatalf("NATSDown: %v", ev.Err)
	}
	waitSeen(t, rb.ID, false, 10*time.Second, a...) // expired: b is out of reach
	waitSeen(t, ra.ID, false, 10*time.Second, b...)
	// Each LAN works alone.
	ra2, _ := a[1].Register(Service{Role: "web@1.0.1", Port: 3})
	waitSeen(t, ra2.ID, true, 5*time.Second, a...)
	if err := b[0].Free(rb.ID); err != nil {
		t.Fatal(err)
	}
	rb2, _ := b[1].Register(Service{Role: "db@1.0.1", Port: 4})
	waitSeen(t, rb2.ID, true, 5*time.Second, b...)

	srv.Restart()
	nextEvent(t, events, NATSUp)
	waitSeen(t, ra.ID, true, 10*time.Second, b...)
	waitSeen(t, ra2.ID, true, 10*time.Second, b...)
	waitSeen(t, rb2.ID, true, 10*time.Second, a...)
	waitSeen(t, rb.ID, false, 10*time.Second, a...)
}

// TestSitesIsolation: nodes of another cluster, or of the same cluster
// with another secret, on the same NATS, see nothing of the cluster.
func TestSitesIsolation(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	secret := func(s string) func(*Config) { return func(c *Config) { c.Secret = s } }
	a := site(t, "c", "a", 1, urls, secret("one"))
	b := site(t, "c", "b", 1, urls, secret("one"))
	other := site(t, "c", "x", 1, urls, secret("two"))
	plain := site(t, "c", "y", 1, urls)
	elsewhere := site(t, "d", "z", 1, urls, secret("one"))
	ra, _ := a[0].Register(Service{Role: "web@1.0.0", Port: 1})
	for _, n := range []*Node{other[0], plain[0], elsewhere[0]} {
		rn, _ := n.Register(Service{Role: "web@1.0.0", Port: 9})
		waitSeen(t, ra.ID, true, 10*time.Second, b...)
		// A marker after: once b sees it, anything a had was sent long
		// before; the outsiders have seen nothing.
		mark, _ := a[0].Register(Service{Role: "mark@1.0.0"})
		waitSeen(t, mark.ID, true, 10*time.Second, b...)
		if sees(n, ra.ID) || sees(b[0], rn.ID) || len(n.Remotes()) != 0 {
			t.Fatalf("%s (cluster %s, secret %q) and cluster c see each other", n.ID(), n.Cluster(), n.cfg.Secret)
		}
	}
	if got := remoteIDs(b[0]); !slices.Equal(got, []string{"a/a-0"}) {
		t.Fatalf("b-0 Remotes = %v", got)
	}
}

// TestSitesNATSCluster: with a NATS cluster of three servers, killing the
// server a site is connected to changes nothing visible elsewhere: its
// nodes fail over before their records expire.
func TestSitesNATSCluster(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	servers := natstest.Cluster(t, 3, natstest.Options{})
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.URL())
	}
	longer := func(c *Config) { c.Lifetime = 2 * time.Second }
	a := site(t, "c", "a", 2, urls[:1], longer) // on s0, learning the others from it
	b := site(t, "c", "b", 2, urls[1:2], longer)
	ra, _ := a[0].Register(Service{Role: "web@1.0.0", Port: 1})
	rb, _ := b[0].Register(Service{Role: "db@1.0.0", Port: 2})
	waitSeen(t, ra.ID, true, 10*time.Second, b...)
	waitSeen(t, rb.ID, true, 10*time.Second, a...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wb, _ := b[1].Watch(ctx, "web") // a's
	wa, _ := a[1].Watch(ctx, "db")  // b's
	drainN(t, wb, 1)
	drainN(t, wa, 1)

	for _, n := range a {
		if u := n.bus.ConnectedURL(); u != servers[0].URL() {
			t.Fatalf("%s on %q, not on s0", n.ID(), u)
		}
	}
	servers[0].Stop()
	for _, n := range a {
		waitFor(t, n.ID()+" on another server", 10*time.Second, func() bool {
			u := n.bus.ConnectedURL()
			return u != "" && u != servers[0].URL()
		})
	}
	// Changes after the failover cross as before.
	ra2, _ := a[0].Register(Service{Role: "web@2.0.0", Port: 3})
	rb2, _ := b[0].Register(Service{Role: "db@2.0.0", Port: 4})
	waitSeen(t, ra2.ID, true, 10*time.Second, b...)
	waitSeen(t, rb2.ID, true, 10*time.Second, a...)
	// And nothing else happened: each watch saw only the new record.
	for _, w := range []struct {
		ch <-chan ServiceEvent
		id string
	}{{wb, ra2.ID}, {wa, rb2.ID}} {
		ev := <-w.ch
		if ev.Kind != registry.Registered || ev.Record.ID != w.id {
			t.Fatalf("after the failover a watch saw %v %s", ev.Kind, ev.Record.ID)
		}
	}
}

// drainN reads n events from w.
func drainN(t *testing.T, w <-chan ServiceEvent, n int) {
	t.Helper()
	for range n {
		select {
		case <-w:
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
	}
}

// TestSitesStartErrors: a NATS URL that does not parse, or credentials
// the server refuses, fail Join with an error that says so; a server
// that cannot be reached does not: the LAN works without it.
func TestSitesStartErrors(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	cfg := testConfig("x")
	cfg.NATS.URLs = []string{"nats://[::1"}
	if _, err := cfg.Join(context.Background(), "c"); !errors.Is(err, sites.ErrConfig) {
		t.Fatalf("bad URL: %v", err)
	}
	srv := natstest.Start(t, natstest.Options{Token: "t0ken"})
	cfg.NATS.URLs = []string{srv.URL()}
	cfg.NATS.Token = "wrong"
	if _, err := cfg.Join(context.Background(), "c"); !errors.Is(err, sites.ErrRefused) {
		t.Fatalf("wrong token: %v", err)
	}
	cfg.Site = "not a site"
	if _, err := cfg.Join(context.Background(), "c"); !errors.Is(err, registry.ErrConfig) {
		t.Fatalf("bad site: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "nats://" + ln.Addr().String()
	ln.Close()
	cfg = testConfig("y")
	cfg.NATS.URLs = []string{nowhere}
	n := start(t, "c", cfg)
	if n.Site() != DefaultSite || n.NATSConnected() {
		t.Fatalf("site %q, connected %v", n.Site(), n.NATSConnected())
	}
	if _, err := n.Register(Service{Role: "web@1.0.0"}); err != nil {
		t.Fatal(err)
	}
}

// TestSitesSyncOnConnect: a node that joins NATS has the records of the
// other sites at once (it asks for them), not at their owners' next
// heartbeat: 1000 records in each of two sites, on a node of a third.
func TestSitesSyncOnConnect(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Minute, 5*time.Minute } // no heartbeat helps
	a := site(t, "c", "a", 3, urls, slow)
	b := site(t, "c", "b", 3, urls, slow)
	for _, s := range [][]*Node{a, b} {
		for i := range 1000 {
			if _, err := s[i%3].Register(Service{Role: "bulk@1.0.0", Port: 1 + i}); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func(n *Node) int { r, _ := n.Services("bulk"); return len(r) }
	for _, n := range slices.Concat(a, b) {
		waitFor(t, n.ID()+" has all 2000", 20*time.Second, func() bool { return count(n) == 2000 })
	}
	for run := range 3 {
		cfg := testConfig(fmt.Sprintf("c-%d", run))
		cfg.Site = "c"
		cfg.NATS.URLs = urls
		slow(&cfg)
		began := time.Now()
		n := start(t, "c", cfg)
		waitFor(t, "the new node has all 2000", 10*time.Second, func() bool { return count(n) == 2000 })
		t.Logf("run %d: 2000 records of 2 sites on a new node %v after Join began", run, time.Since(began))
		n.Close()
	}
}

// TestSitesLeaveRightAway: a node that leaves the moment the other site
// has its records, while that site's answers to its arrival are still
// coming in, is gone from that site at once, not at its records' expiry
// (5 s): every time, by Close or by Shutdown.
func TestSitesLeaveRightAway(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	def := func(c *Config) {
		*c = Config{ID: c.ID, Listen: "127.0.0.1:0", Discovery: NoDiscovery, Site: c.Site, NATS: c.NATS, Logger: c.Logger}
	}
	b := site(t, "c", "b", 3, urls, def)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var watches []<-chan ServiceEvent
	for _, n := range b {
		w, err := n.Watch(ctx, "leaver")
		if err != nil {
			t.Fatal(err)
		}
		watches = append(watches, w)
	}
	await := func(kind registry.EventKind, id string) {
		t.Helper()
		for _, w := range watches {
			for ev := range w {
				if ev.Kind == kind && ev.Record.ID == id {
					break
				}
			}
		}
	}
	for run := range 20 {
		cfg := Config{Listen: "127.0.0.1:0", Discovery: NoDiscovery, Site: "a", NATS: NATSConfig{URLs: urls}}
		n, err := cfg.Join(context.Background(), "c")
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := n.Register(Service{Role: "leaver@1.0.0"})
		await(registry.Registered, rec.ID)
		began := time.Now()
		if run%2 == 0 {
			n.Close()
		} else {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			n.Shutdown(sctx)
			scancel()
		}
		await(registry.Freed, rec.ID)
		if d := time.Since(began); d > time.Second {
			t.Errorf("run %d: gone after %v, not at once (lifetime 5 s)", run, d)
		}
	}
}

// TestSitesTLS: with TLS, owners sign what they publish over NATS and
// every node checks it against its roots, as over links: two sites of
// nodes with certificates of one CA share their records.
func TestSitesTLS(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	ca := pki.New(t)
	withCert := func(c *Config) { c.TLS = ca.Config(t, c.ID) }
	a := site(t, "c", "a", 2, []string{srv.URL()}, withCert)
	b := site(t, "c", "b", 1, []string{srv.URL()}, withCert)
	ra, _ := a[1].Register(Service{Role: "web@1.0.0", Port: 1})
	rb, _ := b[0].Register(Service{Role: "db@1.0.0", Port: 2})
	waitSeen(t, ra.ID, true, 10*time.Second, b...)
	waitSeen(t, rb.ID, true, 10*time.Second, a...)
	// A node whose certificate is of another CA is trusted by nobody:
	// nothing it publishes shows.
	other := pki.New(t)
	x := site(t, "c", "x", 1, []string{srv.URL()}, func(c *Config) { c.TLS = other.Config(t, c.ID) })
	rx, _ := x[0].Register(Service{Role: "web@6.6.6", Port: 3})
	mark, _ := b[0].Register(Service{Role: "mark@1.0.0"})
	waitSeen(t, mark.ID, true, 10*time.Second, a...)
	for _, n := range slices.Concat(a, b) {
		if sees(n, rx.ID) {
			t.Fatalf("%s shows the record of a node of another CA", n.ID())
		}
	}
	a[1].Close()
	waitSeen(t, ra.ID, false, 5*time.Second, b...)
}

// TestSitesLinkedByHand: a node of another site linked by hand (Connect)
// is a peer with its own site, and its record shows once, with that site.
func TestSitesLinkedByHand(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	urls := []string{srv.URL()}
	a := site(t, "c", "a", 1, urls)
	x := site(t, "c", "x", 1, urls)
	rx, err := x[0].Register(Service{Role: "db@1.0.0", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	waitSeen(t, rx.ID, true, 10*time.Second, a...)
	if _, err := x[0].Connect(context.Background(), addr(t, a[0])); err != nil {
		t.Fatal(err)
	}
	siteOf := func(n *Node, id string) string {
		for _, p := range n.Peers() {
			if p.ID == id {
				return p.Site
			}
		}
		return ""
	}
	waitFor(t, "linked", 10*time.Second, func() bool { return siteOf(a[0], "x-0") != "" && siteOf(x[0], "a-0") != "" })
	if s := siteOf(a[0], "x-0"); s != "x" {
		t.Errorf("a-0 lists x-0 as of site %q", s)
	}
	if s := siteOf(x[0], "a-0"); s != "a" {
		t.Errorf("x-0 lists a-0 as of site %q", s)
	}
	recs, _ := a[0].Services("db")
	if len(recs) != 1 || recs[0].Site != "x" {
		t.Errorf("a-0 shows %+v", recs)
	}
}

// TestSitesTLSSealed: with TLS identities, which sign but do not
// encrypt, NATSConfig.Secret seals what crosses NATS: a NATS user who
// reads every subject reads no record, and the sites still see each
// other's.
func TestSitesTLSSealed(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	tap := srv.Tap(t)
	ca := pki.New(t)
	sealed := func(c *Config) {
		c.TLS = ca.Config(t, c.ID)
		c.NATS.Secret = "a-random-secret-of-the-cluster"
	}
	a := site(t, "clustername", "a", 1, []string{srv.URL()}, sealed)
	b := site(t, "clustername", "b", 1, []string{srv.URL()}, sealed)
	ra, _ := a[0].Register(Service{Role: "webservice@1.0.0", Port: 1})
	waitSeen(t, ra.ID, true, 10*time.Second, b...)
	seen := tap()
	if len(seen) == 0 {
		t.Fatal("the tap saw nothing")
	}
	for _, m := range seen {
		if strings.Contains(m, "webservice") || strings.Contains(m, "clustername") || strings.Contains(m, ra.ID) {
			t.Fatalf("a NATS user read %q", m)
		}
	}
}

// TestSitesIDConflict: a node of another site on NATS with this node's
// id is an IDConflict event, wrapping ErrIDConflict (on the first node:
// the second may hear the first before its Events subscribes).
func TestSitesIDConflict(t *testing.T) {
	netns.Require(t)
	leakcheck.Goroutines(t)
	srv := natstest.Start(t, natstest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var events []<-chan Event
	for _, s := range []string{"a", "b"} {
		cfg := testConfig("gw")
		cfg.Site = s
		cfg.NATS.URLs = []string{srv.URL()}
		n := start(t, "c", cfg)
		events = append(events, n.Events(ctx))
		n.Register(Service{Role: "web@1.0.0", Port: 1}) // something to publish
	}
	for i, ch := range events[:1] {
		for {
			ev, ok := <-ch
			if !ok {
				t.Fatalf("node %d: no IDConflict event", i)
			}
			if ev.Kind == IDConflict {
				if !errors.Is(ev.Err, ErrIDConflict) || !strings.Contains(ev.Err.Error(), "NATS") {
					t.Fatalf("node %d: %v", i, ev.Err)
				}
				break
			}
		}
	}
}
