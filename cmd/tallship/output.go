package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// The JSON forms of what the commands print. Their field names are part
// of the CLI's interface.

// memberJSON is a linked node.
type memberJSON struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
	// Site is the member's site (--site, with --nats); Remote marks one
	// of another site, heard over NATS, not linked.
	Site   string `json:"site,omitempty"`
	Remote bool   `json:"remote,omitempty"`
}

// serviceJSON is a registered service instance.
type serviceJSON struct {
	ID      string            `json:"id"`
	Role    string            `json:"role"`
	Name    string            `json:"name"`
	Version string            `json:"version"`
	Host    string            `json:"host"`
	Port    int               `json:"port"`
	Addr    string            `json:"addr"`
	Owner   string            `json:"owner"`
	Site    string            `json:"site,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
}

// listingJSON is the output of ls --json.
type listingJSON struct {
	Cluster  string        `json:"cluster"`
	Members  []memberJSON  `json:"members"`
	Services []serviceJSON `json:"services"`
}

// eventJSON is one line of join --json.
type eventJSON struct {
	Time    time.Time    `json:"time"`
	Event   string       `json:"event"`
	Cluster string       `json:"cluster,omitempty"`
	ID      string       `json:"id,omitempty"`   // joined, left: this node
	Peer    string       `json:"peer,omitempty"` // peer events; the owner for service events
	Addrs   []string     `json:"addrs,omitempty"`
	Service *serviceJSON `json:"service,omitempty"`
	Error   string       `json:"error,omitempty"`
	// Undelivered (peer-down): messages sent to the peer that it did not
	// acknowledge.
	Undelivered int `json:"undelivered,omitempty"`
	// Observer (peer events): the peer only observes (ls, query, ui):
	// not a member.
	Observer bool `json:"observer,omitempty"`
}

func addrStrings(as []netip.AddrPort) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func memberOf(p mesh.Peer) memberJSON {
	return memberJSON{ID: p.ID, Addrs: addrStrings(p.Addrs), Site: p.Site, Remote: p.Remote}
}

func serviceOf(r mesh.Record) serviceJSON {
	s := serviceJSON{
		ID: r.ID, Role: r.Role(), Name: r.Name, Version: r.Version,
		Host: r.Host, Port: r.Port, Addr: r.Addr(), Owner: r.Owner, Site: r.Site,
	}
	if len(r.Meta) > 0 {
		s.Meta = r.Meta
	}
	return s
}

func eventOf(ev event) eventJSON {
	out := eventJSON{Time: ev.Time, Event: ev.name(), Peer: ev.Peer, Undelivered: ev.Undelivered, Observer: ev.Observer}
	if ev.change != 0 {
		s := serviceOf(ev.record)
		out.Service = &s
		out.Peer = ev.record.Owner
	}
	if len(ev.Addrs) > 0 {
		out.Addrs = addrStrings(ev.Addrs)
	}
	if ev.Err != nil {
		out.Error = ev.Err.Error()
	}
	return out
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

const timeLayout = "15:04:05.000"

// eventLine is an event as one readable line.
func eventLine(ev event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-18s", ev.Time.Format(timeLayout), ev.name())
	if ev.change != 0 {
		r := ev.record
		fmt.Fprintf(&b, " %s %s owner %s", r.Role(), r.Addr(), r.Owner)
		if r.Site != "" {
			fmt.Fprintf(&b, " (site %s)", r.Site) // with sites (--site, --nats)
		}
		return strings.TrimRight(b.String(), " ")
	}
	switch ev.Kind {
	case mesh.PeerUp:
		fmt.Fprintf(&b, " %s %s", ev.Peer, strings.Join(addrStrings(ev.Addrs), " "))
		if ev.Observer {
			b.WriteString(" (observer)") // ls, query, ui: not a member
		}
	case mesh.PeerDown:
		b.WriteString(" " + ev.Peer)
		writeGone(&b, ev.Event)
	case mesh.RemoteUp, mesh.RemoteDown:
		// A member of another site, heard over NATS (--nats).
		fmt.Fprintf(&b, " %s (site %s)", ev.Peer, ev.Site)
		writeGone(&b, ev.Event)
	case mesh.PeerSynced:
		b.WriteString(" " + ev.Peer)
		if ev.Observer {
			b.WriteString(" (observer)")
		}
	case mesh.DiscoveryError, mesh.IDConflict:
		if ev.Err != nil {
			b.WriteString(" " + ev.Err.Error())
		}
	case mesh.LinkFailed, mesh.NATSDown:
		b.WriteString(" " + failureLine(ev.Event))
	}
	return strings.TrimRight(b.String(), " ")
}

// writeGone ends the line of a peer or member that came or went: only
// observes, why it went, what it did not acknowledge.
func writeGone(b *strings.Builder, ev mesh.Event) {
	if ev.Observer {
		b.WriteString(" (observer)")
	}
	if ev.Err != nil {
		b.WriteString(" (" + ev.Err.Error() + ")")
	}
	if ev.Undelivered > 0 {
		fmt.Fprintf(b, ", %d messages undelivered", ev.Undelivered)
	}
}

// writeListing prints members and services as two tables; with sites
// (--nats), each row says its site, and members of other sites are
// marked remote.
func writeListing(w io.Writer, l listingJSON) error {
	sites := slices.ContainsFunc(l.Members, func(m memberJSON) bool { return m.Site != "" }) ||
		slices.ContainsFunc(l.Services, func(s serviceJSON) bool { return s.Site != "" })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if sites {
		fmt.Fprintf(tw, "MEMBER\tSITE\tADDRESSES\n")
	} else {
		fmt.Fprintf(tw, "MEMBER\tADDRESSES\n")
	}
	if len(l.Members) == 0 {
		fmt.Fprintf(tw, "(none found)\t\n")
	}
	for _, m := range l.Members {
		addrs := strings.Join(m.Addrs, " ")
		if m.Remote {
			addrs = "(remote: over NATS)"
		}
		if sites {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.ID, m.Site, addrs)
		} else {
			fmt.Fprintf(tw, "%s\t%s\n", m.ID, addrs)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if sites {
		fmt.Fprintf(tw, "ROLE\tADDRESS\tOWNER\tSITE\n")
	} else {
		fmt.Fprintf(tw, "ROLE\tADDRESS\tOWNER\n")
	}
	if len(l.Services) == 0 {
		fmt.Fprintf(tw, "(none)\t\t\n")
	}
	for _, s := range l.Services {
		if sites {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Role, s.Addr, s.Owner, s.Site)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Role, s.Addr, s.Owner)
		}
	}
	return tw.Flush()
}
