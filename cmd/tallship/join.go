package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

const joinHelp = `
Join the cluster and stay in it until SIGINT or SIGTERM, printing one line
per event, in the order they happened: this node joining (at the time it
started), peers up, synced and down, services registered, updated and
freed (with the owner as "peer"), discovery errors; a link that fails
(a wrong secret, cluster or address) is one line on stderr, once per
address and reason. At the signal the
node leaves gracefully, its peers told, within 5 s, and the last line
says "left". When peers refuse this node because
another live node has its id (id-conflict), it exits with status 1. With
--json each line is a JSON object: {"time", "event", "peer", "addrs",
"service", "error"}; the first has "event":"joined" with this node's "id"
and "addrs", the last "event":"left".

With --http the node also serves the dashboard of tallship ui on ADDR,
with itself in the picture; the line after "joined" gives its address
("dashboard", or {"event":"dashboard","url"} with --json). Off loopback
the page asks for a token, as tallship ui's does (see tallship ui
--help): the printed address carries the one made at start. The same
server gives the node's figures to Prometheus at /metrics, behind the
same token.
`

func runJoin(ctx context.Context, e *env, args []string) error {
	var nf nodeFlags
	fs := newFlagSet("join", e, joinHelp)
	nf.register(fs, e)
	asJSON := fs.Bool("json", false, "print events as JSON lines")
	httpAddr := fs.String("http", "", "serve the dashboard (see tallship ui) on `ADDR`, host:port")
	httpToken := registerHTTPToken(fs, e)
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
	started := time.Now()
	httpLn, err := listenHTTP(ctx, *httpAddr) // nil without --http
	if err != nil {
		return err
	}
	access, err := newHTTPAccess(httpLn, *httpToken)
	if err != nil {
		if httpLn != nil {
			httpLn.Close()
		}
		return err
	}
	n, events, err := nf.startNode(ctx, e, pos[0])
	if err != nil {
		if httpLn != nil {
			httpLn.Close()
		}
		return err
	}
	defer nf.leave(n)
	dash, stopServing, err := serveNode(n, started, false, nf.nats.joined, httpLn, access)
	if err != nil {
		return err
	}
	defer stopServing()
	stream, err := followNode(ctx, n, events)
	if err != nil {
		return err
	}

	// "joined" comes first and carries the time the node started: it
	// links with its peers from then on, also while Start still claims
	// a chosen id, and the events of those links, printed after it, are
	// stamped later. (Stamped when Start returned, it would follow
	// them, earlier, in time.)
	addrs := addrStrings(n.Addrs())
	if *asJSON {
		err = writeJSON(e.stdout, eventJSON{Time: started, Event: "joined", Cluster: n.Cluster(), ID: n.ID(), Addrs: addrs})
	} else {
		_, err = fmt.Fprintf(e.stdout, "%s %-18s %s as %s at %s\n", started.Format(timeLayout), "joined", n.Cluster(), n.ID(), strings.Join(addrs, " "))
	}
	if err == nil && dash != nil {
		err = printDashboard(e.stdout, *asJSON, httpLn, access)
	}
	if err != nil {
		return err
	}
	for { // until ctx ends
		ev, ok := stream.next(ctx)
		if !ok {
			break
		}
		dash.observe(ev)
		if ev.Kind == mesh.LinkFailed || ev.Kind == mesh.NATSDown {
			continue // on stderr, as for every command (failureLog)
		}
		if *asJSON {
			err = writeJSON(e.stdout, eventOf(ev))
		} else {
			_, err = fmt.Fprintln(e.stdout, eventLine(ev))
		}
		if err != nil {
			return err // stdout closed: nobody listens any more
		}
		if ev.Kind == mesh.IDConflict {
			return conflictError(ev.Event)
		}
	}
	stopServing()
	nf.leave(n)
	if *asJSON {
		return writeJSON(e.stdout, eventJSON{Time: time.Now(), Event: "left", Cluster: n.Cluster(), ID: n.ID()})
	}
	_, err = fmt.Fprintf(e.stdout, "%s %-18s %s\n", time.Now().Format(timeLayout), "left", n.Cluster())
	return err
}
