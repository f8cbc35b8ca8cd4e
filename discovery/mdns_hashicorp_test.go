package discovery

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// Interop with github.com/hashicorp/mdns, both ways, on loopback in the
// test's private network namespace.
//
// A node publishes its PTR under its cluster subtype,
// _<hash(cluster)>._sub._tallship._tcp.local., and under the base type
// _tallship._tcp.local. (mdns_names.go): hashicorp/mdns finds a cluster's
// nodes by the subtype, and every node on the link by the base type.
//
// What hashicorp/mdns v1.0.7 does that shapes these tests: its client only
// ever sends one query per Query and writes to Entries without blocking
// (so the channel is buffered, and a Query may need repeating); Query
// returns only after its whole Timeout; IPv6 multicast does not arrive on
// lo (so IPv6 is off); it needs the route for 224.0.0.0/4 that netns sets
// on lo. Its Server never announces: it only answers queries, always by
// unicast to the querier, from port 5353. It binds 5353 with
// net.ListenMulticastUDP, as tallship does: Go sets SO_REUSEADDR on both
// sockets, which on Linux is all two UDP sockets need to share the port
// (each gets its own copy of every multicast packet).

// TestHashicorpQueryFindsTallshipNodes runs tallship nodes of four clusters
// on loopback and looks each cluster up with hashicorp/mdns's Query once
// the nodes' start-up announcements are over, so that what hashicorp/mdns
// learns can only come from a node's answer to its query: the instance,
// host, port, IPv4 and IPv6 addresses and TXT strings the node announces,
// from that cluster's node alone. A Lookup (hashicorp/mdns's one-call
// form, its defaults) of the base type _tallship._tcp then finds the nodes
// of every cluster, with the same host, port and TXT strings.
func TestHashicorpQueryFindsTallshipNodes(t *testing.T) {
	netns.Require(t)
	lo := netns.Loopback(t)
	c300 := strings.Repeat("c", 300)
	c400 := strings.Repeat("h", 400)
	sum := sha256.Sum256([]byte(c400))
	cases := []struct {
		name    string
		cluster string
		id      string
		port    int
		txt     []string // as hashicorp/mdns hands them over
	}{
		{"uuid id", "hashi-query", "6f1c2a7e-3b8d-4e29-9a51-0c7d2e8f4b13", 7301,
			[]string{"v=1", "c=hashi-query", "i=6f1c2a7e-3b8d-4e29-9a51-0c7d2e8f4b13"}},
		{"id that is no DNS label", "hashi-query-2", "Node 1", 7302,
			[]string{"v=1", "c=hashi-query-2", "i=Node 1"}},
		{"300-byte cluster in two strings", c300, "a", 7303,
			[]string{"v=1", "c=" + c300[:253], "c=" + c300[253:], "i=a"}},
		{"cluster over 320 bytes as its hash", c400, "b", 7304,
			[]string{"v=1", "ch=" + hex.EncodeToString(sum[:]), "i=b"}},
	}
	p := newProbe(t)
	for _, tc := range cases {
		startNode(t, &MDNS{}, Self{Cluster: tc.cluster, ID: tc.id, Port: tc.port})
	}
	// Both start-up announcements of every node (at 0 and 1 s); the next
	// comes at half the TTL, a minute later.
	heard := map[string]int{}
	p.await(t, 5*time.Second, "both start-up announcements of every node", func(pk probed) bool {
		for _, tc := range cases {
			if announces(tc.cluster, tc.id)(pk) {
				heard[tc.id]++
			}
		}
		for _, tc := range cases {
			if heard[tc.id] < 2 {
				return false
			}
		}
		return true
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newNames(tc.cluster, tc.id)
			entries := hashicorpQuery(t, lo, serviceName(tc.cluster), n.instance)
			if len(entries) != 1 {
				t.Fatalf("a query for %s drew %d entries, want the one of %q: %s", tc.name, len(entries), tc.id, entryList(entries))
			}
			e := entries[0]
			if e.Host != n.host {
				t.Errorf("host = %q, want %q", e.Host, n.host)
			}
			if e.Port != tc.port {
				t.Errorf("port = %d, want %d", e.Port, tc.port)
			}
			if !e.AddrV4.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Errorf("IPv4 address = %v, want 127.0.0.1", e.AddrV4)
			}
			// mDNS runs over IPv4 only on lo, but the node announces
			// every address of the interface.
			if !e.AddrV6.Equal(net.IPv6loopback) {
				t.Errorf("IPv6 address = %v, want ::1", e.AddrV6)
			}
			if !slices.Equal(e.InfoFields, tc.txt) {
				t.Errorf("TXT = %q, want %q", e.InfoFields, tc.txt)
			}
		})
	}
	t.Run("Lookup of the base type", func(t *testing.T) {
		want := map[string]int{} // instance → index of its case
		for i, tc := range cases {
			want[newNames(tc.cluster, tc.id).instance] = i
		}
		entries := hashicorpLookup(t, strings.TrimSuffix(serviceType, ".local."), func(got map[string]*mdns.ServiceEntry) bool {
			for instance := range want {
				if got[instance] == nil {
					return false
				}
			}
			return true
		})
		for instance, e := range entries {
			i, ok := want[instance]
			if !ok {
				t.Errorf("Lookup found %s (%s:%d %q), which no node announces", instance, e.AddrV4, e.Port, e.InfoFields)
				continue
			}
			tc := cases[i]
			if e.Host != newNames(tc.cluster, tc.id).host || e.Port != tc.port || !slices.Equal(e.InfoFields, tc.txt) {
				t.Errorf("Lookup found %s at %s:%d with TXT %q, want %s:%d with %q",
					instance, e.Host, e.Port, e.InfoFields, newNames(tc.cluster, tc.id).host, tc.port, tc.txt)
			}
			if !e.AddrV4.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Errorf("Lookup found %s at IPv4 address %v, want 127.0.0.1", instance, e.AddrV4)
			}
		}
	})
}

