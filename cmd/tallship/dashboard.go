package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// The dashboard of join --http and ui: what the node sees of the cluster,
// kept up to date from its events and its peers' reports (peers.go), and
// pushed to the browsers watching (dashboard_http.go).

const (
	// logSize is how many events the dashboard keeps for a new page.
	logSize = 500
	// pushDelay gathers the changes of a burst into one members update.
	pushDelay = 30 * time.Millisecond
	// sitesPoll is how often a node on NATS looks at the other sites'
	// members again: they come and go without an event (they expire).
	sitesPoll = time.Second
)

// dashboard watches one node and serves its picture over HTTP.
type dashboard struct {
	n        *mesh.Node
	started  time.Time // when the node started
	observer bool      // the node only watches: it is not a member
	nats     bool      // the node joins the other sites through NATS (--nats)
	access   httpAccess
	srv      *http.Server

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // watchers, the pusher, the server
	dirty  chan struct{}  // capacity 1: the members picture may have changed

	mu       sync.Mutex
	direct   map[string]mesh.Peer          // the node's linked peers
	watching map[string]context.CancelFunc // report readers, by peer
	reports  map[string]*heardReport       // the last report of each peer
	log      []logEntry                    // the last logSize events
	clients  map[*sseClient]struct{}
	lastPush []byte // the members and links last pushed
}

// heardReport is a peer's report with when it was read.
type heardReport struct {
	peerReport
	upSince time.Time // on this node's clock
}

// logEntry is one event of the log: its join --json form and its join
// line.
type logEntry struct {
	eventJSON
	Line string `json:"line"`
}

// membersJSON is the body of /api/members and of the "members" event.
type membersJSON struct {
	Cluster  string `json:"cluster"`
	Self     string `json:"self"`
	Observer bool   `json:"observer"`
	// Site is the node's site (--site, or "default" with --nats).
	Site string `json:"site,omitempty"`
	// NATS is the node's connection to the other sites; absent without
	// --nats.
	NATS *natsView `json:"nats,omitempty"`
	Time time.Time `json:"time"`
	// Members are the nodes of the mesh (the node, its linked peers and
	// the nodes they report), sorted by id, then the members of other
	// sites heard over NATS (Remote), sorted by site and id.
	Members []memberView `json:"members"`
	Links   [][2]string  `json:"links"`
}

// natsView is the state of a node's connection to NATS.
type natsView struct {
	Connected bool `json:"connected"`
	// URL is the server connected to, its credentials hidden; "" while
	// not connected.
	URL string `json:"url"`
}

// memberView is a node of the picture.
type memberView struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
	// Self: the node serving the dashboard (join --http).
	Self bool `json:"self,omitempty"`
	// Direct: linked to the node serving the dashboard.
	Direct bool `json:"direct"`
	// Reports: the node answers with its own peer list, so its links are
	// known from itself, not only from its peers.
	Reports bool `json:"reports"`
	// UpSince is when the node started, when it reports it.
	UpSince *time.Time `json:"up_since,omitempty"`
	// LinkedSince is when its link to the dashboard's node came up.
	LinkedSince *time.Time `json:"linked_since,omitempty"`
	// Site is the node's site, with sites (--site, --nats).
	Site string `json:"site,omitempty"`
	// Remote: a member of another site, heard over NATS: not linked,
	// no addresses, not in the graph.
	Remote bool `json:"remote,omitempty"`
}

// newDashboard serves the dashboard of n on ln, to those access lets in,
// until Close; nats says n joins other sites through NATS. The caller
// feeds it every event of n's eventStream through observe.
func newDashboard(n *mesh.Node, ln net.Listener, access httpAccess, started time.Time, observer, nats bool) *dashboard {
	d := &dashboard{
		n:        n,
		started:  started,
		observer: observer,
		nats:     nats,
		access:   access,
		dirty:    make(chan struct{}, 1),
		direct:   map[string]mesh.Peer{},
		watching: map[string]context.CancelFunc{},
		reports:  map[string]*heardReport{},
		clients:  map[*sseClient]struct{}{},
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.srv = newHTTPServer(d.handler())
	d.mu.Lock()
	d.syncPeersLocked()
	d.mu.Unlock()
	d.wg.Add(2)
	go d.pushLoop()
	go d.serve(ln)
	return d
}

// Close ends every page's event stream, stops the HTTP server and the
// report readers, and returns once they have ended. It is idempotent.
func (d *dashboard) Close() {
	d.cancel()
	d.shutdown()
	d.wg.Wait()
}

// observe takes one event of the node or change of a service: into the
// log (the pages reload their services on a service event), and into the
// picture when a peer came or went or NATS did. It never blocks on a
// page.
func (d *dashboard) observe(ev event) {
	if d == nil {
		return
	}
	entry := logEntry{eventJSON: eventOf(ev), Line: eventLine(ev)}
	data, _ := json.Marshal(entry)
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.log) >= logSize {
		d.log = slices.Delete(d.log, 0, len(d.log)-logSize+1)
	}
	d.log = append(d.log, entry)
	d.sendLocked(sseMessage{event: "event", data: data})
	switch ev.Kind {
	case mesh.PeerUp, mesh.PeerDown:
		d.syncPeersLocked()
	case mesh.NATSUp, mesh.NATSDown, mesh.RemoteUp, mesh.RemoteDown:
		d.markDirty()
	}
}

