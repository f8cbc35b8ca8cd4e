package registry

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// memHub is a bus in memory: every node attached hears what the others
// publish, in order, and what is sent to it. It stands in for NATS.
type memHub struct {
	mu    sync.Mutex
	buses map[string]*memBus
	max   int
	// drop, when set, drops a message from one node to another.
	drop func(from, to string, msg []byte) bool
}

func newHub() *memHub { return &memHub{buses: map[string]*memBus{}, max: 1 << 20} }

// memBus is one node's attachment to a memHub.
type memBus struct {
	hub  *memHub
	id   string
	ch   chan []byte
	cut  chan struct{}
	once sync.Once
}

var errCut = errors.New("memBus: cut")

func (b *memBus) deliver(to *memBus, msg []byte) {
	if b.hub.drop != nil && b.hub.drop(b.id, to.id, msg) {
		return
	}
	select {
	case to.ch <- append([]byte(nil), msg...):
	default: // a slow consumer loses messages, as over NATS
	}
}

func (b *memBus) Publish(msg []byte) error {
	b.hub.mu.Lock()
	defer b.hub.mu.Unlock()
	if b.hub.buses[b.id] != b {
		return errCut
	}
	for id, o := range b.hub.buses {
		if id != b.id {
			b.deliver(o, msg)
		}
	}
	return nil
}

func (b *memBus) Send(node string, msg []byte) error {
	b.hub.mu.Lock()
	defer b.hub.mu.Unlock()
	if b.hub.buses[b.id] != b {
		return errCut
	}
	if o := b.hub.buses[node]; o != nil {
		b.deliver(o, msg)
	}
	return nil
}

func (b *memBus) Receive(ctx context.Context) ([]byte, error) {
	select {
	case m := <-b.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.cut:
		return nil, errCut
	}
}

func (b *memBus) MaxMessage() int { return b.hub.max }

// attach runs n's registry on the hub (ServeBus) until the test ends or
// the returned bus is cut.
func (h *memHub) attach(t testing.TB, n *node) *memBus {
	t.Helper()
	b := &memBus{hub: h, id: n.ID(), ch: make(chan []byte, 4096), cut: make(chan struct{})}
	h.mu.Lock()
	h.buses[n.ID()] = b
	h.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- n.ServeBus(context.Background(), b) }()
	t.Cleanup(func() {
		b.detach()
		<-done
	})
	return b
}

// detach takes the bus off the hub without a word, as a cable cut or a
// killed process: nothing more is delivered either way.
func (b *memBus) detach() {
	b.once.Do(func() {
		b.hub.mu.Lock()
		if b.hub.buses[b.id] == b {
			delete(b.hub.buses, b.id)
		}
		b.hub.mu.Unlock()
		close(b.cut)
	})
}

// inject publishes msg to every node on the hub, as a node that is not
// a registry (a hostile one) would.
func (h *memHub) inject(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.buses {
		select {
		case o.ch <- append([]byte(nil), msg...):
		default:
		}
	}
}

// warnLines sends the messages logged at Warn to a channel.
type warnLines chan string

func (w warnLines) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		select {
		case w <- r.Message:
		default:
		}
	}
	return nil
}
func (w warnLines) Enabled(context.Context, slog.Level) bool { return true }
func (w warnLines) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w warnLines) WithGroup(string) slog.Handler            { return w }

// inSite makes a node of site.
func inSite(site string) func(*Config) { return func(c *Config) { c.Site = site } }

// sites runs, for each site named, a LAN of nodes linked in a full mesh
// and on the hub: sites("a", 2, "b", 1) is a-0, a-1 and b-0.
func siteNodes(t testing.TB, h *memHub, site string, n int, opts ...func(*Config)) []*node {
	t.Helper()
	var ns []*node
	for i := range n {
		nd := newNode(t, site+"-"+string(rune('0'+i)), append([]func(*Config){inSite(site)}, opts...)...)
		for _, o := range ns {
			connectSynced(t, nd, o)
		}
		ns = append(ns, nd)
	}
	for _, nd := range ns {
		h.attach(t, nd)
	}
	return ns
}

// recordOf returns the record id as n sees it.
func (n *node) recordOf(t testing.TB, id string) (Record, bool) {
	t.Helper()
	recs, err := n.Services("")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.ID == id {
			return r, true
		}
	}
	return Record{}, false
}

