package mesh

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"
)

// benchNodes starts n nodes on loopback, without discovery, linked in a
// full mesh through the first one (peer exchange links the rest).
func benchNodes(b *testing.B, n int) []*Node {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes := make([]*Node, n)
	for i := range nodes {
		cfg := testConfig(fmt.Sprintf("bench-%02d", i))
		node, err := cfg.Join(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { node.Close() })
		nodes[i] = node
	}
	for _, node := range nodes[1:] {
		if _, err := node.Connect(ctx, nodes[0].Addrs()[0].String()); err != nil {
			b.Fatal(err)
		}
	}
	for !settled(nodes...) {
		if ctx.Err() != nil {
			b.Fatal("nodes did not link")
		}
		time.Sleep(time.Millisecond)
	}
	return nodes
}

// BenchmarkSendReceive64 sends 64-byte messages one way: Send on one node,
// Receive on the other.
func BenchmarkSendReceive64(b *testing.B) {
	nodes := benchNodes(b, 2)
	a, c := nodes[0], nodes[1]
	ctx := context.Background()
	msg := make([]byte, 64)
	done := make(chan error, 1)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	n := b.N
	go func() {
		for range n {
			if _, err := c.Receive(ctx); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ResetTimer()
	for range n {
		if err := a.Send(ctx, c.ID(), msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBroadcast64 broadcasts 64-byte messages to four peers and
// waits for every copy.
func BenchmarkBroadcast64(b *testing.B) {
	nodes := benchNodes(b, 5)
	ctx := context.Background()
	msg := make([]byte, 64)
	done := make(chan error, len(nodes)-1)
	b.ReportAllocs()
	n := b.N
	for _, peer := range nodes[1:] {
		go func() {
			for range n {
				if _, err := peer.Receive(ctx); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	b.ResetTimer()
	for range n {
		if err := nodes[0].Broadcast(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	for range nodes[1:] {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPingPong64 sends a 64-byte message and waits for the answer.
func BenchmarkPingPong64(b *testing.B) {
	nodes := benchNodes(b, 2)
	a, c := nodes[0], nodes[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return
			}
			if c.Send(ctx, m.From, m.Data) != nil {
				return
			}
		}
	}()
	msg := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Send(ctx, c.ID(), msg); err != nil {
			b.Fatal(err)
		}
		if _, err := a.Receive(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStream32KiB writes 32 KiB at a time on a stream between two
// nodes.
func BenchmarkStream32KiB(b *testing.B) {
	nodes := benchNodes(b, 2)
	ln, err := nodes[1].Listen("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		n, _ := io.Copy(io.Discard, s)
		done <- n
	}()
	s, err := nodes[0].OpenStream(context.Background(), nodes[1].ID(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	<-done
}
