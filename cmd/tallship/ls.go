package main

import (
	"context"
	"time"
)

const lsHelp = `
Join the cluster briefly, wait until every node met has sent its registry
(at most --wait), and print the members (id, addresses) and the services
(role, host:port, owner) as two tables, or as one JSON object with --json:
{"cluster", "members": [{"id", "addrs", "site", "remote"}], "services":
[{"id", "role", "name", "version", "host", "port", "addr", "owner",
"site", "meta"}]}. The listing node itself is not a member.

With --nats the other sites' members (marked remote: heard over NATS,
not linked) and services are listed too, each with its site.

A link that fails (a wrong secret, cluster or address) is one line on
stderr; given --connect, ls exits 1 naming the failures when it linked
with no node.
`

func runLs(ctx context.Context, e *env, args []string) error {
	nf := nodeFlags{observer: true} // it reads the cluster for a while: no member
	fs := newFlagSet("ls", e, lsHelp)
	nf.register(fs, e)
	asJSON := fs.Bool("json", false, "print one JSON object")
	wait := fs.Duration("wait", 1500*time.Millisecond, "wait at most `DURATION` for the cluster's nodes to answer")
	pos, err := fs.parse(args, -1)
	if err != nil {
		return err
	}
	if err := fs.exactly(pos, "CLUSTER"); err != nil {
		return err
	}
	if err := checkCluster(pos[0]); err != nil {
		return err
	}
	if *wait <= 0 {
		return usageErrorf("--wait %v: want a positive duration", *wait)
	}
	n, events, err := nf.startNode(ctx, e, pos[0])
	if err != nil {
		return err
	}
	defer nf.leave(n)
	if err := settle(ctx, events, *wait, quietFor(*wait), nf.nats.joined); err != nil {
		return err
	}
	if len(nf.connect) > 0 {
		if err := nf.failures.unlinked(); err != nil {
			return err
		}
	}
	l := listingJSON{Cluster: n.Cluster(), Members: []memberJSON{}, Services: []serviceJSON{}}
	for _, p := range n.Peers() {
		l.Members = append(l.Members, memberOf(p))
	}
	for _, p := range n.Remotes() {
		l.Members = append(l.Members, memberOf(p))
	}
	recs, err := n.Services("")
	if err != nil {
		return err
	}
	for _, r := range recs {
		l.Services = append(l.Services, serviceOf(r))
	}
	if *asJSON {
		return writeJSON(e.stdout, l)
	}
	return writeListing(e.stdout, l)
}

// quietFor is how long nothing must happen, after every peer met has
// synced, before a brief node takes the picture as complete.
func quietFor(wait time.Duration) time.Duration {
	return min(250*time.Millisecond, wait/4)
}
