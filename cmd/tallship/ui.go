package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

const uiHelp = `
Join the cluster as an observer and serve a live picture of it over HTTP
on --http: every node (id, addresses, how long up), every link between
them drawn as a graph, the services (role, version, host:port, owner)
with a filter that takes a query such as web@^1.2, and the events as they
happen. The page updates itself (server-sent events); a node that leaves
disappears from it. With --nats the header also shows the node's site and
NATS (connected, to which server, or down), and the members of the other
sites, heard over NATS and not linked, are listed under their site below
the mesh's nodes.

The observer registers nothing and is left out of the picture, on its
own page and on other dashboards. The command prints one line, the
page's address, and runs until SIGINT or SIGTERM. The JSON behind the
page: /api/members, /api/services?q=QUERY and /api/events (see the
README); the observer's own figures, for Prometheus: /metrics.

On a loopback address (the default) the page is open to this machine. On
any other address (0.0.0.0:8470, a LAN address) it asks for a token, made
at start and printed in the address (http://HOST:PORT/?token=TOKEN), or
given with --http-token or $TALLSHIP_HTTP_TOKEN (then asked for on
loopback too, and not printed). A browser opens that address once and
keeps the token as a cookie; a script sends "Authorization: Bearer
TOKEN" (curl -H 'Authorization: Bearer TOKEN' http://HOST:PORT/api/members).
`

func runUI(ctx context.Context, e *env, args []string) error {
	nf := nodeFlags{observer: true} // it reads the cluster for a while: no member
	fs := newFlagSet("ui", e, uiHelp)
	nf.register(fs, e)
	httpAddr := fs.String("http", "127.0.0.1:8470", "serve the dashboard on `ADDR` (host:port; port 0 picks a free one)")
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
	if *httpAddr == "" {
		return usageErrorf("--http: want an address, host:port")
	}
	started := time.Now()
	ln, err := listenHTTP(ctx, *httpAddr)
	if err != nil {
		return err
	}
	access, err := newHTTPAccess(ln, *httpToken)
	if err != nil {
		ln.Close()
		return err
	}
	n, events, err := nf.startNode(ctx, e, pos[0])
	if err != nil {
		ln.Close()
		return err
	}
	defer nf.leave(n)
	dash, stop, err := serveNode(n, started, true, nf.nats.joined, ln, access)
	if err != nil {
		return err
	}
	defer stop()
	stream, err := followNode(ctx, n, events)
	if err != nil {
		return err
	}
	if err := printDashboard(e.stdout, false, ln, access); err != nil {
		return err
	}
	for { // until ctx ends
		ev, ok := stream.next(ctx)
		if !ok {
			return nil
		}
		dash.observe(ev)
		if ev.Kind == mesh.IDConflict {
			return conflictError(ev.Event)
		}
	}
}

// listenHTTP listens on the --http address; "" is no address and no
// listener.
func listenHTTP(ctx context.Context, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usageErrorf("--http %q: want host:port", addr)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http: %w", err)
	}
	return ln, nil
}

// serveNode makes n answer its peers' questions about its links (peers.go)
// and, given an HTTP listener, serves its dashboard on it (nil without);
// nats says n joins other sites through NATS. stop undoes both and is
// idempotent; on error ln is closed.
func serveNode(n *mesh.Node, started time.Time, observer, nats bool, ln net.Listener, access httpAccess) (dash *dashboard, stop func(), err error) {
	resp, err := startPeerResponder(n, started, observer)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, nil, err
	}
	if ln != nil {
		dash = newDashboard(n, ln, access, started, observer, nats)
	}
	var once sync.Once
	return dash, func() {
		once.Do(func() {
			if dash != nil {
				dash.Close()
			}
			resp.Close()
		})
	}, nil
}

// dashboardURL is the address of the page served on ln.
func dashboardURL(ln net.Listener) string {
	a := ln.Addr().(*net.TCPAddr)
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(a.Port)) + "/"
}

// dashboardEventJSON is the line of join --json that gives the page's
// address.
type dashboardEventJSON struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"` // "dashboard"
	URL   string    `json:"url"`
}

// printDashboard prints the page's address, with the token access made,
// as a JSON line or a line of text like join's.
func printDashboard(w io.Writer, asJSON bool, ln net.Listener, access httpAccess) error {
	url := access.url(dashboardURL(ln))
	if asJSON {
		return writeJSON(w, dashboardEventJSON{Time: time.Now(), Event: "dashboard", URL: url})
	}
	_, err := fmt.Fprintf(w, "%s %-18s %s\n", time.Now().Format(timeLayout), "dashboard", url)
	return err
}
