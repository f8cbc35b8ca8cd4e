package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/tallship-go/tallship/internal/testutil/loopback"
)

// benchLinks returns the two ends of a link over loopback TCP (127.0.0.1
// only: no multicast, nothing leaves the machine).
func benchLinks(b *testing.B, cfg Config) (*Link, *Link) {
	b.Helper()
	d, a := pairWith(b, cfg, Hello{Cluster: "bench", ID: "a"}, Hello{Cluster: "bench", ID: "b"}, nil, nil)
	if d.err != nil || a.err != nil {
		b.Fatal(errors.Join(d.err, a.err))
	}
	return d.l, a.l
}

// benchStreams returns a stream opened on one end of a fresh link and the
// other end's accepted stream.
func benchStreams(b *testing.B, cfg Config) (net.Conn, net.Conn) {
	b.Helper()
	d, a := benchLinks(b, cfg)
	acc := make(chan *Stream, 1)
	go func() {
		s, err := a.AcceptStream(context.Background())
		if err != nil {
			b.Error(err)
		}
		acc <- s
	}()
	s, err := d.OpenStream(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	r := <-acc
	if r == nil {
		b.FailNow()
	}
	return s, r
}

// BenchmarkStreamWrite measures one stream's throughput for writes of
// each size, with raw TCP on loopback as the reference.
func BenchmarkStreamWrite(b *testing.B) {
	for _, size := range []int{32 << 10, 1 << 20} {
		for _, kind := range []string{"tcp", "link", "secret"} {
			b.Run(fmt.Sprintf("%s/%dKiB", kind, size>>10), func(b *testing.B) {
				var w, r net.Conn
				switch kind {
				case "tcp":
					w, r = loopback.Pair(b)
				case "link":
					w, r = benchStreams(b, Config{})
				case "secret":
					w, r = benchStreams(b, Config{Secret: "bench"})
				}
				done := make(chan int64)
				go func() {
					n, _ := io.Copy(io.Discard, r)
					done <- n
				}()
				buf := make([]byte, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := w.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				w.Close()
				<-done
			})
		}
	}
}

// BenchmarkStreamPingPong64 measures round trips of 64 bytes on one
// stream, with raw TCP on loopback as the reference.
func BenchmarkStreamPingPong64(b *testing.B) {
	for _, kind := range []string{"tcp", "link"} {
		b.Run(kind, func(b *testing.B) {
			var x, y net.Conn
			if kind == "tcp" {
				x, y = loopback.Pair(b)
			} else {
				x, y = benchStreams(b, Config{})
			}
			go func() {
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(y, buf); err != nil {
						return
					}
					if _, err := y.Write(buf); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := x.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(x, buf); err != nil {
					b.Fatal(err)
				}
			}
			x.Close()
		})
	}
}
