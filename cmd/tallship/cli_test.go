package main

import (
	"bufio"
	"encoding/json"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// The tests build the real binary and run it as separate processes, inside
// the private network namespace netns.Main made (the processes inherit
// it), so their mDNS stays on its loopback. Each test uses a cluster of
// its own; every node runs with --fast (mesh.LocalConfig's timers).

func TestMain(m *testing.M) { netns.Main(m) }

func TestCLI(t *testing.T) {
	netns.Require(t)
	bin := build(t)
	t.Run("errors", func(t *testing.T) { t.Parallel(); testErrors(t, bin) })
	t.Run("help", func(t *testing.T) { t.Parallel(); testHelp(t, bin) })
	t.Run("version", func(t *testing.T) { t.Parallel(); testVersion(t, bin) })
	t.Run("run restarts on one port, SIGTERM frees", func(t *testing.T) { t.Parallel(); testRunRestartAndFree(t, bin) })
	t.Run("query --wait before run", func(t *testing.T) { t.Parallel(); testQueryWait(t, bin) })
	t.Run("ls from a third process", func(t *testing.T) { t.Parallel(); testLs(t, bin) })
	t.Run("secret", func(t *testing.T) { t.Parallel(); testSecret(t, bin) })
	t.Run("duplicate id", func(t *testing.T) { t.Parallel(); testDuplicateID(t, bin) })
	t.Run("failed links", func(t *testing.T) { t.Parallel(); testLinkFailed(t, bin) })
	t.Run("sites through NATS", func(t *testing.T) { t.Parallel(); testSites(t, bin) })
	t.Run("sites on the dashboard", func(t *testing.T) { t.Parallel(); testSitesDashboard(t, bin) })
}

// tallship starts the CLI with args.
func tallship(t *testing.T, bin binaries, name string, env []string, args ...string) *proc {
	t.Helper()
	return startProc(t, name, env, bin.tallship, args...)
}

// joinObserver starts "tallship join --json" with the id and waits for
// its first line.
func joinObserver(t *testing.T, bin binaries, cluster, id string) *proc {
	t.Helper()
	p := tallship(t, bin, "join "+id, nil, "join", cluster, "--json", "--fast", "--id", id)
	p.waitEvent("joined event", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "joined" && e.ID == id })
	return p
}

// serviceEvent matches a join --json event of kind for role owned by owner.
func serviceEvent(kind, role, owner string) func(eventJSON) bool {
	return func(e eventJSON) bool {
		return e.Event == kind && e.Service != nil && e.Service.Role == role && e.Service.Owner == owner
	}
}

// query runs "tallship query" to the end and returns the addresses it
// printed.
func query(t *testing.T, bin binaries, args ...string) []string {
	t.Helper()
	q := tallship(t, bin, "query", nil, append([]string{"query", "--fast"}, args...)...)
	if code := q.wait(20 * time.Second); code != 0 {
		t.Fatalf("query %q: exit status %d: %s", args, code, q.stderrText())
	}
	return decodeAddrs(t, q)
}

func decodeAddrs(t *testing.T, q *proc) []string {
	t.Helper()
	lines := q.snapshot()
	if len(lines) != 1 {
		t.Fatalf("query printed %d lines, want 1: %v", len(lines), lines)
	}
	var addrs []string
	if err := json.Unmarshal([]byte(lines[0].text), &addrs); err != nil || addrs == nil {
		t.Fatalf("query printed %q, not a JSON array: %v", lines[0].text, err)
	}
	return addrs
}