// TestBusRecordsCrossSites: records registered in one site show in the
// others, both ways, with their site, in Services, Lookup and Watch;
// the LAN's own records carry the LAN's site.
func TestBusRecordsCrossSites(t *testing.T) {
	h := newHub()
	a := siteNodes(t, h, "a", 2)
	b := siteNodes(t, h, "b", 2)
	c := siteNodes(t, h, "c", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := b[1].Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}

	ra := a[0].register(t, "web@1.0.0", 80, map[string]string{"k": "v"})
	rb := b[0].register(t, "db@2.0.0", 5432, nil)
	rc := c[0].register(t, "web@1.1.0", 81, nil)

	found, err := b[1].Lookup(ctx, "web@1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].ID != ra.ID || found[0].Site != "a" || found[0].Meta["k"] != "v" || found[0].Owner != a[0].ID() {
		t.Fatalf("b-1 Lookup(web@1.0.0) = %+v, want a-0's record of site a", found)
	}
	for _, n := range append(append(slices.Clone(a), b...), c...) {
		for _, want := range []Record{ra, rb, rc} {
			waitFor(t, n.ID()+" sees "+want.ID, func() bool { return n.has(t, want.ID) })
		}
	}
	if r, _ := a[1].recordOf(t, ra.ID); r.Site != "a" {
		t.Errorf("a-1 sees its own site's record with site %q, want a", r.Site)
	}
	if r, _ := a[1].recordOf(t, rb.ID); r.Site != "b" {
		t.Errorf("a-1 sees b's record with site %q, want b", r.Site)
	}
	if r, _ := c[0].recordOf(t, rc.ID); r.Site != "c" {
		t.Errorf("c-0 sees its own record with site %q", r.Site)
	}
	// Watch on b-1 sees both web records once each.
	got := map[string]int{}
	for len(got) < 2 {
		select {
		case ev := <-watch:
			if ev.Kind != Registered {
				t.Fatalf("unexpected %v", ev.Kind)
			}
			got[ev.Record.ID]++
		case <-ctx.Done():
			t.Fatalf("watch saw %v", got)
		}
	}
	if got[ra.ID] != 1 || got[rc.ID] != 1 {
		t.Fatalf("watch events %v", got)
	}
	// Remotes lists the nodes of other sites, with their site (a-1, with
	// no records, within its answer to b-1's Sync).
	var remotes []string
	want := []string{"a/a-0", "a/a-1", "c/c-0"}
	waitFor(t, "b-1 lists the remotes", func() bool {
		remotes = remotes[:0]
		for _, ro := range b[1].Remotes() {
			remotes = append(remotes, ro.Site+"/"+ro.ID)
		}
		return slices.Equal(remotes, want)
	})
	// Owner-only changes hold across sites.
	if err := b[1].Free(ra.ID); !errors.Is(err, ErrNotOwner) {
		t.Errorf("b-1 frees a-0's record: %v, want ErrNotOwner", err)
	}
	if _, err := b[1].Update(ra.ID, nil); !errors.Is(err, ErrNotOwner) {
		t.Errorf("b-1 updates a-0's record: %v, want ErrNotOwner", err)
	}
}

