package main

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/tallship-go/tallship/registry"
)

// The dashboard's HTTP side: the page (web/, embedded), the JSON
// endpoints and the server-sent events that keep the page live.

//go:embed web
var webFiles embed.FS

const (
	// sseQueue is how many messages wait for a slow page; a page further
	// behind is disconnected (its EventSource reconnects and starts over
	// from a fresh picture).
	sseQueue = 256
	// ssePing keeps idle event streams open through proxies.
	ssePing = 15 * time.Second
	// writeTimeout bounds each write to a page.
	writeTimeout = 10 * time.Second
)

// sseMessage is one server-sent event.
type sseMessage struct {
	event string
	data  []byte // one line of JSON
}

// sseClient is a page's event stream.
type sseClient struct {
	ch chan sseMessage // closed when the page fell too far behind
}

// serve serves HTTP on ln until shutdown.
func (d *dashboard) serve(ln net.Listener) {
	defer d.wg.Done()
	d.srv.Serve(ln) // returns at shutdown
}

// shutdown stops the HTTP server. The event streams end with d.ctx, so
// this waits for nothing but requests in progress, 2 s at most.
func (d *dashboard) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if d.srv.Shutdown(ctx) != nil {
		d.srv.Close()
	}
}

// handler returns the dashboard's routes.
func (d *dashboard) handler() http.Handler {
	web, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(web))
	mux.HandleFunc("GET /api/members", d.serveMembers)
	mux.HandleFunc("GET /api/services", d.serveServices)
	mux.HandleFunc("GET /api/events", d.serveEvents)
	mux.Handle("GET /metrics", d.metricsHandler())
	checked := d.access.check(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Everything comes from this server; nothing from anywhere else.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		checked.ServeHTTP(w, r)
	})
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
}

func writeJSONResponse(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	writeJSON(w, v)
}

func (d *dashboard) serveMembers(w http.ResponseWriter, r *http.Request) {
	writeJSONResponse(w, http.StatusOK, d.members())
}

// servicesJSON is the body of /api/services.
type servicesJSON struct {
	Query    string        `json:"query"`
	Services []serviceJSON `json:"services"`
}

func (d *dashboard) serveServices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	recs, err := d.n.Services(q)
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, registry.ErrBadQuery) {
			status = http.StatusBadRequest
		}
		writeJSONResponse(w, status, map[string]string{"error": err.Error()})
		return
	}
	out := servicesJSON{Query: q, Services: []serviceJSON{}}
	for _, rec := range recs {
		out.Services = append(out.Services, serviceOf(rec))
	}
	slices.SortFunc(out.Services, func(a, b serviceJSON) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version), cmp.Compare(a.Addr, b.Addr), cmp.Compare(a.ID, b.ID))
	})
	writeJSONResponse(w, http.StatusOK, out)
}

// serveEvents streams server-sent events: "hello" ({"cluster", "self",
// "observer"}), the "members" picture, the "log" so far (an array of
// events), then each new "event" and each changed "members" picture.
func (d *dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	c, first := d.subscribe()
	defer d.unsubscribe(c)
	w.WriteHeader(http.StatusOK)
	write := func(msgs ...sseMessage) bool {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		for _, m := range msgs {
			if _, err := io.WriteString(w, "event: "+m.event+"\ndata: "+string(m.data)+"\n\n"); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	if !write(first...) {
		return
	}
	ping := time.NewTicker(ssePing)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-d.ctx.Done():
			return
		case <-ping.C:
			rc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case m, ok := <-c.ch:
			if !ok || !write(m) {
				return
			}
		}
	}
}

// subscribe registers a page's event stream and returns it with the
// messages that start it, taken at the same instant.
func (d *dashboard) subscribe() (*sseClient, []sseMessage) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &sseClient{ch: make(chan sseMessage, sseQueue)}
	d.clients[c] = struct{}{}
	hello, _ := json.Marshal(map[string]any{"cluster": d.n.Cluster(), "self": d.n.ID(), "observer": d.observer})
	members, _ := json.Marshal(d.membersLocked())
	backlog, _ := json.Marshal(d.log)
	if d.log == nil {
		backlog = []byte("[]")
	}
	return c, []sseMessage{{"hello", hello}, {"members", members}, {"log", backlog}}
}

func (d *dashboard) unsubscribe(c *sseClient) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.clients[c]; ok {
		delete(d.clients, c)
		close(c.ch)
	}
}

// sendLocked queues m for every page; a page whose queue is full is
// disconnected. d.mu is held.
func (d *dashboard) sendLocked(m sseMessage) {
	for c := range d.clients {
		select {
		case c.ch <- m:
		default:
			delete(d.clients, c)
			close(c.ch)
		}
	}
}
