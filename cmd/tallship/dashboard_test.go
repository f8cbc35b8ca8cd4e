package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// TestDashboard runs three nodes and the dashboard (tallship ui) inside
// the test's private network namespace: a and b are join nodes (a with a
// dashboard of its own on loopback, b with one on every address, which
// asks for a token), c is tallship run, which registers web@1.2.3 and
// does not answer the peer-list protocol, so its links are known from a
// and b. It checks the JSON endpoints, then the page in headless Chromium:
// three nodes, the three links of the triangle, the service, the filter;
// then c stops, and the page, without a reload, shows two nodes, one link
// and no service. Last, b's page: refused without its token, shown when
// the browser opens the address b printed. Screenshots go to
// $TALLSHIP_ARTIFACTS (or a temporary directory). Without chromium the
// page is not checked and the test skips at the end, saying so.
func TestDashboard(t *testing.T) {
	netns.Require(t)
	bin := build(t)
	const cluster = "dash"
	a := tallship(t, bin, "join a", nil, "join", cluster, "--json", "--fast", "--id", "a", "--http", "127.0.0.1:0")
	aURL := dashboardLine(t, a)
	checkCommandLine(t, bin, strings.TrimSuffix(strings.TrimPrefix(aURL, "http://"), "/"))
	jb := tallship(t, bin, "join b", nil, "join", cluster, "--json", "--fast", "--id", "b", "--http", "0.0.0.0:0")
	bURL := dashboardLine(t, jb)
	bBase, bToken, ok := strings.Cut(bURL, "?token=")
	if !ok || len(bToken) != 32 || !strings.HasPrefix(bBase, "http://localhost:") {
		t.Fatalf("join b --http 0.0.0.0:0 printed %q; want http://localhost:PORT/?token= and a token made at start", bURL)
	}
	checkToken(t, bBase, bToken)
	c := tallship(t, bin, "run c", nil, "run", cluster, "web@1.2.3", "--fast", "--id", "c", "--", bin.child)
	ui := tallship(t, bin, "ui", nil, "ui", cluster, "--fast", "--id", "ui", "--http", "127.0.0.1:0")
	url := dashboardLine(t, ui)
	t.Logf("dashboard at %s (ui), %s (join a)", url, aURL)

	// The JSON endpoints.
	triangle := [][2]string{{"a", "b"}, {"a", "c"}, {"b", "c"}}
	m := waitMembers(t, url, []string{"a", "b", "c"}, triangle)
	for _, v := range m.Members {
		if len(v.Addrs) == 0 || !v.Direct || v.LinkedSince == nil || v.Self {
			t.Errorf("ui's member %+v: want addresses, a direct link, not self", v)
		}
		if reports := v.ID != "c"; v.Reports != reports || (v.UpSince != nil) != reports {
			t.Errorf("member %s: reports %v, up_since %v; want a report (with a start time) from a and b only", v.ID, v.Reports, v.UpSince)
		}
	}
	if !m.Observer || m.Self != "ui" || m.Cluster != cluster {
		t.Errorf("ui's /api/members: observer %v, self %q, cluster %q", m.Observer, m.Self, m.Cluster)
	}
	am := waitMembers(t, aURL, []string{"a", "b", "c"}, triangle)
	if i := slices.IndexFunc(am.Members, func(v memberView) bool { return v.ID == "a" }); am.Observer || i < 0 || !am.Members[i].Self {
		t.Errorf("join a's /api/members: observer %v, members %+v; want a itself among them", am.Observer, am.Members)
	}
	// The members show once linked; c's record once c's registry sync
	// has reached ui (an observer: it dials each member it finds).
	svc := waitServices(t, url, "web@^1")
	if len(svc.Services) != 1 || svc.Services[0].Owner != "c" || svc.Services[0].Role != "web@1.2.3" {
		t.Fatalf("/api/services?q=web@^1: %+v, want web@1.2.3 owned by c", svc)
	}
	addr := svc.Services[0].Addr
	if s := getServices(t, url, "web@^2", http.StatusOK); len(s.Services) != 0 {
		t.Errorf("/api/services?q=web@^2: %+v, want none", s.Services)
	}
	getServices(t, url, "web@>>1", http.StatusBadRequest)
	checkEventStream(t, url)

	// The page.
	chromium, why := findChromium()
	var b *browser
	var shots string
	if chromium != "" {
		b = startBrowser(t, chromium, url, 1280, 760)
		shots = artifacts(t)
		p := b.waitPage("three nodes, three links and the service", func(p pageState) bool {
			return slices.Equal(p.Nodes, []string{"a", "b", "c"}) && slices.Equal(p.Edges, []string{"a-b", "a-c", "b-c"}) &&
				slices.Equal(p.Rows, []string{"a", "b", "c"}) &&
				slices.ContainsFunc(p.Services, func(r []string) bool { return slices.Equal(r, []string{"web", "1.2.3", addr, "c"}) }) &&
				p.Status == "live"
		})
		if !p.EdgesMeetNodes {
			t.Errorf("the links are not drawn between their nodes' circles")
		}
		for _, want := range []string{"peer-up a", "peer-up b", "peer-up c", "service-registered web@1.2.3 " + addr + " owner c"} {
			if !slices.ContainsFunc(p.Log, func(s string) bool { return strings.Contains(strings.Join(strings.Fields(s), " "), want) }) {
				t.Errorf("the event log has no %q: %q", want, p.Log)
			}
		}
		if p.Header != "tallship "+cluster || p.Self != "observer ui" {
			t.Errorf("the header says %q, %q", p.Header, p.Self)
		}

		// The filter: a query goes to the server, which answers or
		// explains what is wrong with it.
		b.setFilter("web@>>1")
		b.waitPage("the bad query's error", func(p pageState) bool {
			return strings.Contains(p.FilterError, `bad query "web@>>1"`) && len(p.Services) == 0
		})
		b.setFilter("web@^2")
		b.waitPage("no match for web@^2", func(p pageState) bool { return p.FilterError == "" && len(p.Services) == 0 })
		b.setFilter("web@~1.2")
		b.waitPage("a match for web@~1.2", func(p pageState) bool { return len(p.Services) == 1 })
		b.setFilter("")
		b.waitPage("every service", func(p pageState) bool { return len(p.Services) == 1 && p.FilterError == "" })

		shot := filepath.Join(shots, "dashboard.png")
		if err := b.screenshot(shot); err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		t.Logf("screenshot: %s", shot)
		// Marks this page: a reload would lose the mark.
		if err := b.eval("window.__tallshipMark = 42", nil); err != nil {
			t.Fatal(err)
		}
	}

	// c leaves.
	left := time.Now()
	c.signal(syscall.SIGTERM)
	if code := c.wait(10 * time.Second); code != 0 {
		t.Errorf("run c: exit status %d after SIGTERM", code)
	}
	waitMembers(t, url, []string{"a", "b"}, [][2]string{{"a", "b"}})
	if s := getServices(t, url, "", http.StatusOK); len(s.Services) != 0 {
		t.Errorf("/api/services after c left: %+v", s.Services)
	}
	if b == nil {
		t.Skipf("the page was not checked in a browser: %s", why)
	}
	p := b.waitPage("c gone, without a reload", func(p pageState) bool {
		return slices.Equal(p.Nodes, []string{"a", "b"}) && slices.Equal(p.Edges, []string{"a-b"}) &&
			slices.Equal(p.Rows, []string{"a", "b"}) && len(p.Services) == 0 &&
			slices.ContainsFunc(p.Log, func(s string) bool { return strings.Contains(s, "peer-down") && strings.HasSuffix(s, " c") })
	})
	t.Logf("c gone from the page %v after SIGTERM", time.Since(left).Round(time.Millisecond))
	if !p.Marked {
		t.Errorf("the page was reloaded")
	}
	if !slices.ContainsFunc(p.Log, func(s string) bool { return strings.Contains(s, "service-freed") }) {
		t.Errorf("the event log has no service-freed: %q", p.Log)
	}
	if err := b.screenshot(filepath.Join(shots, "dashboard-after-leave.png")); err != nil {
		t.Errorf("screenshot: %v", err)
	}

	// b's page asks a browser for the token, and opens with the address
	// b printed; the token then leaves the address bar, and the page's
	// own requests (its event stream, the filter's queries) carry it.
	b.navigate(bBase)
	b.waitText("b's page without its token", "needs its token")
	b.navigate(bURL)
	p = b.waitPage("b's page, opened with its token", func(p pageState) bool {
		return slices.Equal(p.Nodes, []string{"a", "b"}) && slices.Equal(p.Edges, []string{"a-b"}) && p.Status == "live" &&
			p.Self == "node b"
	})
	var where string
	if err := b.eval("location.href", &where); err != nil || where != bBase {
		t.Errorf("the address bar shows %q (%v), want %q: the token out of it", where, err, bBase)
	}
	b.setFilter("web@>>1")
	b.waitPage("the bad query's error on b's page", func(p pageState) bool {
		return strings.Contains(p.FilterError, `bad query "web@>>1"`)
	})
}

