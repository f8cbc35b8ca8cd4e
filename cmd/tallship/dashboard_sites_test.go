package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tallship-go/tallship/internal/testutil/natstest"
)

// testSitesDashboard: join b0 of site b serves the dashboard; nodes of
// site a (two) and site c (one) join the cluster through the same NATS
// server (none links: no mDNS, no --connect), and a0 runs a service.
// b0's /api/members and its page show its site, NATS up with the
// server's URL, and the other sites' members, marked remote and grouped
// under their site, beside b0's own mesh (the graph: b0 alone); the
// service's row and log line say a0's site. When NATS goes, the page
// says so and the other sites' members and service go; when it comes
// back, so do they, without a reload. Without chromium the page is not
// checked, and the test skips at the end, saying so.
func testSitesDashboard(t *testing.T, bin binaries) {
	const cluster = "dash-sites"
	srv := natstest.Start(t, natstest.Options{})
	url := srv.URL()
	member := func(id, site string, args ...string) *proc {
		return tallship(t, bin, id, nil, slices.Concat([]string{args[0], cluster, "--fast", "--id", id, "--mdns=false", "--nats", url, "--site", site},
			args[1:])...)
	}
	b0 := member("b0", "b", "join", "--json", "--http", "127.0.0.1:0")
	page := dashboardLine(t, b0)
	member("a1", "a", "join")
	member("c0", "c", "join")
	member("a0", "a", "run", "api@1.0.0", "--", bin.child)

	// The JSON: members as site/id, marked remote.
	sites := func(connected bool, members ...string) func(membersJSON) bool {
		return func(m membersJSON) bool {
			var got []string
			for _, v := range m.Members {
				s := v.Site + "/" + v.ID
				if v.Remote {
					s += " remote"
				}
				got = append(got, s)
			}
			return slices.Equal(got, members) && m.NATS != nil && m.NATS.Connected == connected
		}
	}
	all := []string{"b/b0", "a/a0 remote", "a/a1 remote", "c/c0 remote"}
	m := waitMembersAre(t, page, fmt.Sprintf("NATS up, members %v", all), sites(true, all...))
	if m.Site != "b" || m.NATS.URL != url || len(m.Links) != 0 || !m.Members[0].Self {
		t.Errorf("b0's /api/members: site %q, NATS %+v, links %v, first member %+v; want site b, %s, no link, b0 itself",
			m.Site, *m.NATS, m.Links, m.Members[0], url)
	}
	for _, v := range m.Members[1:] {
		if len(v.Addrs) != 0 || v.Direct || v.Reports {
			t.Errorf("remote member %+v: want no address, no link, no report", v)
		}
	}
	svc := waitServices(t, page, "api")
	if len(svc.Services) != 1 || svc.Services[0].Owner != "a0" || svc.Services[0].Site != "a" {
		t.Fatalf("/api/services?q=api: %+v, want api@1.0.0 of a0, site a", svc)
	}
	addr := svc.Services[0].Addr

	chromium, why := findChromium()
	var b *browser
	var shots string
	if chromium != "" {
		shots = artifacts(t)
		b = startBrowser(t, chromium, page, 1280, 760)
		b.waitPage("the other sites' members", func(p pageState) bool {
			return p.Site == "site b" && p.NATS == "NATS "+url && strings.Contains(p.NATSClass, "live") &&
				slices.Equal(p.Nodes, []string{"b0"}) && len(p.Edges) == 0 &&
				slices.Equal(rowKeys(p), []string{"b0this node|b", "a0remote|a|over NATS, not linked", "a1remote|a|over NATS, not linked", "c0remote|c|over NATS, not linked"}) &&
				slices.Equal(p.Groups, []string{"site a · another site, over NATS", "site c · another site, over NATS"}) &&
				p.Counts == "1 node, 0 links; 3 in 2 other sites" &&
				slices.ContainsFunc(p.Services, func(r []string) bool { return slices.Equal(r, []string{"api", "1.0.0", addr, "a0 (a)"}) }) &&
				slices.ContainsFunc(p.Log, func(s string) bool {
					return strings.Contains(strings.Join(strings.Fields(s), " "), "service-registered api@1.0.0 "+addr+" owner a0 (site a)")
				})
		})
		if err := b.screenshot(filepath.Join(shots, "dashboard-sites.png")); err != nil {
			t.Errorf("screenshot: %v", err)
		}
		if err := b.eval("window.__tallshipMark = 42", nil); err != nil {
			t.Fatal(err)
		}
	}

	// NATS goes: the page says so; the other sites' members and records
	// expire.
	srv.Stop()
	m = waitMembersAre(t, page, "NATS down, b0 alone", sites(false, "b/b0"))
	if m.NATS.URL != "" {
		t.Errorf("NATS down, and its URL still %q", m.NATS.URL)
	}
	if b != nil {
		b.waitPage("NATS down, the other sites gone", func(p pageState) bool {
			return p.NATS == "NATS down" && strings.Contains(p.NATSClass, "down") &&
				slices.Equal(p.Rows, []string{"b0"}) && len(p.Groups) == 0 && len(p.Services) == 0 &&
				slices.ContainsFunc(p.Log, func(s string) bool { return strings.Contains(s, "nats-down") })
		})
		if err := b.screenshot(filepath.Join(shots, "dashboard-sites-nats-down.png")); err != nil {
			t.Errorf("screenshot: %v", err)
		}
	}

	// It comes back: so do they.
	srv.Restart()
	waitMembersAre(t, page, fmt.Sprintf("NATS up again, members %v", all), sites(true, all...))
	if b == nil {
		t.Skipf("the page was not checked in a browser: %s", why)
	}
	p := b.waitPage("the other sites back", func(p pageState) bool {
		return p.NATS == "NATS "+url && slices.Equal(p.Rows, []string{"a0", "a1", "b0", "c0"}) && len(p.Services) == 1 &&
			slices.ContainsFunc(p.Log, func(s string) bool { return strings.Contains(s, "nats-up") })
	})
	if !p.Marked {
		t.Errorf("the page was reloaded")
	}
}

// rowKeys are the nodes table's rows as "id|site", and "|addresses" for
// the members of other sites.
func rowKeys(p pageState) []string {
	var keys []string
	for _, r := range p.NodeRows {
		if len(r) < 3 {
			keys = append(keys, strings.Join(r, "|"))
			continue
		}
		k := r[0] + "|" + r[1]
		if strings.Contains(r[0], "remote") {
			k += "|" + r[2]
		}
		keys = append(keys, k)
	}
	return keys
}