// testErrors: a bad role, a bad range, an unknown flag and the other
// mistakes print one line on stderr, nothing on stdout, and exit non-zero.
func testErrors(t *testing.T, bin binaries) {
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"bad role version", nil, []string{"run", "c", "web@x.y", "--", bin.child}, 2, `bad role "web@x.y": version "x.y": invalid semantic version (want ROLE@VERSION, e.g. web@1.0.0)`},
		{"bad role name", nil, []string{"run", "c", "we b@1.0.0", "--", bin.child}, 2, "bad role"},
		{"role without version", nil, []string{"run", "c", "web", "--", bin.child}, 2, `bad role "web": no version (want ROLE@VERSION, e.g. web@1.0.0)`},
		{"role without name", nil, []string{"run", "c", "@1.0.0", "--", bin.child}, 2, `bad role "@1.0.0": empty name (want ROLE@VERSION, e.g. web@1.0.0)`},
		{"bad range", nil, []string{"query", "c", "web@>>1"}, 2, `bad query "web@>>1"`},
		{"empty range", nil, []string{"query", "c", "web@"}, 2, "empty version range"},
		{"bad query name", nil, []string{"query", "c", "we/b@1"}, 2, `bad query "we/b@1"`},
		{"unknown flag", nil, []string{"ls", "c", "--frobnicate"}, 2, "unknown flag --frobnicate"},
		{"unknown flag before --", nil, []string{"run", "c", "web@1.0.0", "--frobnicate", "--", bin.child}, 2, "unknown flag --frobnicate"},
		{"flag without value", nil, []string{"ls", "c", "--wait"}, 2, "flag needs an argument: --wait"},
		{"bad duration", nil, []string{"query", "c", "web", "--timeout", "soon"}, 2, `invalid value "soon" for flag --timeout: want a duration such as 500ms`},
		{"bad boolean", nil, []string{"ls", "c", "--mdns=maybe"}, 2, `invalid value "maybe" for flag --mdns: want true or false (see tallship ls --help)`},
		{"bad number", nil, []string{"run", "c", "web@1.0.0", "--port", "http", "--", bin.child}, 2, `invalid value "http" for flag --port: want a whole number`},
		{"number out of range", nil, []string{"run", "c", "web@1.0.0", "--port=99999999999999999999", "--", bin.child}, 2, `invalid value "99999999999999999999" for flag --port: value out of range`},
		{"one-dash flag without value", nil, []string{"ls", "c", "-listen"}, 2, "flag needs an argument: --listen"},
		{"one-dash unknown flag", nil, []string{"ls", "c", "-frob"}, 2, "unknown flag --frob"},
		{"bad log level", nil, []string{"join", "c", "--log-level", "loud"}, 2, "--log-level"},
		{"unknown command", nil, []string{"frob"}, 2, `unknown command "frob"`},
		{"no command", nil, nil, 2, "no command"},
		{"missing cluster", nil, []string{"ls"}, 2, "missing CLUSTER"},
		{"missing role", nil, []string{"query", "c"}, 2, "missing ROLE"},
		{"missing command", nil, []string{"run", "c", "web@1.0.0"}, 2, "missing CMD"},
		{"bad metadata", nil, []string{"run", "c", "web@1.0.0", "--meta", "zone", "--", bin.child}, 2, `--meta "zone": want KEY=VALUE`},
		{"unknown interface", nil, []string{"ls", "c", "--interface", "nosuch0"}, 2, `--interface "nosuch0"`},
		{"bad advertised address", nil, []string{"ls", "c", "--advertise", "10.0.0.1"}, 2, `--advertise "10.0.0.1": want ip:port`},
		{"bad DNS server", nil, []string{"ls", "c", "--dns", "tallship.service.consul", "--dns-server", "not an address"}, 2, `--dns-server "not an address": want ip[:port]`},
		{"bad cluster name", nil, []string{"join", "bad cluster name!"}, 2, `tallship join: bad cluster name "bad cluster name!": space ' ' at byte 3; want 1 to 4096 bytes of UTF-8 letters, digits, punctuation or symbols, no spaces or control characters`},
		{"empty cluster name", nil, []string{"ls", ""}, 2, "tallship ls: empty cluster name; want 1 to 4096 bytes"},
		{"bad cluster name before --http", nil, []string{"ui", "a\tb", "--http", "127.0.0.1:0"}, 2, `bad cluster name "a\tb": space '\t' at byte 1`},
		{"bad cluster name in query", nil, []string{"query", "a b", "web"}, 2, `bad cluster name "a b"`},
		{"bad cluster name in run", nil, []string{"run", "a b", "web@1.0.0", "--", bin.child}, 2, `bad cluster name "a b"`},
		{"extra argument", nil, []string{"join", "c", "d"}, 2, `unexpected argument "d"`},
		{"bad site", nil, []string{"ls", "c", "--site", "a b"}, 2, `--site "a b"`},
		{"bad NATS URL", []string{"TALLSHIP_NATS=nats://[::1"}, []string{"ls", "c"}, 1, "NATS"},
		{"NATS cert without key", nil, []string{"ls", "c", "--nats", "nats://127.0.0.1:1", "--nats-cert", "x.pem"}, 2, "--nats-cert and --nats-key go together"},
		{"command not found", nil, []string{"run", "c", "web@1.0.0", "--", "/nonexistent/server"}, 1, "/nonexistent/server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tallship(t, bin, "tallship", tc.env, tc.args...)
			code := p.wait(10 * time.Second)
			stderr := p.stderrText()
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasSuffix(stderr, "\n") {
				t.Errorf("stderr is %d lines, want one: %q", len(lines), stderr)
			}
			if !strings.Contains(stderr, tc.want) || !strings.HasPrefix(stderr, "tallship") {
				t.Errorf("stderr %q, want it to start with tallship and contain %q", stderr, tc.want)
			}
			if out := p.snapshot(); len(out) != 0 {
				t.Errorf("stdout not empty: %v", out)
			}
			if m := oneDashFlag.FindString(stderr); m != "" {
				t.Errorf("stderr %q names a flag with one dash (%q); the help shows --name", stderr, m)
			}
		})
	}
}

