package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/pki"
)

// pairCfg is pair with a Config for each side.
func pairCfg(t *testing.T, dc, ac Config) (dial, acc linkResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return pairOn(t, ln, ln.Addr().String(), dc, ac)
}

func pairOn(t *testing.T, ln net.Listener, addr string, dc, ac Config) (dial, acc linkResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	accCh := make(chan linkResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accCh <- linkResult{err: err}
			return
		}
		l, err := Server(ctx, c, Hello{Cluster: "c", ID: "b"}, ac, nil)
		if err != nil {
			c.Close()
		}
		accCh <- linkResult{l, err}
	}()
	l, err := Dial(ctx, addr, Hello{Cluster: "c", ID: "a"}, dc, nil)
	dial, acc = linkResult{l, err}, <-accCh
	for _, r := range []linkResult{dial, acc} {
		if r.l != nil {
			t.Cleanup(func() { r.l.Close() })
		}
	}
	return dial, acc
}

func withSecret(s string) Config {
	c := fastConfig
	c.Secret = s
	return c
}

func TestSecretRefusals(t *testing.T) {
	tests := []struct {
		name   string
		d, a   Config
		reason string // in both errors
	}{
		{"different secrets", withSecret("one"), withSecret("two"), "secret"},
		{"dialer has none", fastConfig, withSecret("two"), "secret"},
		{"acceptor has none", withSecret("one"), fastConfig, "secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, a := pairCfg(t, tt.d, tt.a)
			for side, r := range map[string]linkResult{"dialer": d, "acceptor": a} {
				if !errors.Is(r.err, ErrAuth) || !strings.Contains(r.err.Error(), tt.reason) {
					t.Errorf("%s: err = %v, want ErrAuth about the %s", side, r.err, tt.reason)
				}
			}
		})
	}
}

// recorder is a TCP proxy that keeps what the dialer sent.
type recorder struct {
	ln     net.Listener
	mu     sync.Mutex
	fromD  bytes.Buffer
	all    bytes.Buffer
	wg     sync.WaitGroup
	target string
}

func newRecorder(t *testing.T, target string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, target: target}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			return
		}
		r.wg.Add(2)
		go func() { defer r.wg.Done(); io.Copy(u, io.TeeReader(c, r.sink(true))); u.Close() }()
		go func() { defer r.wg.Done(); io.Copy(c, io.TeeReader(u, r.sink(false))); c.Close() }()
	}()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

type sinkFunc func([]byte) (int, error)

func (f sinkFunc) Write(b []byte) (int, error) { return f(b) }

func (r *recorder) sink(fromDialer bool) io.Writer {
	return sinkFunc(func(b []byte) (int, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if fromDialer {
			r.fromD.Write(b)
		}
		r.all.Write(b)
		return len(b), nil
	})
}

func TestSecretSealsAndRefusesReplay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rec := newRecorder(t, ln.Addr().String())
	d, a := pairOn(t, ln, rec.ln.Addr().String(), withSecret("s3cret"), withSecret("s3cret"))
	if d.err != nil || a.err != nil {
		t.Fatalf("dialer: %v, acceptor: %v", d.err, a.err)
	}
	const marker = "PLAINTEXT-MARKER-0123456789"
	go func() {
		s, err := d.l.OpenStream(context.Background(), "x")
		if err == nil {
			s.Write([]byte(marker))
			s.Close()
		}
	}()
	s, err := a.l.AcceptStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(s)
	if string(got) != marker {
		t.Fatalf("got %q", got)
	}
	d.l.Close()
	a.l.Close()
	rec.mu.Lock()
	captured := bytes.Clone(rec.all.Bytes())
	replay := bytes.Clone(rec.fromD.Bytes())
	rec.mu.Unlock()
	if bytes.Contains(captured, []byte(marker)) {
		t.Fatal("plaintext on the wire")
	}

	// Replay everything the dialer sent to a fresh acceptor.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write(replay)
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, err = Server(context.Background(), srv, Hello{Cluster: "c", ID: "b"}, withSecret("s3cret"), nil)
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("replayed handshake: err = %v, want ErrAuth", err)
	}
}

func TestTLSLinks(t *testing.T) {
	good := pki.New(t)
	tlsCfg := func(c *tls.Config) Config { cfg := fastConfig; cfg.TLS = c; return cfg }
	d, a := pairCfg(t, tlsCfg(good.Config(t, "a")), tlsCfg(good.Config(t, "b")))
	if d.err != nil || a.err != nil {
		t.Fatalf("trusted: dialer %v, acceptor %v", d.err, a.err)
	}
	rogue := pki.New(t)
	d, a = pairCfg(t, tlsCfg(rogue.Config(t, "a")), tlsCfg(good.Config(t, "b")))
	if !errors.Is(d.err, ErrAuth) || !errors.Is(a.err, ErrAuth) {
		t.Fatalf("untrusted: dialer %v, acceptor %v; want ErrAuth on both", d.err, a.err)
	}
}
