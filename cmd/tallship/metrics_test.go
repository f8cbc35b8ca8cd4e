package main

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// TestMetrics scrapes /metrics from two join nodes that found each other
// over mDNS in the test's private network namespace: a serves it on
// loopback, open; b on every address, behind the token it printed, as
// its dashboard is.
func TestMetrics(t *testing.T) {
	netns.Require(t)
	bin := build(t)
	const cluster = "metrics"
	a := tallship(t, bin, "join a", nil, "join", cluster, "--json", "--fast", "--id", "a", "--http", "127.0.0.1:0")
	aURL := dashboardLine(t, a)
	b := tallship(t, bin, "join b", nil, "join", cluster, "--json", "--fast", "--id", "b", "--http", "0.0.0.0:0")
	bBase, bToken, ok := strings.Cut(dashboardLine(t, b), "?token=")
	if !ok {
		t.Fatal("join b --http 0.0.0.0:0 printed no token")
	}
	a.waitEvent("a's peer-up b", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "peer-up" && e.Peer == "b" })
	b.waitEvent("b's peer-up a", 10*time.Second, 0, func(e eventJSON) bool { return e.Event == "peer-up" && e.Peer == "a" })

	for name, got := range map[string]map[string]float64{
		"a": scrape(t, aURL+"metrics", "", http.StatusOK),
		"b": scrape(t, bBase+"metrics", bToken, http.StatusOK),
	} {
		for series, want := range map[string]float64{
			"tallship_peers": 1,
			`tallship_handshakes_refused_total{reason="auth"}`: 0,
			"tallship_messages_sent_total":                     0,
			"tallship_registry_records":                        0,
		} {
			if v, ok := got[series]; !ok || v != want {
				t.Errorf("%s's %s = %v (present: %v), want %v", name, series, v, ok, want)
			}
		}
		for _, series := range []string{"tallship_links_made_total", "tallship_mdns_packets_sent_total", "tallship_mdns_packets_received_total", "go_goroutines"} {
			if got[series] <= 0 {
				t.Errorf("%s's %s = %v, want more than 0", name, series, got[series])
			}
		}
	}
	// Off loopback, /metrics asks for the token as the page does.
	scrape(t, bBase+"metrics", "", http.StatusUnauthorized)
	scrape(t, bBase+"metrics", bToken[1:], http.StatusUnauthorized)
}

// scrape GETs url, with token as a bearer token unless it is empty, and
// checks the status; with 200 it returns the value of each series in the
// text format.
func scrape(t *testing.T, url, token string, status int) map[string]float64 {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.StatusCode != status {
		t.Fatalf("GET %s: %s, want %d", url, r.Status, status)
	}
	if status != http.StatusOK {
		return nil
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET %s: Content-Type %q, want Prometheus's text format", url, ct)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("GET %s: line %q is not a series and its value", url, line)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