// oneDashFlag finds a flag named with one dash, as the flag package names
// them.
var oneDashFlag = regexp.MustCompile(`(^|[ ":(])-[a-z][a-z-]*`)

// testHelp: --help on every command prints its usage on stdout and exits 0.
func testHelp(t *testing.T, bin binaries) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "Usage:\n  tallship join CLUSTER"},
		{[]string{"help", "run"}, "Usage: tallship run CLUSTER ROLE@VERSION [flags] -- CMD"},
		{[]string{"join", "--help"}, "Usage: tallship join CLUSTER"},
		{[]string{"ls", "--help"}, "Usage: tallship ls CLUSTER"},
		{[]string{"query", "-h"}, "Usage: tallship query CLUSTER ROLE[@RANGE]"},
		{[]string{"run", "--help"}, "  --backoff DURATION"},
		{[]string{"run", "--help"}, "Usage: tallship run CLUSTER ROLE@VERSION [flags] -- CMD [ARGS...]\n"},
		{[]string{"ls", "--help"}, "  --mdns\n      find peers over mDNS (--mdns=false: only --connect addresses)\n      (default true)\n"},
		{[]string{"--help"}, "  tallship version\n      print the version"},
		{[]string{"version", "--help"}, "Usage: tallship version\n\nPrint the version of tallship"},
	} {
		args := tc.args
		p := tallship(t, bin, "tallship", nil, args...)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Errorf("%q: exit status %d", args, code)
		}
		var out strings.Builder
		for _, l := range p.snapshot() {
			out.WriteString(l.text + "\n")
		}
		text := out.String()
		if !strings.Contains(text, tc.want) || p.stderrText() != "" {
			t.Errorf("%q: stdout %q, stderr %q; want %q on stdout only", args, text, p.stderrText(), tc.want)
		}
		if strings.Contains(text, "--fast") {
			t.Errorf("%q: the hidden --fast flag is shown", args)
		}
	}
	// Every help fits 79 columns, words whole, and names flags "--name".
	helps := [][]string{{"--help"}}
	for _, c := range commands {
		helps = append(helps, []string{c.name, "--help"})
	}
	for _, args := range helps {
		p := tallship(t, bin, "tallship", nil, args...)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Errorf("%q: exit status %d", args, code)
		}
		lines := p.snapshot()
		if len(lines) < 3 {
			t.Errorf("%q printed %d lines", args, len(lines))
		}
		for _, l := range lines {
			if n := utf8.RuneCountInString(l.text); n > 79 {
				t.Errorf("%q: a line of %d columns: %q", args, n, l.text)
			}
			if strings.HasSuffix(l.text, " ") || strings.Contains(l.text, "\x00") {
				t.Errorf("%q: a trailing space or a NUL in %q", args, l.text)
			}
			if m := oneDashFlag.FindString(l.text); m != "" && !strings.Contains(l.text, "tallship COMMAND") {
				t.Errorf("%q: a flag with one dash (%q) in %q", args, m, l.text)
			}
		}
	}
}

