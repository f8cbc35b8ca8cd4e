package main

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/natstest"
)

// testSites: nodes of three sites (here, nodes that do not link: no
// mDNS, no --connect), joined through a NATS server: a service run in
// site a is seen by join in site b with its site, found by query in
// site c (NATS from $TALLSHIP_NATS), and ls lists the other sites'
// members as remote. Refused credentials are one line and exit 1; a
// server out of reach is one line on stderr, and the command goes on.
func testSites(t *testing.T, bin binaries) {
	const cluster = "cli-sites"
	srv := natstest.Start(t, natstest.Options{})
	url := srv.URL()
	b := tallship(t, bin, "join b", nil, "join", cluster, "--json", "--fast", "--id", "b0", "--mdns=false", "--nats", url, "--site", "b")
	b.waitEvent("nats-up", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "nats-up" })
	tallship(t, bin, "run a", nil, "run", cluster, "api@1.0.0", "--fast", "--id", "a0", "--mdns=false", "--nats", url, "--site", "a", "--", bin.child)
	_, reg, _ := b.waitEvent("a's service", 20*time.Second, 0, serviceEvent("service-registered", "api@1.0.0", "a0"))
	if reg.Service.Site != "a" {
		t.Fatalf("b saw a's service with site %q", reg.Service.Site)
	}

	q := tallship(t, bin, "query", []string{"TALLSHIP_NATS=" + url}, "query", cluster, "api@1", "--fast", "--mdns=false", "--site", "c")
	if code := q.wait(20 * time.Second); code != 0 {
		t.Fatalf("query: exit status %d: %s", code, q.stderrText())
	}
	if addrs := decodeAddrs(t, q); len(addrs) != 1 || addrs[0] != reg.Service.Addr {
		t.Fatalf("query from site c: %v, want [%s]", addrs, reg.Service.Addr)
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
	if !slices.Equal(members, []string{"a/a0", "b/b0"}) {
		t.Errorf("ls members %v, want a/a0 and b/b0 (not the query, an observer)", members)
	}
	if len(l.Services) != 1 || l.Services[0].Site != "a" || l.Services[0].Owner != "a0" {
		t.Errorf("ls services %+v", l.Services)
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
