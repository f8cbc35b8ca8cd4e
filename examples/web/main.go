// Command web is an HTTP server that registers itself in a tallship
// cluster as web@1.0.0 through port assignment: mesh.ListenService gives it
// a listener on a free port, already registered, and closing the listener
// frees the record everywhere. It serves until SIGINT or SIGTERM.
//
// Given a port as its last argument (as "tallship run" passes one), it
// joins nothing and just serves on that port, leaving the registration to
// tallship run:
//
//	tallship run demo web@1.0.0 -- ./web
//
// Try it with examples/client inside a private network namespace, so that
// no mDNS packet leaves the machine (build first: no network inside):
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
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

func main() {
	cluster := flag.String("cluster", "demo", "cluster to join")
	role := flag.String("role", "web@1.0.0", "role to register")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if flag.NArg() > 0 {
		err = servePort(ctx, *role, flag.Arg(flag.NArg()-1))
	} else {
		err = serveRegistered(ctx, *cluster, *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "web:", err)
		os.Exit(1)
	}
}

// serveRegistered joins the cluster and serves on a port the registry
// assigns, registered as role.
func serveRegistered(ctx context.Context, cluster, role string) error {
	node, err := mesh.Join(cluster)
	if err != nil {
		return err
	}
	defer leave(node)
	ln, err := node.ListenService(ctx, mesh.Service{Role: role}, ":0") // a free port, registered
	if err != nil {
		return err
	}
	rec := ln.Record()
	fmt.Printf("web: %s at %s, node %s\n", rec.Role(), rec.Addr(), node.ID())
	return serve(ctx, ln, fmt.Sprintf("hello from %s at %s on node %s\n", rec.Role(), rec.Addr(), node.ID()))
}

// servePort serves on the given port, without joining any cluster.
func servePort(ctx context.Context, role, port string) error {
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	fmt.Printf("web: serving on port %s\n", port)
	return serve(ctx, ln, fmt.Sprintf("hello from %s on port %s\n", role, port))
}

// serve answers every request with greeting until ctx ends, then shuts
// the server down (closing ln, which frees a ServiceListener's record).
func serve(ctx context.Context, ln net.Listener, greeting string) error {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, greeting)
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
	err := srv.Shutdown(sctx)
	fmt.Println("web: stopped")
	return err
}

// leave shuts node down gracefully: peers get what was sent, and its
// records are freed everywhere at once. A peer that stopped reading
// holds it up for 5 s at most.
func leave(node *mesh.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node.Shutdown(ctx)
}