// testRunRestartAndFree: a command that exits after 1 s is restarted on
// the same port, and query shows that one host:port the whole time; SIGTERM
// to run is forwarded to the command and frees the service on another node
// at once.
func testRunRestartAndFree(t *testing.T, bin binaries) {
	const cluster, role = "cli-run", "web@1.0.0"
	obs := joinObserver(t, bin, cluster, "obs")
	run := tallship(t, bin, "run", []string{"CHILD_EXIT_AFTER=1s"},
		"run", cluster, role, "--fast", "--id", "runner", "--backoff", "100ms", "--", bin.child)
	_, reg, _ := obs.waitEvent("registration", 10*time.Second, 0, serviceEvent("service-registered", role, "runner"))
	addr := reg.Service.Addr
	port := strconv.Itoa(reg.Service.Port)

	// Query while the command exits and restarts, until it started three
	// times: every answer is that one address.
	serving := func(s string) bool { return strings.HasPrefix(s, "child serving") }
	deadline := time.Now().Add(20 * time.Second)
	queries := 0
	var pids []string
	for {
		pids = pids[:0]
		for _, l := range run.snapshot() {
			if !serving(l.text) {
				continue
			}
			f := fieldsOf(l.text)
			if f["port"] != port {
				t.Fatalf("the command was started with port %s, the service has %s: %q", f["port"], port, l.text)
			}
			pids = append(pids, f["pid"])
		}
		if len(pids) >= 3 && queries >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %d starts of the command, %d queries", len(pids), queries)
		}
		if got := query(t, bin, cluster, "web"); !slices.Equal(got, []string{addr}) {
			t.Fatalf("query %d printed %q, want [%q]", queries, got, addr)
		}
		queries++
	}
	if uniq := slices.Compact(slices.Sorted(slices.Values(pids))); len(uniq) != len(pids) {
		t.Errorf("the command was not restarted: pids %v", pids)
	}
	t.Logf("%d starts of the command (pids %v) on port %s; %d queries all answered [%q]", len(pids), pids, port, queries, addr)

	// A client using the answer reaches the restarted command.
	reply := dialUntil(t, addr, 5*time.Second)
	if f := fieldsOf(reply); f["port"] != port || f["pid"] == "" {
		t.Errorf("the service at %s answered %q", addr, reply)
	}

	// SIGTERM right after a start, so that a command runs to get it.
	from := len(run.snapshot())
	_, started := run.waitLine("a new start", 5*time.Second, from, serving)
	childPid := fieldsOf(started.text)["pid"]
	mark := len(obs.snapshot())
	for _, l := range obs.snapshot() {
		var e eventJSON
		if json.Unmarshal([]byte(l.text), &e) == nil && e.Event == "service-freed" {
			t.Fatalf("the service was freed before SIGTERM: %s", l.text)
		}
	}
	sent := time.Now()
	run.signal(syscall.SIGTERM)
	_, freed, seen := obs.waitEvent("free event", 5*time.Second, mark, serviceEvent("service-freed", role, "runner"))
	eventAfter, seenAfter := freed.Time.Sub(sent), seen.Sub(sent)
	t.Logf("SIGTERM to run → service-freed on the other node: %v (event time), %v (read by the test)", eventAfter, seenAfter)
	if eventAfter > 100*time.Millisecond {
		t.Errorf("the free reached the other node %v after SIGTERM, want ≤ 100 ms", eventAfter)
	}
	if freed.Service.Addr != addr {
		t.Errorf("freed %s, registered %s", freed.Service.Addr, addr)
	}
	run.waitLine("the command's stop", 5*time.Second, from, func(s string) bool {
		return s == "child stopping pid="+childPid+" on terminated"
	})
	if code := run.wait(10 * time.Second); code != 0 {
		t.Errorf("run exited with status %d after SIGTERM, want 0", code)
	}
	t.Logf("run exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if got := query(t, bin, cluster, "web"); len(got) != 0 {
		t.Errorf("query after run stopped printed %q, want []", got)
	}
}

