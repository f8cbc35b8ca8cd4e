package mesh_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// Two nodes linked through one address exchange a message. (Join with the
// default Config would find each other over mDNS instead of Connect.)
func Example() {
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

	if _, err := b.Connect(ctx, a.Addrs()[0].String()); err != nil {
		log.Fatal(err)
	}
	if err := b.Send(ctx, "a", []byte("hello")); err != nil {
		log.Fatal(err)
	}
	msg, err := a.Receive(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s says %s\n", msg.From, msg.Data)
	// Output: b says hello
}

// A service registered on one node is found on another with a semver
// range.
func ExampleNode_Lookup() {
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
	if _, err := b.Connect(ctx, a.Addrs()[0].String()); err != nil {
		log.Fatal(err)
	}

	if _, err := a.Register(mesh.Service{Role: "web@1.4.2", Port: 8080}); err != nil {
		log.Fatal(err)
	}
	recs, err := b.Lookup(ctx, "web@^1.4")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(recs[0].Role(), "on", recs[0].Owner, "port", recs[0].Port)
	// Output: web@1.4.2 on a port 8080
}
