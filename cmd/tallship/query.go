package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

const queryHelp = `
Print the addresses of the instances of a role as one JSON array of
"host:port" (seaport's query), [] when there are none. The query is a role
name with an optional semantic-version range: web, web@1.2.3, web@^1.2,
"web@>=1.0 <2", web@1.x.

Without --wait the answer is what the cluster holds once every node met
has sent its registry (at most --settle). With --wait the command waits
until at least one instance exists (at most --timeout) and prints the
instances then.

With --nats the instances of every site are printed, those of this
node's site (--site) first, as a program's DialService prefers them.

A link that fails (a wrong secret, cluster or address) is one line on
stderr; given --connect, query without --wait exits 1 naming the
failures when it linked with no node.
`

func runQuery(ctx context.Context, e *env, args []string) error {
	nf := nodeFlags{observer: true} // it reads the cluster for a while: no member
	fs := newFlagSet("query", e, queryHelp)
	nf.register(fs, e)
	wait := fs.Bool("wait", false, "wait until at least one instance exists")
	timeout := fs.Duration("timeout", 0, "with --wait, give up after `DURATION` (default never)")
	settleMax := fs.Duration("settle", 1500*time.Millisecond, "without --wait, wait at most `DURATION` for the cluster's nodes to answer")
	pos, err := fs.parse(args, -1)
	if err != nil {
		return err
	}
	if err := fs.exactly(pos, "CLUSTER", "ROLE[@RANGE]"); err != nil {
		return err
	}
	if err := checkCluster(pos[0]); err != nil {
		return err
	}
	query := pos[1]
	if query == "" {
		return usageErrorf("empty role (want ROLE or ROLE@RANGE)")
	}
	if _, err := registry.ParseQuery(query); err != nil {
		return &usageError{msg: err.Error()}
	}
	if *timeout < 0 || *settleMax <= 0 {
		return usageErrorf("--timeout and --settle want positive durations")
	}
	n, events, err := nf.startNode(ctx, e, pos[0])
	if err != nil {
		return err
	}
	defer nf.leave(n)

	var recs []mesh.Record
	if *wait {
		lctx, cancel := context.WithCancelCause(ctx)
		go watchConflict(events, cancel) // ends when the node closes
		if *timeout > 0 {
			var stop context.CancelFunc
			lctx, stop = context.WithTimeout(lctx, *timeout)
			defer stop()
		}
		recs, err = n.Lookup(lctx, query)
		cause := context.Cause(lctx)
		cancel(nil)
		switch {
		case err == nil, ctx.Err() != nil:
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("no instance of %s within %v", query, *timeout)
		case cause != nil && !errors.Is(cause, context.Canceled):
			return cause // the id conflict
		}
	} else {
		if err = settle(ctx, events, *settleMax, quietFor(*settleMax), nf.nats.joined); err == nil && len(nf.connect) > 0 {
			err = nf.failures.unlinked()
		}
		if err == nil {
			recs, err = n.Services(query)
		}
	}
	if err != nil {
		return err
	}
	nearFirst(recs, n.Site())
	addrs := make([]string, 0, len(recs))
	for _, r := range recs {
		addrs = append(addrs, r.Addr())
	}
	return writeJSON(e.stdout, addrs)
}

// nearFirst puts the records of site first, keeping the order of each
// part (the registry's: by name, version, owner and id).
func nearFirst(recs []mesh.Record, site string) {
	far := func(r mesh.Record) int {
		if r.Site == site {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(recs, func(a, b mesh.Record) int { return far(a) - far(b) })
}