// testQueryWait: query --wait started before run returns as soon as the
// service appears; without a service it gives up after --timeout.
func testQueryWait(t *testing.T, bin binaries) {
	const cluster = "cli-wait"
	obs := joinObserver(t, bin, cluster, "obs")
	q := tallship(t, bin, "query --wait", nil, "query", cluster, "web@^1.2", "--wait", "--timeout", "30s", "--fast", "--id", "q")
	// The query's node is in the mesh, waiting, before the service starts.
	obs.waitEvent("the query node", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "peer-synced" && e.Peer == "q" })
	if !q.running() {
		t.Fatalf("query --wait exited before the service existed: %v", q.snapshot())
	}
	tallship(t, bin, "run", nil, "run", cluster, "web@1.2.0", "--fast", "--id", "r", "--", bin.child)
	_, reg, _ := obs.waitEvent("registration", 10*time.Second, 0, serviceEvent("service-registered", "web@1.2.0", "r"))
	_, answer := q.waitLine("its answer", 10*time.Second, 0, func(string) bool { return true })
	if code := q.wait(10 * time.Second); code != 0 {
		t.Fatalf("query --wait: exit status %d: %s", code, q.stderrText())
	}
	if got := decodeAddrs(t, q); !slices.Equal(got, []string{reg.Service.Addr}) {
		t.Errorf("query --wait printed %q, want [%q]", got, reg.Service.Addr)
	}
	after := answer.at.Sub(reg.Time)
	t.Logf("query --wait printed its answer %v after the observer saw the registration (< 0: the query's node saw it first)", after)
	if after > time.Second {
		t.Errorf("query --wait answered %v after the service appeared, want well under 1 s", after)
	}

	// No instance of the range: --timeout gives up with one line.
	start := time.Now()
	none := tallship(t, bin, "query --wait none", nil, "query", cluster, "web@^2", "--wait", "--timeout", "300ms", "--fast")
	if code := none.wait(10 * time.Second); code != 1 {
		t.Errorf("query --wait with no instance: exit status %d, want 1", code)
	}
	if s := none.stderrText(); !strings.Contains(s, "no instance of web@^2 within 300ms") || strings.Count(s, "\n") != 1 {
		t.Errorf("query --wait with no instance: stderr %q", s)
	}
	t.Logf("query --wait --timeout 300ms with no instance exited after %v", time.Since(start).Round(time.Millisecond))
}

