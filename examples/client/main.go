// Command client finds a web@^1 service in a tallship cluster and fetches
// its page, printing the body. Started before the server, it waits for one
// to register (mesh.Lookup), at most --timeout.
//
// Try it with examples/web inside a private network namespace, so that no
// mDNS packet leaves the machine (build first: no network inside):
//
//	go build -o /tmp/ex/ ./examples/web ./examples/client
//	unshare -rn sh -c 'ip link set lo up multicast on; ip route add 224.0.0.0/4 dev lo
//	  /tmp/ex/client & c=$!; /tmp/ex/web & wait $c; kill $!; wait'
//
// (As root without user namespaces: unshare -n.)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

func main() {
	cluster := flag.String("cluster", "demo", "cluster to join")
	query := flag.String("query", "web@^1", "role and version range to look up")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()
	if err := run(*cluster, *query, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run(cluster, query string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	node, err := mesh.Join(cluster)
	if err != nil {
		return err
	}
	defer leave(node)

	recs, err := node.Lookup(ctx, query) // waits until one exists
	if err != nil {
		return fmt.Errorf("no %s: %w", query, err)
	}
	rec := recs[0]
	fmt.Printf("client: %s is %s at %s\n", query, rec.Role(), rec.Addr())

	// The service may be registered a moment before it listens (tallship
	// run registers, then starts it): retry until the deadline.
	for {
		body, err := get(ctx, "http://"+rec.Addr()+"/")
		if err == nil {
			fmt.Print(body)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), err
}

// leave shuts node down gracefully: peers get what was sent, and its
// records are freed everywhere at once. A peer that stopped reading
// holds it up for 5 s at most.
func leave(node *mesh.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node.Shutdown(ctx)
}