// hashicorpLookup looks service up with hashicorp/mdns's Lookup (its
// defaults: 1 s, IPv4 and IPv6, the default multicast interface), again
// (3 times at most) until done holds for the entries found so far, by
// instance name, and returns them. Lookup logs through the standard
// logger, which writes to t's log meanwhile.
func hashicorpLookup(t *testing.T, service string, done func(map[string]*mdns.ServiceEntry) bool) map[string]*mdns.ServiceEntry {
	t.Helper()
	w, flags := log.Writer(), log.Flags()
	log.SetOutput(hashicorpLogger(t).Writer())
	log.SetFlags(0)
	defer func() {
		log.SetOutput(w)
		log.SetFlags(flags)
	}()
	got := map[string]*mdns.ServiceEntry{}
	for range 3 {
		// Lookup writes without blocking: room for far more than can come.
		ch := make(chan *mdns.ServiceEntry, 64)
		if err := mdns.Lookup(service, ch); err != nil {
			t.Fatalf("hashicorp/mdns Lookup(%s): %v", service, err)
		}
		close(ch) // Lookup has returned: nothing writes to it any more
		for e := range ch {
			got[e.Name] = e
		}
		if done(got) {
			return got
		}
		t.Logf("hashicorp/mdns Lookup(%s): %d entries so far; asking again", service, len(got))
	}
	var list []*mdns.ServiceEntry
	for _, e := range got {
		list = append(list, e)
	}
	t.Fatalf("hashicorp/mdns Lookup(%s) in 3 tries found only %s", service, entryList(list))
	return nil
}

// hashicorpQuery looks service up on ifi with hashicorp/mdns's Query,
// again (5 times at most, 300 ms each) until the entry of instance comes,
// and returns every entry of the query that brought it.
func hashicorpQuery(t *testing.T, ifi *net.Interface, service, instance string) []*mdns.ServiceEntry {
	t.Helper()
	const (
		attempts = 5
		timeout  = 300 * time.Millisecond
	)
	logger := hashicorpLogger(t)
	for range attempts {
		// Query writes without blocking: room for far more than can come.
		ch := make(chan *mdns.ServiceEntry, 64)
		err := mdns.Query(&mdns.QueryParam{
			Service:     strings.TrimSuffix(service, ".local."),
			Domain:      "local",
			Timeout:     timeout,
			Interface:   ifi,
			Entries:     ch,
			DisableIPv6: true,
			Logger:      logger,
		})
		if err != nil {
			t.Fatalf("hashicorp/mdns Query(%s): %v", service, err)
		}
		close(ch) // Query has returned: nothing writes to it any more
		var got []*mdns.ServiceEntry
		for e := range ch {
			got = append(got, e)
		}
		for _, e := range got {
			if e.Name == instance {
				return got
			}
		}
		t.Logf("hashicorp/mdns Query(%s): %s; asking again", service, entryList(got))
	}
	t.Fatalf("hashicorp/mdns found no %s in %d queries of %v", instance, attempts, timeout)
	return nil
}

