package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// addrListener is a listener that is never listened on: newHTTPAccess
// reads only its address.
type addrListener struct{ addr *net.TCPAddr }

func (l addrListener) Accept() (net.Conn, error) { return nil, errors.New("not listening") }
func (l addrListener) Close() error              { return nil }
func (l addrListener) Addr() net.Addr            { return l.addr }

func listenerAt(ip string, port int) net.Listener {
	return addrListener{&net.TCPAddr{IP: net.ParseIP(ip), Port: port}}
}

func TestHTTPAccessChoosesToken(t *testing.T) {
	made := regexp.MustCompile(`^http://localhost:8470/\?token=[0-9a-f]{32}$`)
	for _, tc := range []struct {
		name, ip, token string
		wantOpen        bool
		wantURL         string // "" for a made token
	}{
		{"loopback v4", "127.0.0.1", "", true, "http://localhost:8470/"},
		{"loopback v6", "::1", "", true, "http://localhost:8470/"},
		{"every address", "0.0.0.0", "", false, ""},
		{"every v6 address", "::", "", false, ""},
		{"a LAN address", "192.0.2.7", "", false, ""},
		{"loopback, token given", "127.0.0.1", "s3cret-Token_1", false, "http://localhost:8470/"},
		{"LAN, token given", "192.0.2.7", "s3cret-Token_1", false, "http://localhost:8470/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := newHTTPAccess(listenerAt(tc.ip, 8470), tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if open := a.token == ""; open != tc.wantOpen {
				t.Fatalf("open = %v, want %v", open, tc.wantOpen)
			}
			url := a.url("http://localhost:8470/")
			if tc.wantURL == "" && !made.MatchString(url) {
				t.Errorf("printed address %q: want one with a token made at start", url)
			}
			if tc.wantURL != "" && url != tc.wantURL {
				t.Errorf("printed address %q, want %q (a token the user gave is not echoed)", url, tc.wantURL)
			}
			if tc.token != "" && a.token != tc.token {
				t.Errorf("token %q, want the one given", a.token)
			}
		})
	}
	// Two made tokens differ.
	a1, _ := newHTTPAccess(listenerAt("0.0.0.0", 1), "")
	a2, _ := newHTTPAccess(listenerAt("0.0.0.0", 1), "")
	if a1.token == a2.token {
		t.Errorf("two tokens made at start are the same: %s", a1.token)
	}

	var u *usageError
	if _, err := newHTTPAccess(listenerAt("0.0.0.0", 1), "two words"); !errors.As(err, &u) || !strings.Contains(err.Error(), "--http-token") {
		t.Errorf("a token with a space: %v, want a usage error naming --http-token", err)
	}
	if _, err := newHTTPAccess(nil, "tok"); !errors.As(err, &u) || !strings.Contains(err.Error(), "without --http") {
		t.Errorf("--http-token without --http: %v, want a usage error", err)
	}
}

func TestHTTPAccessChecksToken(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	a, err := newHTTPAccess(listenerAt("0.0.0.0", 8470), token)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("the page")) })
	h := a.check(ok)
	cookie := "tallship_token_8470"
	for _, tc := range []struct {
		name     string
		target   string
		header   map[string]string
		status   int
		location string // of a redirect
	}{
		{"nothing", "/api/members", nil, http.StatusUnauthorized, ""},
		{"bearer", "/api/members", map[string]string{"Authorization": "Bearer " + token}, http.StatusOK, ""},
		{"wrong bearer", "/api/members", map[string]string{"Authorization": "Bearer " + token[1:]}, http.StatusUnauthorized, ""},
		{"basic, not bearer", "/api/members", map[string]string{"Authorization": "Basic " + token}, http.StatusUnauthorized, ""},
		{"cookie", "/api/events", map[string]string{"Cookie": cookie + "=" + token}, http.StatusOK, ""},
		{"wrong cookie", "/api/events", map[string]string{"Cookie": cookie + "=x" + token}, http.StatusUnauthorized, ""},
		{"another port's cookie", "/api/events", map[string]string{"Cookie": "tallship_token_8471=" + token}, http.StatusUnauthorized, ""},
		{"in the address", "/?token=" + token, nil, http.StatusSeeOther, "/"},
		{"in the address, with a query", "/api/services?q=web%40%5E1&token=" + token, nil, http.StatusSeeOther, "/api/services?q=web%40%5E1"},
		{"wrong in the address", "/?token=nope", nil, http.StatusUnauthorized, ""},
		{"wrong in the address, right cookie", "/?token=nope", map[string]string{"Cookie": cookie + "=" + token}, http.StatusUnauthorized, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			res := w.Result()
			if res.StatusCode != tc.status {
				t.Fatalf("GET %s: %s, want %d", tc.target, res.Status, tc.status)
			}
			switch tc.status {
			case http.StatusOK:
				if w.Body.String() != "the page" {
					t.Errorf("body %q", w.Body.String())
				}
			case http.StatusUnauthorized:
				if res.Header.Get("WWW-Authenticate") == "" || !strings.Contains(w.Body.String(), "Authorization: Bearer TOKEN") ||
					strings.Contains(w.Body.String(), token) {
					t.Errorf("401 without a challenge or an explanation: %v %q", res.Header, w.Body.String())
				}
			case http.StatusSeeOther:
				if loc := res.Header.Get("Location"); loc != tc.location {
					t.Errorf("sent on to %q, want %q (the token out of the address)", loc, tc.location)
				}
				cs := res.Cookies()
				if len(cs) != 1 || cs[0].Name != cookie || cs[0].Value != token || !cs[0].HttpOnly ||
					cs[0].SameSite != http.SameSiteStrictMode || cs[0].Path != "/" {
					t.Errorf("cookies %+v, want %s=TOKEN, HttpOnly, SameSite=Strict, Path=/", cs, cookie)
				}
			}
		})
	}

	// An open dashboard lets everything addressed to it through
	// untouched (see TestOpenDashboardAnswersLocalNamesOnly).
	open, _ := newHTTPAccess(listenerAt("127.0.0.1", 8470), "")
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/?token=whatever", nil)
	r.Host = "127.0.0.1:8470"
	open.check(ok).ServeHTTP(w, r)
	if w.Code != http.StatusOK || w.Body.String() != "the page" {
		t.Errorf("open dashboard: %d %q", w.Code, w.Body.String())
	}
}

// TestOpenDashboardAnswersLocalNamesOnly: an open (loopback) dashboard
// answers requests addressed to localhost or an IP address, and refuses
// one addressed to any other name (a web page's DNS rebinding), naming it.
func TestOpenDashboardAnswersLocalNamesOnly(t *testing.T) {
	a, err := newHTTPAccess(listenerAt("127.0.0.1", 8470), "")
	if err != nil {
		t.Fatal(err)
	}
	h := a.check(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	for _, tc := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:8470", http.StatusOK},
		{"localhost:8470", http.StatusOK},
		{"LOCALHOST", http.StatusOK},
		{"[::1]:8470", http.StatusOK},
		{"192.0.2.7:8470", http.StatusOK},
		{"rebind.example:8470", http.StatusMisdirectedRequest},
		{"localhost.example", http.StatusMisdirectedRequest},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("Host %s: status %d, want %d", tc.host, w.Code, tc.want)
		}
		if tc.want != http.StatusOK && !strings.Contains(w.Body.String(), "DNS rebinding") {
			t.Errorf("Host %s: refusal %q does not say why", tc.host, w.Body.String())
		}
	}
}
