package registry_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"github.com/tallship-go/tallship/registry"
)

// One registry alone: register services and query them by semver range.
func ExampleRegistry_Services() {
	r, err := registry.New(registry.Config{ID: "node-a", Host: "10.0.0.1"})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	for i, role := range []string{"beep@1.2.3", "beep@1.3.5", "beep@0.9.0"} {
		if _, err := r.Register(registry.Service{Role: role, Port: 8000 + i}); err != nil {
			log.Fatal(err)
		}
	}
	for _, q := range []string{"beep", "beep@1.2.x", "beep@>1.2.0"} {
		recs, _ := r.Services(q)
		fmt.Printf("%-12s", q)
		for _, rec := range recs {
			fmt.Printf(" %s→%s", rec.Role(), rec.Addr())
		}
		fmt.Println()
	}
	// Output:
	// beep         beep@0.9.0→10.0.0.1:8002 beep@1.2.3→10.0.0.1:8000 beep@1.3.5→10.0.0.1:8001
	// beep@1.2.x   beep@1.2.3→10.0.0.1:8000
	// beep@>1.2.0  beep@1.2.3→10.0.0.1:8000 beep@1.3.5→10.0.0.1:8001
}

// Two registries replicating over an in-memory stream: what one registers,
// the other finds. In a mesh, the stream is one yamux stream of the link.
func ExampleRegistry_Serve() {
	a, _ := registry.New(registry.Config{ID: "a"})
	b, _ := registry.New(registry.Config{ID: "b"})
	defer a.Close()
	defer b.Close()

	ca, cb := net.Pipe()
	go a.Serve(context.Background(), "b", ca)
	go b.Serve(context.Background(), "a", cb)

	go a.Register(registry.Service{Role: "db@2.1.0", Host: "10.0.0.7", Port: 5432,
		Meta: map[string]string{"primary": "yes"}})

	recs, err := b.Lookup(context.Background(), "db@^2") // waits for it
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(recs[0].Role(), recs[0].Addr(), recs[0].Owner, recs[0].Meta["primary"])
	// Output: db@2.1.0 10.0.0.7:5432 a yes
}

// Watch delivers the current matching records, then every change.
func ExampleRegistry_Watch() {
	r, _ := registry.New(registry.Config{ID: "a"})
	defer r.Close()
	r.Register(registry.Service{Role: "web@1.0.0", Port: 80})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, _ := r.Watch(ctx, "web@1")

	rec, _ := r.Register(registry.Service{Role: "web@1.1.0", Port: 81})
	r.Update(rec.ID, map[string]string{"weight": "5"})
	r.Free(rec.ID)
	r.Register(registry.Service{Role: "web@2.0.0", Port: 82}) // not in the range

	for range 4 {
		ev := <-events
		fmt.Println(ev.Kind, ev.Record.Role(), ev.Record.Meta)
	}
	// Output:
	// registered web@1.0.0 map[]
	// registered web@1.1.0 map[]
	// updated web@1.1.0 map[weight:5]
	// freed web@1.1.0 map[weight:5]
}

// Port assignment: a listener on a free port, registered for a role, found
// and dialed by query, freed when closed.
func ExampleRegistry_Listen() {
	r, _ := registry.New(registry.Config{ID: "a"})
	defer r.Close()

	ln, err := r.Listen(context.Background(), registry.Service{Role: "echo@1.0.0"}, "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			fmt.Fprintln(c, "hello from", ln.Record().Role())
			c.Close()
		}
	}()

	c, err := r.Dial(context.Background(), "echo@^1")
	if err != nil {
		log.Fatal(err)
	}
	var w1, w2, w3 string
	fmt.Fscan(c, &w1, &w2, &w3)
	c.Close()
	fmt.Println(w1, w2, w3)

	ln.Close()
	recs, _ := r.Services("echo")
	fmt.Println(len(recs), "records after Close")
	// Output:
	// hello from echo@1.0.0
	// 0 records after Close
}

func ExampleParseQuery() {
	for _, s := range []string{"web", "web@^1.2", "web@>=1.0 <2", "web@", "web@1.2.3.4"} {
		q, err := registry.ParseQuery(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("name %q range %q\n", q.Name, q.Range)
	}
	// Output:
	// name "web" range ""
	// name "web" range "^1.2"
	// name "web" range ">=1.0 <2"
	// registry: bad query "web@": empty version range after '@'
	// registry: bad query "web@1.2.3.4": range "1.2.3.4": improper constraint: "1.2.3.4"
}