// syncPeersLocked takes the node's linked peers as they are now, and
// starts or stops reading their reports; d.mu is held.
func (d *dashboard) syncPeersLocked() {
	clear(d.direct)
	for _, p := range d.n.Peers() {
		d.direct[p.ID] = p
	}
	for id, stop := range d.watching {
		if _, ok := d.direct[id]; !ok {
			stop()
			delete(d.watching, id)
			delete(d.reports, id)
		}
	}
	for id := range d.direct {
		if _, ok := d.watching[id]; !ok && d.ctx.Err() == nil {
			ctx, stop := context.WithCancel(d.ctx)
			d.watching[id] = stop
			d.wg.Add(1)
			go d.watchPeer(ctx, id)
		}
	}
	d.markDirty()
}

// watchPeer reads the reports of a linked peer until ctx ends. A peer that
// does not answer (a program of its own, tallship run) is asked again,
// less and less often; meanwhile its links are known from its peers'
// reports.
func (d *dashboard) watchPeer(ctx context.Context, id string) {
	defer d.wg.Done()
	backoff := 500 * time.Millisecond
	for {
		readPeerReports(ctx, d.n, id, func(rep peerReport) {
			backoff = 500 * time.Millisecond
			d.mu.Lock()
			defer d.mu.Unlock()
			if ctx.Err() != nil {
				return // the peer went: its report must not come back
			}
			since := time.Now().Add(-time.Duration(rep.UpMS) * time.Millisecond)
			if old := d.reports[id]; old != nil && old.upSince.Sub(since).Abs() < time.Second {
				since = old.upSince // the same run: keep the picture still
			}
			d.reports[id] = &heardReport{peerReport: rep, upSince: since}
			d.markDirty()
		})
		d.mu.Lock()
		if d.reports[id] != nil && ctx.Err() == nil {
			delete(d.reports, id) // stale from now on
			d.markDirty()
		}
		d.mu.Unlock()
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (d *dashboard) markDirty() {
	select {
	case d.dirty <- struct{}{}:
	default:
	}
}

// pushLoop sends the members picture to the pages when it changed, at
// most once per pushDelay; on NATS, it also looks again every sitesPoll.
func (d *dashboard) pushLoop() {
	defer d.wg.Done()
	var poll <-chan time.Time
	if d.nats {
		t := time.NewTicker(sitesPoll)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.dirty:
		case <-poll:
		}
		t := time.NewTimer(pushDelay)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d.mu.Lock()
		m := d.membersLocked()
		data, _ := json.Marshal(m)
		m.Time = time.Time{}
		key, _ := json.Marshal(m)
		if !bytes.Equal(key, d.lastPush) {
			d.lastPush = key
			d.sendLocked(sseMessage{event: "members", data: data})
		}
		d.mu.Unlock()
	}
}

// members returns the picture now.
func (d *dashboard) members() membersJSON {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.membersLocked()
}

// membersLocked computes the picture: the node itself (unless it only
// observes), its linked peers, the nodes its peers report, the members of
// other sites; and a link wherever one end says so. Observers and their
// links are left out. d.mu is held.
func (d *dashboard) membersLocked() membersJSON {
	self := d.n.ID()
	nodes := map[string]*memberView{}
	links := map[[2]string]bool{}
	link := func(a, b string) {
		if a != b {
			links[[2]string{min(a, b), max(a, b)}] = true
		}
	}
	if !d.observer {
		since := d.started
		nodes[self] = &memberView{ID: self, Addrs: addrStrings(d.n.Addrs()), Self: true, Reports: true, UpSince: &since, Site: d.n.Site()}
	}
	for id, p := range d.direct {
		since := p.Since
		v := &memberView{ID: id, Addrs: addrStrings(p.Addrs), Direct: true, LinkedSince: &since, Site: p.Site}
		if rep := d.reports[id]; rep != nil {
			up := rep.upSince
			v.Reports, v.UpSince = true, &up
		}
		nodes[id] = v
		if !d.observer {
			link(self, id)
		}
	}
	observers := map[string]bool{}
	if d.observer {
		observers[self] = true
	}
	for _, id := range slices.Sorted(maps.Keys(d.reports)) {
		rep := d.reports[id]
		if rep.Observer {
			observers[id] = true
		}
		for _, q := range rep.Peers {
			if _, ok := nodes[q.ID]; !ok && q.ID != self {
				nodes[q.ID] = &memberView{ID: q.ID, Addrs: q.Addrs, Site: q.Site}
			}
			link(id, q.ID)
		}
	}
	for _, p := range d.n.Remotes() {
		if _, ok := nodes[p.ID]; !ok {
			nodes[p.ID] = &memberView{ID: p.ID, Site: p.Site, Remote: true}
		}
	}
	out := membersJSON{Cluster: d.n.Cluster(), Self: self, Observer: d.observer, Site: d.n.Site(), Time: time.Now(),
		Members: []memberView{}, Links: [][2]string{}}
	if d.nats {
		s := d.n.Stats().NATS
		out.NATS = &natsView{Connected: s.Connected, URL: s.URL}
	}
	for id, v := range nodes {
		if !observers[id] {
			if v.Addrs == nil {
				v.Addrs = []string{}
			}
			out.Members = append(out.Members, *v)
		}
	}
	for l := range links {
		if nodes[l[0]] != nil && nodes[l[1]] != nil && !observers[l[0]] && !observers[l[1]] {
			out.Links = append(out.Links, l)
		}
	}
	slices.SortFunc(out.Members, func(a, b memberView) int {
		switch {
		case a.Remote && !b.Remote:
			return 1
		case !a.Remote && b.Remote:
			return -1
		case a.Remote:
			return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.ID, b.ID))
		}
		return cmp.Compare(a.ID, b.ID)
	})
	slices.SortFunc(out.Links, func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	return out
}
