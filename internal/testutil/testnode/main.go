// Command testnode is a mesh node for the end-to-end tests: it joins a
// cluster, registers roles, prints its id and "ready", and runs until it
// is killed, told to stop (SIGINT, SIGTERM) or its standard input closes.
//
// It refuses to run outside the private network namespace the tests make
// (internal/testutil/netns), so that it never sends a packet on a real LAN.
//
//	testnode -cluster C [-id ID] [-listen 127.0.0.1:0] [-connect ADDR]... [-role NAME@VER]... [-meta K=V]...
//
// Output, one line each: "id ID", "addr HOST:PORT", "record ID ROLE" for
// every role registered, then "ready".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/mesh"
)

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testnode:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cluster = flag.String("cluster", "", "cluster to join (required)")
		id      = flag.String("id", "", "node id (empty: a random UUID)")
		listen  = flag.String("listen", "127.0.0.1:0", "address to accept links on")
		debug   = flag.Bool("debug", false, "log at Debug level to standard error")
		connect list
		roles   list
		meta    list
	)
	flag.Var(&connect, "connect", "address of a node to connect to (repeatable); none means mDNS only")
	flag.Var(&roles, "role", "role name@version to register (repeatable)")
	flag.Var(&meta, "meta", "key=value metadata for every role (repeatable)")
	flag.Parse()
	if *cluster == "" || flag.NArg() > 0 {
		flag.Usage()
		return errors.New("usage: -cluster is required and no arguments are taken")
	}
	if !netns.Inside() {
		return errors.New("refusing to run outside a private network namespace (run me from the tests)")
	}
	md := map[string]string{}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("-meta %q: want key=value", kv)
		}
		md[k] = v
	}

	// The timers of the tests' nodeConfig (mesh_test.go).
	cfg := mesh.LocalConfig()
	cfg.KeepAliveInterval = 250 * time.Millisecond
	cfg.WriteTimeout = time.Second
	cfg.Lifetime = time.Second
	cfg.ID = *id
	cfg.Listen = *listen
	level := slog.LevelWarn
	if *debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if len(connect) > 0 {
		cfg.Discovery = mesh.NoDiscovery
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node, err := cfg.Join(ctx, *cluster)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		node.Shutdown(ctx) // leave gracefully
	}()
	fmt.Printf("id %s\n", node.ID())
	for _, a := range node.Addrs() {
		fmt.Printf("addr %s\n", a)
	}
	for _, addr := range connect {
		if _, err := node.Connect(ctx, addr); err != nil {
			return fmt.Errorf("connect %s: %w", addr, err)
		}
	}
	for _, role := range roles {
		rec, err := node.Register(mesh.Service{Role: role, Meta: md})
		if err != nil {
			return err
		}
		fmt.Printf("record %s %s\n", rec.ID, rec.Role())
	}
	fmt.Println("ready")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-stop:
	case <-eof:
	}
	return nil
}
