// Command chat broadcasts each line typed on stdin to every node of a
// tallship cluster and prints the lines the others send, with the sender's
// id. It prints "* ID joined" and "* ID left" as peers come and go, and
// stops at the end of stdin (Ctrl-D), SIGINT or SIGTERM. A line typed
// while no peer is there waits for the next one to join.
//
// Try it inside a private network namespace, so that no mDNS packet
// leaves the machine (build first: no network inside). Node a says hello
// and leaves; b prints it:
//
//	go build -o /tmp/ex/ ./examples/chat
//	unshare -rn sh -c 'ip link set lo up multicast on; ip route add 224.0.0.0/4 dev lo
//	  echo hello from a | /tmp/ex/chat --id a & /tmp/ex/chat --id b'
//
// (As root without user namespaces: unshare -n. Type into b; Ctrl-D ends it.)
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

func main() {
	cluster := flag.String("cluster", "chat", "cluster to join")
	id := flag.String("id", "", "node id (default: a random UUID)")
	flag.Parse()
	if err := run(*cluster, *id); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

func run(cluster, id string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	node, err := mesh.New(cluster, mesh.Config{ID: id})
	if err != nil {
		return err
	}
	defer leave(node)
	events := node.Events(ctx) // before Start: no peer goes unseen
	if err := node.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("* you are %s in %s\n", node.ID(), cluster)

	go func() { // peers coming and going, until the node closes
		for ev := range events {
			switch ev.Kind {
			case mesh.PeerUp:
				fmt.Printf("* %s joined\n", ev.Peer)
			case mesh.PeerDown:
				fmt.Printf("* %s left\n", ev.Peer)
			}
		}
	}()
	go func() { // messages, until the node closes
		for {
			msg, err := node.Receive(ctx)
			if err != nil {
				return
			}
			fmt.Printf("%s: %s\n", msg.From, msg.Data)
		}
	}()

	lines := make(chan string)
	go func() { // stdin, until its end
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			if err := say(ctx, node, line); err != nil {
				return err
			}
		}
	}
}

// say broadcasts line, waiting for a peer when there is none. It returns
// nil when ctx ends first.
func say(ctx context.Context, node *mesh.Node, line string) error {
	for {
		if _, err := node.WaitPeers(ctx, 1); err != nil {
			return nil // ctx ended: SIGINT or SIGTERM
		}
		err := node.Broadcast(ctx, []byte(line))
		switch {
		case errors.Is(err, mesh.ErrNoPeers):
			continue // the last peer left meanwhile: wait for the next
		case err != nil && ctx.Err() != nil:
			return nil
		}
		return err
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
