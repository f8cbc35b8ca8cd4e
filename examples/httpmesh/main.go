// Command httpmesh serves HTTP over tallship mesh streams: no port, no TCP
// connection of its own. The server runs http.Serve on node.Listen("http")
// and registers the role httpmesh@1.0.0 without a port, so that clients
// find which node serves; the client's http.Transport dials with
// node.OpenStream, taking the URL's host as the peer's id.
//
//	httpmesh serve    # serve until SIGINT or SIGTERM
//	httpmesh get      # find a server, GET / from it, print the body
//
// Try it inside a private network namespace, so that no mDNS packet
// leaves the machine (build first: no network inside):
//
//	go build -o /tmp/ex/ ./examples/httpmesh
//	unshare -rn sh -c 'ip link set lo up multicast on; ip route add 224.0.0.0/4 dev lo
//	  /tmp/ex/httpmesh serve & /tmp/ex/httpmesh get; kill $!; wait'
//
// (As root without user namespaces: unshare -n.)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

const (
	protocol = "http"           // the mesh stream protocol
	role     = "httpmesh@1.0.0" // how clients find a server
)

func main() {
	cluster := flag.String("cluster", "httpmesh", "cluster to join")
	timeout := flag.Duration("timeout", 30*time.Second, "get: give up after this long")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: httpmesh [flags] serve|get")
		flag.PrintDefaults()
	}
	flag.Parse()
	var err error
	switch flag.Arg(0) {
	case "serve":
		err = serve(*cluster)
	case "get":
		err = get(*cluster, *timeout)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpmesh:", err)
		os.Exit(1)
	}
}

func serve(cluster string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	node, err := mesh.Join(cluster)
	if err != nil {
		return err
	}
	defer leave(node)
	ln, err := node.Listen(protocol) // Accept yields streams from any peer
	if err != nil {
		return err
	}
	if _, err := node.Register(mesh.Service{Role: role}); err != nil {
		return err
	}
	fmt.Printf("httpmesh: serving on node %s\n", node.ID())
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A stream's RemoteAddr names the peer.
			fmt.Fprintf(w, "hello over the mesh from %s to %s\n", node.ID(), r.RemoteAddr)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func get(cluster string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	node, err := mesh.Join(cluster)
	if err != nil {
		return err
	}
	defer leave(node)
	recs, err := node.Lookup(ctx, "httpmesh@^1") // waits for a server
	if err != nil {
		return fmt.Errorf("no server: %w", err)
	}
	server := recs[0].Owner

	client := &http.Client{Transport: &http.Transport{
		// "http://<node id>/" dials a stream to that node.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			peer, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return openStream(ctx, node, peer)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+server+"/", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(os.Stdout, io.LimitReader(resp.Body, 1<<20))
	return err
}

// openStream opens a stream to peer. The registry can show a server's
// record, relayed by another node, a moment before this node's own link to
// the server is up: until ctx ends, an unknown peer is tried again.
func openStream(ctx context.Context, node *mesh.Node, peer string) (net.Conn, error) {
	for {
		c, err := node.OpenStream(ctx, peer, protocol)
		if !errors.Is(err, mesh.ErrUnknownPeer) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leave shuts node down gracefully: peers get what was sent, and its
// records are freed everywhere at once. A peer that stopped reading
// holds it up for 5 s at most.
func leave(node *mesh.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node.Shutdown(ctx)
}
