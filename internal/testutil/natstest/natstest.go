// Package natstest runs NATS servers inside the test process
// (github.com/nats-io/nats-server/v2, embedded) for the tests of sites
// joined through NATS: one server, or a cluster of them routed to each
// other, listening on loopback (or on an address of a namespace the test
// made itself). Nothing it starts sends a packet anywhere else: a server
// has no routes but those Cluster gives it, no gateways, no leaf nodes.
//
//	s := natstest.Start(t, natstest.Options{})
//	cfg.NATS.URLs = []string{s.URL()}
//	s.Stop() ... s.Restart()
//
// Servers are shut down when the test ends, and every goroutine of theirs
// with them.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options are a server's settings; the zero value is a server on
// 127.0.0.1 at a free port, without auth.
type Options struct {
	// Host is the address to listen on. Empty means 127.0.0.1.
	Host string
	// User and Password, or Token, when set, are the only credentials
	// the server takes.
	User, Password string
	Token          string
	// MaxPayload bounds a message. Zero means the server's (1 MiB).
	MaxPayload int32
}

// Server is a running (or stopped) NATS server of a test.
type Server struct {
	t    testing.TB
	mu   sync.Mutex
	opts server.Options
	srv  *server.Server // nil while stopped
}

// Start starts a server, stopped when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	s := &Server{t: t, opts: options(o)}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func options(o Options) server.Options {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	return server.Options{
		Host:          o.Host,
		Port:          server.RANDOM_PORT,
		Username:      o.User,
		Password:      o.Password,
		Authorization: o.Token,
		MaxPayload:    o.MaxPayload,
		NoLog:         true,
		NoSigs:        true,
		// No HTTP monitoring, no system account chatter beyond the
		// server's own.
	}
}

// StartAt starts a server, stopped when the test ends, at addr
// (host:port): where a client already waits for one.
func StartAt(t testing.TB, o Options, addr string) *Server {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	o.Host = host
	s := &Server{t: t, opts: options(o)}
	if s.opts.Port, err = strconv.Atoi(port); err != nil {
		t.Fatalf("natstest: port %q", port)
	}
	t.Cleanup(s.Stop)
	s.Restart()
	return s
}

// start starts the server with s.opts, at the port it had before when
// it had one. s.mu is not held.
func (s *Server) start() {
	s.t.Helper()
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		s.t.Fatalf("natstest: server on %s:%d not ready", opts.Host, opts.Port)
	}
	s.mu.Lock()
	s.srv = srv
	if s.opts.Port == server.RANDOM_PORT {
		s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	}
	s.mu.Unlock()
}

// URL is the server's client URL (nats://host:port), the same across
// restarts.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "nats://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port))
}

// Tap subscribes to every subject of the server, as any NATS user
// allowed to could, and returns a function that returns what it has
// read so far: each message as its subject, a space, and its payload.
func (s *Server) Tap(t testing.TB) func() []string {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatalf("natstest: tap: %v", err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	var seen []string
	if _, err := nc.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		seen = append(seen, m.Subject+" "+string(m.Data))
		mu.Unlock()
	}); err != nil {
		t.Fatalf("natstest: tap: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("natstest: tap: %v", err)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// ClientNames returns the names the server's clients gave it (what its
// monitoring shows), nil while it is stopped.
func (s *Server) ClientNames() []string {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	cz, err := srv.Connz(nil)
	if err != nil {
		s.t.Errorf("natstest: Connz: %v", err)
		return nil
	}
	var names []string
	for _, c := range cz.Conns {
		names = append(names, c.Name)
	}
	return names
}

// Stop shuts the server down and waits until it has ended: its clients
// see their connections close. It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts a stopped server again, at the same address.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	running := s.srv != nil
	s.mu.Unlock()
	if running {
		s.t.Fatal("natstest: Restart of a running server")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		opts := s.opts
		srv, err := server.NewServer(&opts)
		if err != nil {
			s.t.Fatalf("natstest: %v", err)
		}
		go srv.Start()
		if srv.ReadyForConnections(2 * time.Second) {
			s.mu.Lock()
			s.srv = srv
			s.mu.Unlock()
			return
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		if time.Now().After(deadline) {
			s.t.Fatalf("natstest: cannot start the server again on %s", s.URL())
		}
	}
}

// Cluster starts n servers routed to each other (a NATS cluster named
// "test"), each with o, and waits until every one has its routes to all
// the others. They are stopped when the test ends.
func Cluster(t testing.TB, n int, o Options) []*Server {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t, options(o).Host)
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort(options(o).Host, strconv.Itoa(p))})
	}
	var out []*Server
	for i := range n {
		s := &Server{t: t, opts: options(o)}
		s.opts.ServerName = fmt.Sprintf("s%d", i)
		s.opts.Cluster = server.ClusterOpts{Name: "test", Host: s.opts.Host, Port: ports[i]}
		s.opts.Routes = routes
		s.start()
		t.Cleanup(s.Stop)
		out = append(out, s)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range out {
		for s.routes() < n-1 {
			if time.Now().After(deadline) {
				t.Fatalf("natstest: cluster of %d not routed within 10 s", n)
			}
			time.Sleep(5 * time.Millisecond) // polling against the deadline
		}
	}
	return out
}

// routes returns how many other servers s is routed to.
func (s *Server) routes() int {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return 0
	}
	return srv.NumRoutes()
}

// freePort returns a TCP port free on host now.
func freePort(t testing.TB, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