// testLs: ls --json from a third process lists both nodes and the service;
// join prints readable lines; ls prints tables.
func testLs(t *testing.T, bin binaries) {
	const cluster = "cli-ls"
	a := tallship(t, bin, "join a", nil, "join", cluster, "--fast", "--id", "a")
	tallship(t, bin, "run", nil, "run", cluster, "api@2.1.0", "--fast", "--id", "r", "--meta", "zone=a", "--", bin.child)
	a.waitLine("peer-up of r", 10*time.Second, 0, func(s string) bool { return strings.Contains(s, " peer-up ") && strings.Contains(s, " r 127.0.0.1:") })
	_, reg := a.waitLine("registration", 10*time.Second, 0, func(s string) bool {
		return strings.Contains(s, " service-registered ") && strings.Contains(s, " api@2.1.0 ") && strings.HasSuffix(s, " owner r")
	})
	f := strings.Fields(reg.text)
	addr := f[len(f)-3]

	start := time.Now()
	ls := tallship(t, bin, "ls --json", nil, "ls", cluster, "--json", "--fast")
	if code := ls.wait(20 * time.Second); code != 0 {
		t.Fatalf("ls --json: exit status %d: %s", code, ls.stderrText())
	}
	t.Logf("ls --json took %v", time.Since(start).Round(time.Millisecond))
	lines := ls.snapshot()
	if len(lines) != 1 {
		t.Fatalf("ls --json printed %d lines, want 1", len(lines))
	}
	var l listingJSON
	if err := json.Unmarshal([]byte(lines[0].text), &l); err != nil {
		t.Fatalf("ls --json printed %q: %v", lines[0].text, err)
	}
	var ids []string
	for _, m := range l.Members {
		ids = append(ids, m.ID)
		if len(m.Addrs) == 0 {
			t.Errorf("member %s has no address", m.ID)
		}
	}
	if l.Cluster != cluster || !slices.Equal(ids, []string{"a", "r"}) {
		t.Errorf("ls --json: cluster %q, members %v; want %q, [a r]", l.Cluster, ids, cluster)
	}
	if len(l.Services) != 1 {
		t.Fatalf("ls --json: services %+v, want one", l.Services)
	}
	if s := l.Services[0]; s.Role != "api@2.1.0" || s.Name != "api" || s.Version != "2.1.0" || s.Owner != "r" || s.Addr != addr || s.Meta["zone"] != "a" ||
		net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) != addr {
		t.Errorf("ls --json: service %+v, want api@2.1.0 at %s owned by r", s, addr)
	}

	table := tallship(t, bin, "ls", nil, "ls", cluster, "--fast")
	if code := table.wait(20 * time.Second); code != 0 {
		t.Fatalf("ls: exit status %d: %s", code, table.stderrText())
	}
	var rows [][]string
	for _, l := range table.snapshot() {
		rows = append(rows, strings.Fields(l.text))
	}
	want := [][]string{{"api@2.1.0", addr, "r"}, {"ROLE", "ADDRESS", "OWNER"}, {"MEMBER", "ADDRESSES"}}
	for _, w := range want {
		if !slices.ContainsFunc(rows, func(r []string) bool { return slices.Equal(r, w) }) {
			t.Errorf("ls printed no row %q:\n%v", w, rows)
		}
	}

	// The two ls were observers: join printed them as such, and no other
	// peer came but r.
	observers := 0
	for _, l := range a.snapshot() {
		if !strings.Contains(l.text, " peer-up ") || strings.Contains(l.text, " r 127.0.0.1:") {
			continue
		}
		if !strings.HasSuffix(l.text, " (observer)") {
			t.Errorf("join printed a peer-up not marked observer: %q", l.text)
		}
		observers++
	}
	if observers != 2 {
		t.Errorf("join printed %d observers' peer-ups, want the two ls", observers)
	}
}

// listing runs "tallship ls --json" to the end and returns its members'
// ids.
func listing(t *testing.T, bin binaries, env []string, args ...string) []string {
	t.Helper()
	ls := tallship(t, bin, "ls --json", env, append([]string{"ls", "--json", "--fast"}, args...)...)
	if code := ls.wait(20 * time.Second); code != 0 {
		t.Fatalf("ls %q: exit status %d: %s", args, code, ls.stderrText())
	}
	lines := ls.snapshot()
	var l listingJSON
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0].text), &l) != nil {
		t.Fatalf("ls --json printed %v", lines)
	}
	ids := []string{}
	for _, m := range l.Members {
		ids = append(ids, m.ID)
	}
	return ids
}

