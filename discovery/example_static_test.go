package discovery_test

import (
	"context"
	"fmt"

	"github.com/tallship-go/tallship/discovery"
)

func ExampleStatic() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &discovery.Static{
		Addrs:    []string{"192.0.2.10:7946", "[2001:db8::7]:7946"},
		Interval: -1, // report once
	}
	reported := 0
	err := s.Run(ctx, discovery.Self{}, func(ev discovery.Event) {
		fmt.Println(ev.Source, ev.Kind, ev.Peer.Addrs)
		if reported++; reported == len(s.Addrs) {
			cancel()
		}
	})
	fmt.Println(err)
	// Output:
	// static found [192.0.2.10:7946]
	// static found [[2001:db8::7]:7946]
	// <nil>
}