// artifacts returns the directory screenshots go to: $TALLSHIP_ARTIFACTS
// (made if need be), or a temporary one.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TALLSHIP_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitServices gets /api/services?q= until it lists a service, for at
// most 10 s, and returns the last answer.
func waitServices(t *testing.T, url, q string) servicesJSON {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		svc := getServices(t, url, q, http.StatusOK)
		if len(svc.Services) > 0 || time.Now().After(deadline) {
			return svc
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkToken checks the dashboard at base, which asks for token: refused
// without it or with another, read with it as a bearer token (as curl
// sends it).
func checkToken(t *testing.T, base, token string) {
	t.Helper()
	for _, bearer := range []string{"", "Bearer " + token[1:], "Bearer " + token} {
		for _, path := range []string{"", "api/members", "api/services", "api/events"} {
			req, err := http.NewRequest("GET", base+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if bearer != "" {
				req.Header.Set("Authorization", bearer)
			}
			c := http.Client{Timeout: 5 * time.Second}
			r, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			want := http.StatusUnauthorized
			if bearer == "Bearer "+token {
				want = http.StatusOK
			}
			if r.StatusCode != want {
				t.Errorf("GET /%s with Authorization %q: %s, want %d", path, bearer, r.Status, want)
			}
		}
	}
}

// dashboardLine waits for the line of join or ui that gives the
// dashboard's address and returns it.
func dashboardLine(t *testing.T, p *proc) string {
	t.Helper()
	var url string
	p.waitLine("the dashboard's address", 10*time.Second, 0, func(s string) bool {
		var e dashboardEventJSON
		if json.Unmarshal([]byte(s), &e) == nil && e.Event == "dashboard" {
			url = e.URL
		} else if f := strings.Fields(s); len(f) == 3 && f[1] == "dashboard" {
			url = f[2]
		}
		return url != ""
	})
	if !strings.HasPrefix(url, "http://127.0.0.1:") && !strings.HasPrefix(url, "http://localhost:") {
		t.Fatalf("dashboard address %q", url)
	}
	return url
}

// checkCommandLine: --help of ui, and --http mistakes: one line on stderr
// and the exit status of a usage error (2) or of a failure (1). busy is
// an address in use.
func checkCommandLine(t *testing.T, bin binaries, busy string) {
	t.Helper()
	help := tallship(t, bin, "ui --help", nil, "ui", "--help")
	if code := help.wait(10 * time.Second); code != 0 || len(help.snapshot()) == 0 || help.snapshot()[0].text != "Usage: tallship ui CLUSTER [flags]" {
		t.Errorf("ui --help: exit status %d, stdout %v", code, help.snapshot())
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ui", "c", "--http", "8470"}, 2, `tallship ui: --http "8470": want host:port`},
		{[]string{"ui", "--http", "127.0.0.1:0"}, 2, "tallship ui: missing CLUSTER"},
		{[]string{"join", "c", "--http", busy}, 1, "tallship join: --http: listen tcp " + busy + ": bind: address already in use"},
	} {
		p := tallship(t, bin, "tallship", nil, tc.args...)
		code := p.wait(10 * time.Second)
		if stderr := p.stderrText(); code != tc.code || !strings.HasPrefix(stderr, tc.want) || strings.Count(stderr, "\n") != 1 || len(p.snapshot()) != 0 {
			t.Errorf("%q: exit status %d, stderr %q, stdout %v; want %d, %q", tc.args, code, stderr, p.snapshot(), tc.code, tc.want)
		}
	}
}

// waitMembers polls /api/members until it shows exactly the members and
// links, and returns it.
func waitMembers(t *testing.T, url string, members []string, links [][2]string) membersJSON {
	t.Helper()
	return waitMembersAre(t, url, fmt.Sprintf("members %v, links %v", members, links), func(m membersJSON) bool {
		ids := []string{}
		for _, v := range m.Members {
			ids = append(ids, v.ID)
		}
		return slices.Equal(ids, members) && slices.Equal(m.Links, links)
	})
}

// waitMembersAre polls /api/members until ok accepts it (want says what
// it wants), and returns it.
func waitMembersAre(t *testing.T, url, want string, ok func(membersJSON) bool) membersJSON {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var m membersJSON
		err := getJSON(url+"api/members", &m)
		if err == nil && ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%sapi/members: %+v (%v); want %s", url, m, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// getServices gets /api/services?q= and checks its status; a bad request
// must explain itself in "error".
func getServices(t *testing.T, url, q string, status int) servicesJSON {
	t.Helper()
	r, err := http.Get(url + "api/services?q=" + q)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.StatusCode != status || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("services?q=%s: %s, %s; want %d, JSON", q, r.Status, r.Header.Get("Content-Type"), status)
	}
	if status != http.StatusOK {
		var e struct{ Error string }
		if json.NewDecoder(r.Body).Decode(&e) != nil || !strings.Contains(e.Error, "bad query") {
			t.Errorf("services?q=%s: error %q, want it to say bad query", q, e.Error)
		}
		return servicesJSON{}
	}
	var s servicesJSON
	if err := json.NewDecoder(r.Body).Decode(&s); err != nil || s.Query != q {
		t.Fatalf("services?q=%s: %+v, %v", q, s, err)
	}
	return s
}

// checkEventStream reads the start of /api/events: hello, the members
// picture, the log.
func checkEventStream(t *testing.T, url string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(url + "api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if ct := r.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("/api/events: Content-Type %q", ct)
	}
	var events []string
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(nil, 1<<20)
	for len(events) < 3 && sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, name)
		} else if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok && !json.Valid([]byte(data)) {
			t.Errorf("/api/events: data is not JSON: %s", data)
		}
	}
	if !slices.Equal(events, []string{"hello", "members", "log"}) {
		t.Errorf("/api/events starts with %v (%v), want hello, members, log", events, sc.Err())
	}
}