// testSecret: nodes that share the secret, from --secret or
// $TALLSHIP_SECRET, link; one with another secret or none does not.
func testSecret(t *testing.T, bin binaries) {
	const cluster = "cli-secret"
	a := tallship(t, bin, "join a", nil, "join", cluster, "--json", "--fast", "--id", "a", "--secret", "s3cret")
	a.waitEvent("joined event", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "joined" })
	if ids := listing(t, bin, []string{"TALLSHIP_SECRET=s3cret"}, cluster, "--id", "good"); !slices.Equal(ids, []string{"a"}) {
		t.Errorf("ls with the secret from $TALLSHIP_SECRET: members %v, want [a]", ids)
	}
	// Absence can only be checked for a while: each ls waits its --wait.
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"another secret", nil, []string{"--secret", "guess", "--id", "wrong"}},
		{"no secret", nil, []string{"--id", "none"}},
	} {
		if ids := listing(t, bin, tc.env, append([]string{cluster, "--wait", "700ms"}, tc.args...)...); len(ids) != 0 {
			t.Errorf("ls with %s: members %v, want none", tc.name, ids)
		}
	}
	for _, l := range a.snapshot() {
		var e eventJSON
		if json.Unmarshal([]byte(l.text), &e) == nil && e.Event == "peer-up" && e.Peer != "good" {
			t.Errorf("a linked with %s, which lacks the secret", e.Peer)
		}
	}
	if !slices.ContainsFunc(a.snapshot(), func(l line) bool { return strings.Contains(l.text, `"event":"peer-up","peer":"good"`) }) {
		t.Errorf("a never linked with the ls node that has the secret")
	}
}

// testDuplicateID: a node whose id a live node of the cluster already has
// fails: mDNS finds the holder, and its peers refuse it; join, query --wait
// and ls then exit 1 with the reason on one line, run after its status
// lines.
func testDuplicateID(t *testing.T, bin binaries) {
	const cluster = "cli-dup"
	x := joinObserver(t, bin, cluster, "x")
	dup := tallship(t, bin, "join dup", nil, "join", cluster, "--fast", "--id", "dup")
	x.waitEvent("peer-up of dup", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "peer-up" && e.Peer == "dup" })
	// "joined" comes once mDNS has claimed the id: dup holds it from then.
	dup.waitLine("dup joined", 10*time.Second, 0, func(s string) bool { return strings.Contains(s, "joined") })
	for _, args := range [][]string{
		{"join", cluster, "--fast", "--id", "dup"},
		{"query", cluster, "web", "--wait", "--fast", "--id", "dup"},
		{"ls", cluster, "--fast", "--id", "dup"},
	} {
		p := tallship(t, bin, args[0]+" dup", nil, args...)
		start := time.Now()
		if code := p.wait(15 * time.Second); code != 1 {
			t.Errorf("%s with a live duplicate id: exit status %d, want 1", args[0], code)
		}
		stderr := p.stderrText()
		if !saysIDTaken(stderr) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s with a live duplicate id: stderr %q, want one line saying the id is taken", args[0], stderr)
		}
		t.Logf("%s with a live duplicate id exited after %v", args[0], time.Since(start).Round(time.Millisecond))
	}
	// run stops its command and exits 1; its status lines precede the error.
	run := tallship(t, bin, "run dup", nil, "run", cluster, "web@1.0.0", "--fast", "--id", "dup", "--", bin.child)
	if code := run.wait(15 * time.Second); code != 1 {
		t.Errorf("run with a live duplicate id: exit status %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(run.stderrText()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "tallship run: ") || !saysIDTaken(last) {
		t.Errorf("run with a live duplicate id: last line on stderr %q", last)
	}
	for _, l := range run.snapshot() {
		if strings.HasPrefix(l.text, "child serving") {
			run.waitLine("the command's stop", time.Second, 0, func(s string) bool { return strings.HasPrefix(s, "child stopping") })
		}
	}
}

// fieldsOf parses the key=value words of a line.
func fieldsOf(s string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(s) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}

// dialUntil dials addr until it answers (the command may be between two
// runs) and returns the line it sent.
func dialUntil(t *testing.T, addr string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			s, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil {
				return strings.TrimSpace(s)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within %v: %v", addr, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// saysIDTaken reports whether an error line says that another live node
// has the id: found by mDNS ("another live node has this node's id") or
// refused by a peer ("duplicate node id").
func saysIDTaken(s string) bool {
	return strings.Contains(s, "another live node has this node's id") || strings.Contains(s, "duplicate node id")
}