func entryList(entries []*mdns.ServiceEntry) string {
	if len(entries) == 0 {
		return "no entries"
	}
	var s []string
	for _, e := range entries {
		s = append(s, fmt.Sprintf("%s (%s:%d %q)", e.Name, e.AddrV4, e.Port, e.InfoFields))
	}
	return strings.Join(s, ", ")
}

// TestHashicorpServerSeenByTallship publishes a service with
// hashicorp/mdns's Server, starts a tallship node of the cluster beside it,
// then a second tallship node, and checks what the first reports. A node
// learns of the service only from the Server's answers to its browse
// queries (the Server never announces), and it treats any answer to its
// browse the same, whoever sent it: an instance under its cluster subtype
// with a valid tallship TXT of its cluster is a peer, named by the TXT's
// id, at the SRV's port and the A record's address; a foreign TXT (a
// decode error) or another cluster's is dropped with a debug log line,
// reported to no one; a service under the base type _tallship._tcp is never
// asked for, since a node browses only its cluster subtype. In each case
// the real tallship node is found as well, and no discovery error is
// reported.
func TestHashicorpServerSeenByTallship(t *testing.T) {
	netns.Require(t)
	lo := netns.Loopback(t)
	const (
		hashiID  = "hashi-peer"
		port     = 7401
		queryGap = 200 * time.Millisecond
	)
	baseType := strings.TrimSuffix(serviceType, ".local.")
	for i, tc := range []struct {
		name    string
		subtype bool // publish under the cluster subtype, else the base type
		txt     func(cluster string) []string
		found   bool     // reported as a peer
		logged  []string // else: what the debug log line that says why not holds, if any
	}{
		{
			name: "tallship TXT under the cluster subtype", subtype: true,
			txt:   func(c string) []string { return []string{"v=1", "c=" + c, "i=" + hashiID} },
			found: true,
		},
		{
			name: "foreign TXT under the cluster subtype", subtype: true,
			txt:    func(string) []string { return []string{"path=/", "version=2"} },
			logged: []string{`msg="mdns: bad record"`, ErrBadTXT.Error() + ": no version"},
		},
		{
			name: "another cluster's TXT under the cluster subtype", subtype: true,
			txt:    func(string) []string { return []string{"v=1", "c=another", "i=" + hashiID} },
			logged: []string{`msg="mdns: other cluster under our service name"`},
		},
		{
			name: "tallship TXT under the base type only", subtype: false,
			txt: func(c string) []string { return []string{"v=1", "c=" + c, "i=" + hashiID} },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster := fmt.Sprintf("hashi-server-%d", i)
			browse := serviceName(cluster)
			service := baseType
			if tc.subtype {
				service = strings.TrimSuffix(browse, ".local.")
			}
			svc, err := mdns.NewMDNSService("hashi", service, "local.", "hashi-host.local.", port,
				[]net.IP{net.IPv4(127, 0, 0, 1)}, tc.txt(cluster))
			if err != nil {
				t.Fatal(err)
			}
			zone := &askedZone{zone: svc, asked: newWatched[dns.Question]()}
			srv, err := mdns.NewServer(&mdns.Config{Zone: zone, Iface: lo, Logger: hashicorpLogger(t)})
			if err != nil {
				t.Fatalf("hashicorp/mdns NewServer beside tallship on :5353: %v", err)
			}
			t.Cleanup(func() { _ = srv.Shutdown() })

			logs := logLines{newWatched[string]()}
			// QueryMin: the observer's second browse follows its first
			// (sent at once) 200 ms later, not 1 s.
			observer := startNode(t, &MDNS{
				QueryMin: queryGap,
				Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			}, Self{Cluster: cluster, ID: "observer"})
			// Both browses reach the Server (no other node of the cluster
			// runs yet): whatever the Server answers to the first has had
			// 200 ms to be handled when the second comes.
			zone.asked.waitFor(t, 5*time.Second, "the observer's first two browses at the hashicorp/mdns server", func(qs []dns.Question) bool {
				n := 0
				for _, q := range qs {
					if q.Name == browse && q.Qtype == dns.TypePTR {
						n++
					}
				}
				return n >= 2
			})
			switch {
			case tc.found:
				observer.rec.waitFor(t, 5*time.Second, "the observer finds the hashicorp/mdns service", knows(hashiID))
			case tc.logged != nil:
				// The answer arrived and was judged.
				logs.waitFor(t, 5*time.Second, fmt.Sprintf("a log line with %q", tc.logged), func(lines []string) bool {
					return slices.ContainsFunc(lines, func(l string) bool {
						return !slices.ContainsFunc(tc.logged, func(s string) bool { return !strings.Contains(l, s) })
					})
				})
			}
			// The window for a wrong report: from the observer's first
			// browse until it finds a node started after its second.
			startNode(t, &MDNS{}, Self{Cluster: cluster, ID: "companion"})
			observer.rec.waitFor(t, 5*time.Second, "the observer finds the tallship companion", knows("companion"))

			events := observer.rec.snapshot()
			want := map[string]string{"companion": ""}
			if tc.found {
				want[hashiID] = fmt.Sprint([]string{fmt.Sprintf("127.0.0.1:%d", port)})
			}
			got := peers(events)
			for id, p := range got {
				w, ok := want[id]
				switch {
				case !ok:
					t.Errorf("observer reported %q at %v", id, p.Addrs)
				case w != "" && fmt.Sprint(p.Addrs) != w:
					t.Errorf("observer reported %q at %v, want %s", id, p.Addrs, w)
				}
			}
			for id := range want {
				if _, ok := got[id]; !ok {
					t.Errorf("observer does not know %q; events: %v", id, events)
				}
			}
			for _, ev := range events {
				if ev.Err != nil || ev.Kind == Lost {
					t.Errorf("observer reported %v", ev)
				}
			}
			if tc.found || tc.logged != nil {
				return
			}
			for _, q := range zone.asked.snapshot() {
				if q.Name == svc.Service+"."+svc.Domain {
					t.Errorf("a tallship node asked for %s: that service should then be found", q.Name)
				}
			}
		})
	}
}

