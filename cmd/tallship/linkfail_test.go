package main

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// testLinkFailed: a failed link is one line on stderr, at the default log
// level, on both ends; ls and query whose --connect addresses all failed
// exit 1 naming the reason.
func testLinkFailed(t *testing.T, bin binaries) {
	const cluster = "cli-refused"
	a := tallship(t, bin, "join a", nil, "join", cluster, "--json", "--fast", "--id", "a", "--secret", "right",
		"--mdns=false", "--listen", "127.0.0.1:0")
	_, joined, _ := a.waitEvent("joined event", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "joined" })
	if len(joined.Addrs) == 0 {
		t.Fatalf("joined event has no address: %+v", joined)
	}
	addr := joined.Addrs[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name string
		args []string
		why  string
	}{
		{"ls, wrong secret", []string{"ls", cluster, "--connect", addr, "--secret", "wrong"}, "wrong cluster secret"},
		{"ls, no secret", []string{"ls", cluster, "--connect", addr}, "wrong cluster secret"},
		{"ls, wrong cluster", []string{"ls", "other", "--connect", addr, "--secret", "right"}, "wrong cluster"},
		{"ls, unreachable", []string{"ls", cluster, "--connect", closed, "--secret", "right"}, "unreachable (connection refused)"},
		{"query, wrong secret", []string{"query", cluster, "web", "--connect", addr, "--secret", "wrong", "--settle", "700ms"}, "wrong cluster secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.args, "--fast", "--mdns=false")
			if tc.args[0] == "ls" {
				args = append(args, "--wait", "700ms")
			}
			p := tallship(t, bin, tc.name, nil, args...)
			if code := p.wait(15 * time.Second); code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			lines := strings.Split(strings.TrimSuffix(p.stderrText(), "\n"), "\n")
			prefix := "tallship " + tc.args[0] + ": "
			event := prefix + "link failed: " + tc.why + ": "
			final := prefix + "linked with no node: link failed: " + tc.why + ": "
			if len(lines) != 2 || !strings.HasPrefix(lines[0], event) || !strings.HasPrefix(lines[1], final) {
				t.Errorf("stderr:\n%s\nwant two lines, starting %q and %q", strings.Join(lines, "\n"), event, final)
			}
			if out := p.snapshot(); len(out) != 0 {
				t.Errorf("stdout not empty: %v", out)
			}
		})
	}

	// join keeps running, and so does its peer; each says on stderr why
	// they did not link, once, however often the dial is tried.
	// b's library log (Debug) shows its retries.
	aBefore := len(a.stderrText()) // the lines of the cases above
	b := tallship(t, bin, "join b", nil, "join", cluster, "--fast", "--id", "b", "--secret", "wrong", "--mdns=false", "--connect", addr,
		"--log-level", "debug")
	waitStderr(t, b, "b's line", "tallship join: link failed: wrong cluster secret: mesh: link to "+addr, "")
	// (a cannot name b: an id is taken only from a peer proven to know the
	// secret; the address names it. Its line may be from a case above,
	// from the same address for the same reason.)
	waitStderr(t, a, "a's line about b", `tallship join: link failed: wrong cluster secret: mesh: link from 127.0.0.1:`, "")
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(b.stderrText(), `msg="link failed again: wrong cluster secret"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("b did not retry its dial twice within 10 s:\n%s", b.stderrText())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !b.running() || !a.running() {
		t.Fatalf("join exited on a refused link")
	}
	if n := strings.Count(b.stderrText(), "tallship join: link failed"); n != 1 {
		t.Errorf("b: %d lines of failed links, want 1:\n%s", n, b.stderrText())
	}
	// a knows its callers by address here (one, for every case above and
	// b): b's tries add at most the one line of a change of reason.
	if n := strings.Count(a.stderrText()[aBefore:], "tallship join: link failed"); n > 1 {
		t.Errorf("a: %d lines of b's failed links, want at most 1:\n%s", n, a.stderrText())
	}
}

// A failed link's line names the reason first, then the peer when the
// node knew it; the dashboard's log shows the same after the time.
func TestFailureLine(t *testing.T) {
	at := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	ev := mesh.Event{Kind: mesh.LinkFailed, Time: at, Peer: "b", Addrs: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:7946")},
		Err: errors.New("link failed: wrong cluster: mesh: link to 10.0.0.2:7946: transport: wrong cluster")}
	want := `link failed: wrong cluster: mesh: link to 10.0.0.2:7946: transport: wrong cluster (peer "b")`
	if got := failureLine(ev); got != want {
		t.Errorf("line %q, want %q", got, want)
	}
	if got, want := eventLine(event{Event: ev}), "01:02:03.000 link-failed        "+want; got != want {
		t.Errorf("dashboard's line %q, want %q", got, want)
	}
}

// waitStderr waits for a line of p's stderr that starts with prefix and
// ends with suffix.
func waitStderr(t *testing.T, p *proc, what, prefix, suffix string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range strings.Split(p.stderrText(), "\n") {
			if strings.HasPrefix(l, prefix) && strings.HasSuffix(l, suffix) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s printed no %s on stderr (a line starting %q):\n%s", p.name, what, prefix, p.stderrText())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
