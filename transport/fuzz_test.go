package transport

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// FuzzServerHandshake feeds arbitrary bytes to the acceptor's side of the
// handshake: it must fail cleanly (or succeed on a valid exchange), never
// panic or hang.
func FuzzServerHandshake(f *testing.F) {
	h := Hello{Version: Version, Cluster: "c", ID: "a", Incarnation: 1}
	hello, _ := h.marshal()
	f.Add(hello)
	f.Add(append(hello, appendVerdict(nil, nil)...))
	f.Add(append(append(hello, appendVerdict(nil, nil)...), secNoise, 0, 3, 1, 2, 3))
	f.Add([]byte("TSHP\x00\x09\x00\x00\x00\x00"))
	f.Add([]byte{})
	cfgs := []Config{
		{HandshakeTimeout: 50 * time.Millisecond},
		{HandshakeTimeout: 50 * time.Millisecond, Secret: "s"},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, cfg := range cfgs {
			a, c := net.Pipe()
			go func() {
				c.Write(b)
				c.Close()
			}()
			l, err := Server(context.Background(), a, Hello{Cluster: "c", ID: "b"}, cfg, nil)
			if err == nil {
				l.Close()
			}
			a.Close()
		}
	})
}

func FuzzStreamHeader(f *testing.F) {
	f.Add([]byte("\x05u/web"))
	f.Add([]byte("\x00"))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		proto, err := readStreamHeader(bytes.NewReader(b))
		if err == nil && (len(proto) == 0 || len(proto) > 255 || len(proto) >= len(b)) {
			t.Fatalf("accepted %q from %d bytes", proto, len(b))
		}
	})
}