// pageState is what the page shows, read from its DOM.
type pageState struct {
	Header, Self, Status, FilterError string
	Nodes, Edges, Rows                []string
	Services                          [][]string
	Log                               []string
	EdgesMeetNodes, Marked            bool
	// With sites: the header's site and NATS (its text and class, ""
	// when hidden), the nodes table's rows in order (their cells) and
	// its rows that name a site, and the counts above the graph.
	Site, NATS, NATSClass, Counts string
	NodeRows                      [][]string
	Groups                        []string
}

const pageStateJS = `(() => {
  const all = (sel) => [...document.querySelectorAll(sel)];
  const centers = new Map(all('#graph .node').map((g) => {
    const c = g.querySelector('circle');
    return [g.dataset.id, c.getAttribute('cx') + ',' + c.getAttribute('cy')];
  }));
  const err = document.getElementById('filter-error');
  return {
    header: document.querySelector('header h1').textContent,
    self: document.getElementById('self').textContent,
    status: document.getElementById('status').textContent,
    filterError: err.hidden ? '' : err.textContent,
    nodes: all('#graph .node').map((g) => g.dataset.id).sort(),
    edges: all('#graph .edge').map((l) => [l.dataset.a, l.dataset.b].sort().join('-')).sort(),
    edgesMeetNodes: all('#graph .edge').every((l) =>
      centers.get(l.dataset.a) === l.getAttribute('x1') + ',' + l.getAttribute('y1') &&
      centers.get(l.dataset.b) === l.getAttribute('x2') + ',' + l.getAttribute('y2')),
    rows: all('#nodes tbody tr[data-id]').map((r) => r.dataset.id).sort(),
    nodeRows: all('#nodes tbody tr[data-id]').map((r) => [...r.cells].map((c) => c.textContent)),
    groups: all('#nodes tbody tr.group').map((r) => r.textContent),
    site: document.getElementById('site').hidden ? '' : document.getElementById('site').textContent,
    nats: document.getElementById('nats').hidden ? '' : document.getElementById('nats').textContent,
    natsClass: document.getElementById('nats').hidden ? '' : document.getElementById('nats').className,
    counts: document.getElementById('counts').textContent,
    services: all('#services tbody tr[data-id]').map((r) => [...r.cells].map((c) => c.textContent)),
    log: all('#log li').map((li) => li.textContent),
    marked: window.__tallshipMark === 42,
  };
})()`

// waitPage reads the page until cond accepts what it shows, for at most
// 15 s, and returns that.
func (b *browser) waitPage(what string, cond func(pageState) bool) pageState {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var p pageState
		err := b.eval(pageStateJS, &p)
		if err == nil && cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the page did not show %s within 15 s (%v); it shows:\n%+v", what, err, p)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// navigate opens url in the page, as typed into the address bar.
func (b *browser) navigate(url string) {
	b.t.Helper()
	if _, err := b.call("Page.navigate", map[string]any{"url": url}); err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
}

// waitText reads the page's text until it holds want, for at most 15 s,
// and returns it.
func (b *browser) waitText(what, want string) string {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var text string
		err := b.eval("document.body ? document.body.innerText : ''", &text)
		if err == nil && strings.Contains(text, want) {
			return text
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the page did not show %s (%q) within 15 s (%v); it shows:\n%s", what, want, err, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setFilter types a query into the services filter.
func (b *browser) setFilter(q string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const f = document.getElementById('filter'); f.value = %q; f.dispatchEvent(new Event('input')); })()`, q)
	if err := b.eval(js, nil); err != nil {
		b.t.Fatalf("set the filter to %q: %v", q, err)
	}
}
