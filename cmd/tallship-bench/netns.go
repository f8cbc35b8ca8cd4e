package main

import "github.com/tallship-go/tallship/internal/testutil/netns"

// The benchmark runs inside a private network namespace that it makes for
// itself: it re-executes its own binary with CLONE_NEWNET (and, when not
// root, CLONE_NEWUSER) through internal/testutil/netns, so that no packet it sends,
// multicast or not, can leave the machine. The helper processes it starts
// inherit the namespace.
const (
	envNS   = "TALLSHIP_BENCH_NETNS"
	nsChild = "child" // set for the re-executed process, before setup
	nsReady = "ready" // set once loopback is up; inherited by helpers
)

// enterNamespace re-executes the benchmark in a new network namespace and
// returns its exit code, or an error when no namespace could be made.
func enterNamespace() (int, error) { return netns.Reexec(envNS + "=" + nsChild) }

// setupNamespace brings loopback up with multicast and a multicast route,
// then checks that no other interface is there.
func setupNamespace() error {
	if err := netns.SetupLoopback(); err != nil {
		return err
	}
	return netns.CheckPrivate()
}
