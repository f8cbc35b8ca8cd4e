package mesh_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// Two nodes found by mDNS, with the default Config: each waits until the
// other is linked, greets it, and prints the greeting it gets: the
// README's program. Run twice on one LAN (or in one private network
// namespace), each copy prints a line like
//
//	5c0e… says hello, mesh
//
// This example is compiled, not run, by go test: its mDNS packets would
// go out on the machine's network, which the tests never do. The README's
// copy is run as two processes in a private network namespace by
// examples/readme_test.go.
func Example_mDNS() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node, err := mesh.Join("my-cluster")
	if err != nil {
		log.Fatal(err)
	}
	defer node.Shutdown(ctx)

	if _, err := node.WaitPeers(ctx, 1); err != nil { // mDNS, then a link
		log.Fatal(err)
	}
	if err := node.Broadcast(ctx, []byte("hello, mesh")); err != nil {
		log.Fatal(err)
	}
	msg, err := node.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s says %s\n", msg.From, msg.Data)
}

// A node waits for its peers before it sends: here b links to a through
// one address, and a waits until b is its peer.
func ExampleNode_WaitPeers() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := mesh.LocalConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Discovery = mesh.NoDiscovery
	cfg.ID = "a"
	a, err := cfg.Join(ctx, "example")
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	cfg.ID = "b"
	b, err := cfg.Join(ctx, "example")
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	if err := a.Broadcast(ctx, []byte("anyone?")); err != nil {
		fmt.Println(err)
	}
	if _, err := b.Connect(ctx, a.Addrs()[0].String()); err != nil {
		log.Fatal(err)
	}
	peers, err := a.WaitPeers(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("a's peers:", peers[0].ID)
	if err := a.Broadcast(ctx, []byte("hello")); err != nil {
		log.Fatal(err)
	}
	msg, err := b.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s says %s\n", msg.From, msg.Data)
	// Output:
	// mesh: no peers to send to
	// a's peers: b
	// a says hello
}
