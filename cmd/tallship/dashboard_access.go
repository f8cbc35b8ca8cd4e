package main

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Who may read the dashboard. On a loopback address it is open, as before:
// only this machine reaches it. On any other address (0.0.0.0, a LAN
// address) anyone who reaches it could read the cluster's members and
// services, so it asks for a token: --http-token, $TALLSHIP_HTTP_TOKEN, or
// one made at start and printed in the page's address. A token given
// explicitly is asked for on loopback too.
//
// A browser opens the printed address, .../?token=TOKEN, once: the server
// answers with a cookie holding the token and sends the browser on to the
// same page without it, so that the token leaves the address bar; the
// page's requests (its JSON, its event stream) carry the cookie. A script
// sends the header "Authorization: Bearer TOKEN". Tokens are compared in
// constant time, through their SHA-256 sums so that not even their length
// shows.

const httpTokenHelp = "the `TOKEN` the dashboard asks for: in the address once (?token=TOKEN; a browser keeps it as a cookie) " +
	"or as \"Authorization: Bearer TOKEN\" (default $TALLSHIP_HTTP_TOKEN; off loopback, without one, a token is made and printed in the address)"

// httpTokenChars are the characters a token may hold: those of an OAuth
// bearer token (RFC 6750's b64token), which go unquoted in a header, a
// cookie and a query string.
var httpTokenChars = regexp.MustCompile(`^[A-Za-z0-9._~+/-]+=*$`)

// registerHTTPToken adds --http-token to fs, its default from the
// environment, never shown in --help.
func registerHTTPToken(fs *flagSet, e *env) *string {
	token := fs.String("http-token", e.getenv("TALLSHIP_HTTP_TOKEN"), httpTokenHelp)
	fs.Lookup("http-token").DefValue = "" // the usage names it; never show a token
	return token
}

// httpAccess is who may read a dashboard.
type httpAccess struct {
	token string // "": open to all who reach it
	// made: the token was made at start, so the printed address carries
	// it (a token the user gave is not echoed).
	made   bool
	cookie string // the cookie's name, one per port: cookies ignore ports
}

// newHTTPAccess decides who may read the dashboard served on ln, given
// the --http-token flag (with its default from the environment).
func newHTTPAccess(ln net.Listener, token string) (httpAccess, error) {
	a := httpAccess{token: token}
	if ln == nil {
		if token != "" {
			return a, usageErrorf("--http-token without --http: no dashboard to protect")
		}
		return a, nil
	}
	tcp := ln.Addr().(*net.TCPAddr)
	a.cookie = "tallship_token_" + strconv.Itoa(tcp.Port)
	switch {
	case token != "":
		if !httpTokenChars.MatchString(token) {
			return a, usageErrorf("--http-token: use letters, digits and - . _ ~ + / (= only at the end)")
		}
	case !tcp.IP.IsLoopback():
		var b [16]byte
		rand.Read(b[:]) // never fails (crypto/rand)
		a.token, a.made = hex.EncodeToString(b[:]), true
	}
	return a, nil
}

// url is the address to print for the page at base: with the token when
// it was made here.
func (a httpAccess) url(base string) string {
	if a.made {
		return base + "?token=" + a.token
	}
	return base
}

// check returns next behind the token or, when the dashboard is open,
// behind the host check (see localOnly).
func (a httpAccess) check(next http.Handler) http.Handler {
	if a.token == "" {
		return localOnly(next)
	}
	want := sha256.Sum256([]byte(a.token))
	match := func(s string) bool {
		got := sha256.Sum256([]byte(s))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Has("token") {
			if !match(q.Get("token")) {
				deny(w)
				return
			}
			// Keep it as a cookie, and take it out of the address.
			http.SetCookie(w, &http.Cookie{Name: a.cookie, Value: a.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			q.Del("token")
			u := *r.URL
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && match(bearer) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(a.cookie); err == nil && match(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		deny(w)
	})
}

// localOnly returns next for the requests addressed (by their Host) to an
// IP address or to localhost, and refuses the others: an open dashboard
// is on loopback, and a request for it under another name is a web page's
// DNS rebinding (a name of the page's own pointed at 127.0.0.1, so that
// the user's browser reads this machine's dashboard for the page).
func localOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if _, err := netip.ParseAddr(host); err == nil || strings.EqualFold(host, "localhost") {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusMisdirectedRequest)
		w.Write([]byte("This tallship dashboard answers at localhost or an IP address only, not at " + strconv.Quote(host) +
			": a name pointed at this machine is how a web page would read it (DNS rebinding).\n"))
	})
}

// deny answers a request without the right token.
func deny(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="tallship dashboard"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	w.Write([]byte("This tallship dashboard needs its token: open its address once with ?token=TOKEN " +
		"(tallship prints that address at start when it made the token), or send the header " +
		"\"Authorization: Bearer TOKEN\".\n"))
}
