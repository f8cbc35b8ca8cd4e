package tallship_test

// The whole library, end to end, as a program uses it: three nodes of one
// cluster on a private LAN (a network namespace with only loopback, made by
// internal/testutil/netns, so no packet leaves the machine) find each other
// by mDNS, share the registry, exchange messages and serve HTTP over a
// stream, and leave. The long end-to-end suites (faults, restarts, several
// hosts, loss) are in e2e/.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

func TestMain(m *testing.M) { netns.Main(m) }

func TestMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster := fmt.Sprintf("whole-library-%d", os.Getpid())

	var nodes []*mesh.Node
	for i := range 3 {
		cfg := mesh.LocalConfig()
		cfg.ID = fmt.Sprintf("node-%d", i)
		cfg.Listen = "127.0.0.1:0"
		cfg.Logger = slog.New(slog.DiscardHandler)
		n, err := cfg.Join(ctx, cluster)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	a, b, c := nodes[0], nodes[1], nodes[2]

	// A service registered on a is found everywhere, by mDNS alone.
	rec, err := a.Register(mesh.Service{Role: "web@1.4.2", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		got, err := n.Lookup(ctx, "web@^1.4")
		if err != nil {
			t.Fatalf("%s: lookup web@^1.4: %v", n.ID(), err)
		}
		if len(got) != 1 || got[0].ID != rec.ID || got[0].Owner != a.ID() || got[0].Port != 8080 {
			t.Fatalf("%s: lookup web@^1.4 = %+v, want a's record %s", n.ID(), got, rec.ID)
		}
	}
	if got, _ := c.Services("web@2"); len(got) != 0 {
		t.Errorf("web@2 matched %+v", got)
	}

	// The mesh is full: every node has the two others as peers.
	for _, n := range nodes {
		waitPeers(t, ctx, n, 2)
	}

	// A broadcast from b reaches a and c, once each.
	if err := b.Broadcast(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*mesh.Node{a, c} {
		msg, err := n.Receive(ctx)
		if err != nil {
			t.Fatalf("%s: receive: %v", n.ID(), err)
		}
		if msg.From != b.ID() || string(msg.Data) != "hello" {
			t.Fatalf("%s received %q from %s, want hello from %s", n.ID(), msg.Data, msg.From, b.ID())
		}
	}

	// HTTP over a stream: c serves, a fetches.
	ln, err := c.Listen("http")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "served by %s to %s", c.ID(), r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return a.OpenStream(ctx, c.ID(), "http")
		},
	}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+c.ID()+"/", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "served by node-2 to node-0"; string(body) != want {
		t.Errorf("GET over a stream = %q, want %q", body, want)
	}

	// a leaves: its record is freed on b, and b's peers no longer list it.
	w, err := b.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-w; ev.Record.ID != rec.ID {
		t.Fatalf("watch web first gave %+v, want a's record", ev)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w:
		if ev.Kind != registry.Freed || ev.Record.ID != rec.ID {
			t.Fatalf("after a left, watch gave %v of %s, want the free of %s", ev.Kind, ev.Record.ID, rec.ID)
		}
	case <-ctx.Done():
		t.Fatal("a's record was not freed on b after a closed")
	}
	waitPeers(t, ctx, b, 1)
	if ids := peerIDs(b); slices.Contains(ids, a.ID()) {
		t.Errorf("b still lists a as a peer: %v", ids)
	}
}

// waitPeers waits, on n's events, until n has want peers.
func waitPeers(t *testing.T, ctx context.Context, n *mesh.Node, want int) {
	t.Helper()
	evs := n.Events(ctx)
	for len(n.Peers()) != want {
		select {
		case <-evs:
		case <-ctx.Done():
			t.Fatalf("%s has peers %v, want %d", n.ID(), peerIDs(n), want)
		}
	}
}

func peerIDs(n *mesh.Node) []string {
	var ids []string
	for _, p := range n.Peers() {
		ids = append(ids, p.ID)
	}
	return ids
}
