package main

import "github.com/tallship-go/tallship/internal/testutil/netns"

// The benchmark runs inside a private network namespace that it makes for
// itself (netns.Enter): it re-executes its own binary with CLONE_NEWNET
// (and, when not root, CLONE_NEWUSER), so that no packet it sends,
// multicast or not, can leave the machine. The helper processes it starts
// inherit the namespace, and netns.Inside reports it to them (the harness
// node refuses to run without it).

// nsErr says why the benchmark runs without a private namespace; nil when
// it runs in one.
var nsErr error

// enterNamespace re-executes the benchmark in a private namespace and
// exits with its status, or, where no namespace can be made, records why
// and returns.
func enterNamespace() { nsErr = netns.Enter() }
