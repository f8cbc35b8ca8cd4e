// Command counter passes a counter around a ring of tallship nodes, as
// masterless' example did: once --nodes nodes have met, the ring is their
// ids in sorted order; the lowest id sends 1 to the next, and every node
// that receives the counter adds one and sends it to the next id, wrapping
// around. After --rounds trips around the ring the lowest id tells everyone
// to stop. It gives up after --timeout.
//
// Try three of them inside a private network namespace, so that no mDNS
// packet leaves the machine (build first: no network inside):
//
//	go build -o /tmp/ex/ ./examples/counter
//	unshare -rn sh -c 'ip link set lo up multicast on; ip route add 224.0.0.0/4 dev lo
//	  for id in a b c; do /tmp/ex/counter --id $id & done; wait'
//
// (As root without user namespaces: unshare -n.)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

func main() {
	cluster := flag.String("cluster", "counter", "cluster to join")
	id := flag.String("id", "", "node id (default: a random UUID)")
	nodes := flag.Int("nodes", 3, "how many nodes make the ring")
	rounds := flag.Int("rounds", 3, "trips of the counter around the ring")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()
	if *nodes < 2 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "counter: want --nodes ≥ 2 and --rounds ≥ 1")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *cluster, *id, *nodes, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cluster, id string, nodes, rounds int) error {
	node, err := mesh.Config{ID: id}.Join(ctx, cluster)
	if err != nil {
		return err
	}
	defer leave(node)

	ring, err := meet(ctx, node, nodes)
	if err != nil {
		return err
	}
	self := slices.Index(ring, node.ID())
	next := ring[(self+1)%len(ring)]
	first := self == 0
	fmt.Printf("%s: ring %v, next %s\n", node.ID(), ring, next)
	if first {
		if err := node.Send(ctx, next, []byte("count 1")); err != nil {
			return err
		}
	}
	for {
		msg, err := node.Receive(ctx)
		if err != nil {
			return err
		}
		text := string(msg.Data)
		if text == "stop" {
			fmt.Printf("%s: stopped by %s\n", node.ID(), msg.From)
			return nil
		}
		n, err := strconv.Atoi(strings.TrimPrefix(text, "count "))
		if err != nil {
			return fmt.Errorf("message %q from %s", text, msg.From)
		}
		fmt.Printf("%s: %d from %s\n", node.ID(), n, msg.From)
		if first && n == rounds*len(ring) {
			fmt.Printf("%s: done after %d rounds, counter %d\n", node.ID(), rounds, n)
			return node.Broadcast(ctx, []byte("stop")) // Close delivers it
		}
		if err := node.Send(ctx, next, []byte("count "+strconv.Itoa(n+1))); err != nil {
			return err
		}
	}
}

// meet waits until the node is linked with nodes-1 peers and returns the
// ring: every id, sorted.
func meet(ctx context.Context, node *mesh.Node, nodes int) ([]string, error) {
	peers, err := node.WaitPeers(ctx, nodes-1)
	if err != nil {
		return nil, fmt.Errorf("met %d of %d nodes: %w", len(node.Peers())+1, nodes, err)
	}
	ring := []string{node.ID()}
	for _, p := range peers {
		ring = append(ring, p.ID)
	}
	slices.Sort(ring)
	return ring, nil
}

// leave shuts node down gracefully: peers get what was sent, and its
// records are freed everywhere at once. A peer that stopped reading
// holds it up for 5 s at most.
func leave(node *mesh.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node.Shutdown(ctx)
}