// TestBusWatchOnce: a register, an update and a free in site a are each
// seen exactly once by a watch in site b.
func TestBusWatchOnce(t *testing.T) {
	h := newHub()
	a := siteNodes(t, h, "a", 3)
	b := siteNodes(t, h, "b", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := b[0].Watch(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b-0 hears a-2", func() bool { return len(b[0].Remotes()) == 3 })
	rec := a[2].register(t, "api@1.0.0", 9000, nil)
	if _, err := a[2].Update(rec.ID, map[string]string{"load": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := a[2].Free(rec.ID); err != nil {
		t.Fatal(err)
	}
	var kinds []EventKind
	for len(kinds) < 3 {
		select {
		case ev := <-w:
			if ev.Record.ID != rec.ID {
				t.Fatalf("event of %s", ev.Record.ID)
			}
			kinds = append(kinds, ev.Kind)
		case <-ctx.Done():
			t.Fatalf("events %v", kinds)
		}
	}
	if want := []EventKind{Registered, Updated, Freed}; !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	// Nothing more comes: a marker registered after them is the next
	// event of the registry, and no second copy of any went before it.
	flush(t, a[0], b...)
	if n := b[0].count(Registered, rec.ID) + b[0].count(Updated, rec.ID) + b[0].count(Freed, rec.ID); n != 3 {
		t.Fatalf("b-0 emitted %d events for the record, want 3", n)
	}
	select {
	case ev := <-w:
		t.Fatalf("a fourth event: %v %s", ev.Kind, ev.Record.ID)
	default:
	}
}

// TestBusCloseFreesAtOnce: a node that closes has its records freed in
// the other sites at once (its leaving Beat), well within its lifetime.
func TestBusCloseFreesAtOnce(t *testing.T) {
	h := newHub()
	a := siteNodes(t, h, "a", 1, func(c *Config) { c.Heartbeat, c.Lifetime = time.Second, 30*time.Second })
	b := siteNodes(t, h, "b", 1)
	rec := a[0].register(t, "web@1.0.0", 80, nil)
	b[0].waitEvent(t, Registered, rec.ID)
	start := time.Now()
	a[0].Close()
	b[0].waitEvent(t, Freed, rec.ID)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("freed after %v: by expiry (30 s), not by the leaving beat", d)
	}
	if len(b[0].Remotes()) != 0 {
		t.Fatalf("b-0 still lists %v", b[0].Remotes())
	}
}

// TestBusSilentOwnerExpires: a node whose bus goes silent (killed, or
// cut off without a goodbye) is freed in the other sites within its
// lifetime, and shown again, once, when it comes back.
func TestBusSilentOwnerExpires(t *testing.T) {
	h := newHub()
	a := siteNodes(t, h, "a", 1)
	b := siteNodes(t, h, "b", 1)
	rec := a[0].register(t, "web@1.0.0", 80, nil)
	b[0].waitEvent(t, Registered, rec.ID)
	lifetime := a[0].cfg.Lifetime

	h.mu.Lock()
	bus := h.buses[a[0].ID()]
	h.mu.Unlock()
	cutAt := time.Now()
	bus.detach()
	b[0].waitEvent(t, Freed, rec.ID)
	if d := time.Since(cutAt); d < lifetime/2 || d > lifetime+a[0].cfg.Heartbeat+500*time.Millisecond {
		t.Errorf("freed %v after the cut; lifetime %v", d, lifetime)
	}
	// a's LAN keeps working alone.
	rec2 := a[0].register(t, "web@1.0.1", 81, nil)
	if !a[0].has(t, rec2.ID) {
		t.Fatal("a-0 lost its own record")
	}
	// The bus comes back: a publishes everything, b shows it once.
	h.attach(t, a[0])
	b[0].waitEvent(t, Registered, rec2.ID)
	waitFor(t, "b-0 shows web@1.0.0 again", func() bool { return b[0].count(Registered, rec.ID) == 2 })
	flush(t, a[0], b[0])
	if n := b[0].count(Registered, rec2.ID); n != 1 {
		t.Errorf("registered %d times", n)
	}
	// And a sees b's again (b asked nothing: a's run asked everyone).
	rb := b[0].register(t, "db@1.0.0", 1, nil)
	a[0].waitEvent(t, Registered, rb.ID)
}

// TestBusSyncOnConnect: a node joining the bus late has every record of
// the other sites at once, by asking (Sync), not by waiting for Beats.
func TestBusSyncOnConnect(t *testing.T) {
	h := newHub()
	slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Minute, 5*time.Minute } // no Beat helps
	a := siteNodes(t, h, "a", 2, slow)
	var ids []string
	for i := range 50 {
		ids = append(ids, a[i%2].register(t, "svc@1.0.0", 1000+i, nil).ID)
	}
	b := newNode(t, "b-0", inSite("b"), slow)
	h.attach(t, b)
	waitFor(t, "b-0 has all 50", func() bool { return len(b.ids(t, "svc")) == 50 })
	if got := b.ids(t, "svc"); !slices.Equal(got, slices.Sorted(slices.Values(ids))) {
		t.Fatalf("b-0 has %v", got)
	}
}

// TestBusGapRepaired: a change lost on the bus is noticed at the next
// one (or Beat) and the owner is asked for its records.
func TestBusGapRepaired(t *testing.T) {
	h := newHub()
	a := siteNodes(t, h, "a", 1)
	b := siteNodes(t, h, "b", 1)
	r1 := a[0].register(t, "web@1.0.0", 80, nil)
	b[0].waitEvent(t, Registered, r1.ID)
	var dropped sync.Once
	var mu sync.Mutex
	dropping := true
	h.mu.Lock()
	h.drop = func(from, to string, msg []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		if from == "a-0" && dropping && len(msg) > 40 { // a Put, not a Beat
			var bm busMessage
			if decodeBusMessage(msg, 1<<20, &bm) == nil && bm.frames[0].typ == msgPut {
				dropping = false
				dropped.Do(func() {})
				return true
			}
		}
		return false
	}
	h.mu.Unlock()
	r2 := a[0].register(t, "web@1.0.1", 81, nil) // lost
	r3 := a[0].register(t, "web@1.0.2", 82, nil) // shows the gap
	b[0].waitEvent(t, Registered, r3.ID)
	b[0].waitEvent(t, Registered, r2.ID)
	mu.Lock()
	d := dropping
	mu.Unlock()
	if d {
		t.Fatal("nothing was dropped")
	}
}

// TestBusSameSiteAndLinks: what comes over the bus from the node's own
// site is dropped (the links carry it): a LAN's records show once, with
// no event from the bus. An owner reached over links and heard over the
// bus shows once, with its own site, and the links' copy and the bus's
// take over from each other without an event either way.
func TestBusSameSiteAndLinks(t *testing.T) {
	h := newHub()
	a := siteNodes(t, h, "a", 2)
	rec := a[0].register(t, "web@1.0.0", 80, nil)
	a[1].waitEvent(t, Registered, rec.ID)
	// x is of site "x" but linked to a-1 by hand: a-1 reaches it over
	// its link and shows its record once.
	x := newNode(t, "x-0", inSite("x"))
	rx := x.register(t, "db@1.0.0", 1, nil)
	h.attach(t, x)
	a[1].waitEvent(t, Registered, rx.ID) // over the bus
	link := connectSynced(t, x, a[1])
	waitFor(t, "a-1 reaches x over its link", func() bool {
		return locked(a[1], func(r *Registry) bool { o := r.owners[x.ID()]; return o != nil && o.live })
	})
	flush(t, x, a[0], a[1])
	flush(t, a[0], x, a[1])
	for _, n := range a {
		if c := n.count(Registered, rec.ID); c != 1 {
			t.Errorf("%s: %d Registered for its own site's record", n.ID(), c)
		}
		if got := n.ids(t, "db"); !slices.Equal(got, []string{rx.ID}) {
			t.Errorf("%s sees db %v", n.ID(), got)
		}
	}
	check := func(when string) {
		t.Helper()
		if reg, freed := a[1].count(Registered, rx.ID), a[1].count(Freed, rx.ID); reg != 1 || freed != 0 {
			t.Errorf("%s: a-1 emitted %d Registered and %d Freed for x's record, want 1 and 0", when, reg, freed)
		}
		if r, ok := a[1].recordOf(t, rx.ID); !ok || r.Site != "x" {
			t.Errorf("%s: a-1 shows x's record %v with site %q, want x", when, ok, r.Site)
		}
	}
	check("linked")
	// The link goes; x still publishes on the bus: the bus's copy shows,
	// with no event.
	link.cut()
	waitFor(t, "a-1 no longer reaches x over a link", func() bool {
		return !locked(a[1], func(r *Registry) bool { o := r.owners[x.ID()]; return o != nil && o.live })
	})
	flush(t, a[0], a[1])
	flush(t, x, a[1])
	check("unlinked")
}

// TestBusServeBusNeedsSite: ServeBus refuses to run without a site.
func TestBusServeBusNeedsSite(t *testing.T) {
	n := newNode(t, "n")
	b := &memBus{hub: newHub(), id: "n", ch: make(chan []byte), cut: make(chan struct{})}
	if err := n.ServeBus(context.Background(), b); !errors.Is(err, ErrConfig) {
		t.Fatalf("ServeBus without a site: %v", err)
	}
	if _, err := New(Config{ID: "x", Site: "no spaces"}); !errors.Is(err, ErrConfig) {
		t.Fatalf("New with a bad site: %v", err)
	}
}

// TestBusDialPrefersSite: Dial tries this node's site first.
func TestBusDialPrefersSite(t *testing.T) {
	near, far := splitSite([]Record{{ID: "1", Site: "b"}, {ID: "2", Site: "a"}, {ID: "3", Site: "b"}}, "a")
	if len(near) != 1 || near[0].ID != "2" || len(far) != 2 {
		t.Fatalf("near %v far %v", near, far)
	}
}

// FuzzServeBus: whatever comes over the bus, the registry neither
// crashes nor hangs, and keeps serving.
func FuzzServeBus(f *testing.F) {
	put, _ := encodePut("a-0", 5, &entry{rec: Record{ID: "r", Name: "web", Version: "1.0.0", Owner: "a-0", Rev: Rev{5, 1}}}, 1<<20)
	beat, _ := encodeBeat("a-0", 5, 1, 1, false, false, time.Second, time.Now(), nil, 1<<20)
	snap, _ := encodeBusSnap("a-0", 5, 1, nil, nil, 1<<20)
	want, _ := encodeBusWant("b-0", time.Now(), 1<<20)
	for _, frames := range [][][]byte{{put}, {beat}, {snap[0], beat}, {encodeSync(time.Now())}, {want}} {
		msg := appendBusHeader(nil, "a", "a-0")
		for _, fr := range frames {
			msg = append(msg, fr...)
		}
		f.Add(msg)
	}
	r, err := New(Config{ID: "b-0", Site: "b", Logger: quiet})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	s := &busLink{r: r, bus: &memBus{hub: newHub()}, max: 1 << 20, limit: 1 << 19, cancel: func() {},
		wake: make(chan struct{}, 1), stopc: make(chan struct{}), flushed: make(chan struct{})}
	r.sites.remotes = map[string]*remote{}
	f.Fuzz(func(t *testing.T, msg []byte) {
		dec := decoder{maxMeta: r.cfg.MaxMetadataBytes, known: &r.ids}
		var bm busMessage
		r.mu.Lock()
		r.onBus(s, msg, &dec, &bm, nil)
		r.mu.Unlock()
		s.mu.Lock()
		s.queue, s.queued = nil, 0
		s.mu.Unlock()
	})
}

// TestBusObserverNotListed: a node that only observes shows its records
// like any other, but other sites do not list it among their remotes.
func TestBusObserverNotListed(t *testing.T) {
	h := newHub()
	a := siteNodes(t, h, "a", 1)
	o := siteNodes(t, h, "o", 1, func(c *Config) { c.Observer = true })
	b := siteNodes(t, h, "b", 1)
	ro := o[0].register(t, "probe@1.0.0", 0, nil)
	b[0].waitEvent(t, Registered, ro.ID)
	flush(t, a[0], b[0])
	var ids []string
	for _, r := range b[0].Remotes() {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"a-0"}) {
		t.Fatalf("b-0 Remotes = %v, want a-0 alone", ids)
	}
}

// TestBusSiteClashSaid: two LANs that took one site name see nothing of
// each other over the bus, and a node that keeps hearing a node of its
// site's name that its links never reach says so, once.
func TestBusSiteClashSaid(t *testing.T) {
	h := newHub()
	warns := make(chan string, 100)
	a := siteNodes(t, h, "same", 1, func(c *Config) { c.Logger = slog.New(warnLines(warns)) })
	b := newNode(t, "other-0", inSite("same"))
	h.attach(t, b)
	rb := b.register(t, "db@1.0.0", 1, nil)
	lifetime := a[0].cfg.Lifetime
	select {
	case w := <-warns:
		if !strings.Contains(w, "give each LAN a site of its own") {
			t.Fatalf("said %q", w)
		}
	case <-time.After(3*lifetime + 5*time.Second):
		t.Fatal("the clash was not said")
	}
	if a[0].has(t, rb.ID) {
		t.Fatal("a node of the same site's name shows over the bus")
	}
	select {
	case w := <-warns:
		t.Fatalf("said again: %q", w)
	case <-time.After(2 * lifetime):
	}
}
