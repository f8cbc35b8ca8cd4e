package main

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/natstest"
)

// testSites: nodes of three sites (here, nodes that do not link: no
// mDNS; only site b's two nodes link, with --connect), joined through a
// NATS server: a service run in site a is seen by join in site b with
// its site, found by query in site c (NATS from $TALLSHIP_NATS), and by
// query in site b after site b's own instance; ls lists the other
// sites' members as remote; when run stops, its service is freed in the
// other sites. Refused credentials are one line and exit 1; a server out
// of reach is one line on stderr, and the command goes on.
func testSites(t *testing.T, bin binaries) {
	const cluster = "cli-sites"
	srv := natstest.Start(t, natstest.Options{})
	url := srv.URL()
	b := tallship(t, bin, "join b", nil, "join", cluster, "--json", "--fast", "--id", "b0", "--mdns=false", "--nats", url, "--site", "b")
	_, joined, _ := b.waitEvent("joined", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "joined" })
	b.waitEvent("nats-up", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "nats-up" })
	a := tallship(t, bin, "run a", nil, "run", cluster, "api@1.0.0", "--fast", "--id", "a0", "--mdns=false", "--nats", url, "--site", "a", "--", bin.child)
	_, reg, _ := b.waitEvent("a's service", 20*time.Second, 0, serviceEvent("service-registered", "api@1.0.0", "a0"))
	if reg.Service.Site != "a" {
		t.Fatalf("b saw a's service with site %q", reg.Service.Site)
	}
	if want := "tallship run: api@1.0.0 registered at " + reg.Service.Addr + " (node a0, site a)\n"; !strings.HasPrefix(a.stderrText(), want) {
		t.Errorf("run a's first line on stderr: %q, want %q", a.stderrText(), want)
	}
	// An instance of site b, linked to b0 (site b's LAN).
	tallship(t, bin, "run b", nil, "run", cluster, "api@1.0.0", "--fast", "--id", "b1", "--mdns=false", "--connect", joined.Addrs[0], "--nats", url, "--site", "b", "--", bin.child)
	_, regB, _ := b.waitEvent("b1's service", 20*time.Second, 0, serviceEvent("service-registered", "api@1.0.0", "b1"))
	// From site b, site b's instance first (the registry's order is by
	// owner: a0 before b1).
	if addrs := query(t, bin, cluster, "api@1", "--mdns=false", "--connect", joined.Addrs[0], "--nats", url, "--site", "b"); !slices.Equal(addrs, []string{regB.Service.Addr, reg.Service.Addr}) {
		t.Errorf("query from site b: %v, want b1's %s first, then a0's %s", addrs, regB.Service.Addr, reg.Service.Addr)
	}

	q := tallship(t, bin, "query", []string{"TALLSHIP_NATS=" + url}, "query", cluster, "api@1", "--fast", "--mdns=false", "--site", "c")
	if code := q.wait(20 * time.Second); code != 0 {
		t.Fatalf("query: exit status %d: %s", code, q.stderrText())
	}
	if addrs := decodeAddrs(t, q); !slices.Equal(addrs, []string{reg.Service.Addr, regB.Service.Addr}) {
		t.Fatalf("query from site c: %v, want [%s %s]", addrs, reg.Service.Addr, regB.Service.Addr)
	}

	ls := tallship(t, bin, "ls", nil, "ls", cluster, "--json", "--fast", "--mdns=false", "--nats", url, "--site", "c")
	if code := ls.wait(20 * time.Second); code != 0 {
		t.Fatalf("ls: exit status %d: %s", code, ls.stderrText())
	}
	var l listingJSON
	if lines := ls.snapshot(); len(lines) != 1 || json.Unmarshal([]byte(lines[0].text), &l) != nil {
		t.Fatalf("ls printed %v", lines)
	}
	var members []string
	for _, m := range l.Members {
		if !m.Remote {
			t.Errorf("member %s is not marked remote", m.ID)
		}
		members = append(members, m.Site+"/"+m.ID)
	}
	if !slices.Equal(members, []string{"a/a0", "b/b0", "b/b1"}) {
		t.Errorf("ls members %v, want a/a0, b/b0 and b/b1 (not the query, an observer)", members)
	}
	var services []string
	for _, s := range l.Services {
		services = append(services, s.Site+"/"+s.Owner)
	}
	if !slices.Equal(services, []string{"a/a0", "b/b1"}) {
		t.Errorf("ls services %+v", l.Services)
	}

	// run stops: its service is freed in the other sites.
	a.signal(syscall.SIGTERM)
	if code := a.wait(10 * time.Second); code != 0 {
		t.Errorf("run a: exit status %d after SIGTERM", code)
	}
	_, freed, _ := b.waitEvent("a's service freed", 10*time.Second, 0, serviceEvent("service-freed", "api@1.0.0", "a0"))
	if freed.Service.Site != "a" {
		t.Errorf("b saw a's service freed with site %q", freed.Service.Site)
	}

	// Refused credentials: one line, exit 1.
	guarded := natstest.Start(t, natstest.Options{Token: "t0ken"})
	ref := tallship(t, bin, "ls refused", nil, "ls", cluster, "--fast", "--mdns=false", "--nats", guarded.URL(), "--nats-token", "wrong")
	if code := ref.wait(20 * time.Second); code != 1 || !strings.Contains(ref.stderrText(), "refused") || strings.Count(ref.stderrText(), "\n") != 1 {
		t.Errorf("refused token: exit %d, stderr %q", code, ref.stderrText())
	}
	// A user and password from the environment; a wrong password is
	// refused, and shows nowhere.
	locked := natstest.Start(t, natstest.Options{User: "u", Password: "right"})
	withPw := tallship(t, bin, "ls with a password", []string{"TALLSHIP_NATS_USER=u", "TALLSHIP_NATS_PASSWORD=right"}, "ls", cluster, "--fast", "--mdns=false", "--wait", "500ms", "--nats", locked.URL())
	if code := withPw.wait(20 * time.Second); code != 0 {
		t.Errorf("right password: exit %d, stderr %q", code, withPw.stderrText())
	}
	badPw := tallship(t, bin, "ls wrong password", []string{"TALLSHIP_NATS_PASSWORD=hunter2"}, "ls", cluster, "--fast", "--mdns=false", "--nats-user", "u", "--nats", locked.URL())
	if code := badPw.wait(20 * time.Second); code != 1 || strings.Contains(badPw.stderrText(), "hunter2") {
		t.Errorf("wrong password: exit %d, stderr %q", code, badPw.stderrText())
	}
	// Out of reach: said once, and ls lists what it has (nothing).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "nats://" + ln.Addr().String()
	ln.Close()
	out := tallship(t, bin, "ls unreachable", nil, "ls", cluster, "--fast", "--mdns=false", "--wait", "500ms", "--nats", nowhere)
	if code := out.wait(20 * time.Second); code != 0 || strings.Count(out.stderrText(), "cannot reach NATS") != 1 {
		t.Errorf("unreachable NATS: exit %d, stderr %q", code, out.stderrText())
	}
}