// askedZone is a hashicorp/mdns Zone that remembers every question the
// Server hands it.
type askedZone struct {
	zone  mdns.Zone
	asked *watched[dns.Question]
}

func (z *askedZone) Records(q dns.Question) []dns.RR {
	z.asked.add(q)
	return z.zone.Records(q)
}

// watched is a list that tests wait on.
type watched[T any] struct {
	mu     sync.Mutex
	items  []T
	notify chan struct{} // closed and replaced on every add
}

func newWatched[T any]() *watched[T] { return &watched[T]{notify: make(chan struct{})} }

func (w *watched[T]) add(v T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.items = append(w.items, v)
	close(w.notify)
	w.notify = make(chan struct{})
}

// logLines collects the lines of a slog handler, which writes each record
// in one call.
type logLines struct{ *watched[string] }

func (l logLines) Write(p []byte) (int, error) {
	l.add(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func (w *watched[T]) snapshot() []T {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.items)
}

// waitFor waits until cond holds for the items so far, or fails t after
// timeout.
func (w *watched[T]) waitFor(t testing.TB, timeout time.Duration, what string, cond func([]T) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok, ch := cond(w.items), w.notify
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("after %v, still waiting for %s; have: %v", timeout, what, w.snapshot())
		}
	}
}

// hashicorpLogger returns a logger for hashicorp/mdns that writes to t's
// log (shown for a failing test, or with -v) until t ends, and drops what
// its goroutines, which Shutdown does not wait for, log later.
func hashicorpLogger(t testing.TB) *log.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return log.New(w, "", 0)
}

type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Every Query with IPv6 disabled says "[INFO] mdns: Failed to listen
	// to both unicast and multicast on IPv6": nothing to see.
	if !w.done && !bytes.HasPrefix(p, []byte("[INFO]")) {
		w.t.Log("hashicorp/mdns: " + string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}
