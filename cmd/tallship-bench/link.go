package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// The link measures run two nodes linked on 127.0.0.1 (no discovery), and
// the same work over a raw TCP connection on 127.0.0.1 in the same run.

// pair is two linked nodes.
type pair struct {
	a, b *mesh.Node
}

func newPair(secret string) (*pair, error) {
	cfg := mesh.Config{Listen: "127.0.0.1:0", Discovery: mesh.NoDiscovery, Logger: quiet, Secret: secret}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := cfg.Join(ctx, "bench-pair")
	if err != nil {
		return nil, err
	}
	b, err := cfg.Join(ctx, "bench-pair")
	if err != nil {
		a.Close()
		return nil, err
	}
	p := &pair{a, b}
	if _, err := a.Connect(ctx, b.Addrs()[0].String()); err != nil {
		p.close()
		return nil, err
	}
	for len(b.Peers()) == 0 || len(a.Peers()) == 0 {
		if ctx.Err() != nil {
			p.close()
			return nil, errors.New("pair did not link")
		}
		time.Sleep(time.Millisecond)
	}
	return p, nil
}

func (p *pair) close() {
	p.a.Close()
	p.b.Close()
}

// streams returns a stream from a to b, and b's end of it.
func (p *pair) streams(protocol string) (net.Conn, net.Conn, error) {
	ln, err := p.b.Listen(protocol)
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.a.OpenStream(ctx, p.b.ID(), protocol)
	if err != nil {
		return nil, nil, err
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, s, nil
}

// tcpPair returns the two ends of a TCP connection on 127.0.0.1.
func tcpPair() (net.Conn, net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	r := <-ch
	if r.err != nil {
		c.Close()
		return nil, nil, r.err
	}
	return c, r.c, nil
}

// throughput writes chunk-sized writes on w for about d (at most max
// bytes), closes w, and returns the MB/s at which r read it all.
func throughput(w, r net.Conn, chunk int, d time.Duration, max int64) (float64, error) {
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, r)
		got <- n
	}()
	buf := make([]byte, chunk)
	start := time.Now()
	end := start.Add(d)
	var sent int64
	for sent < max && time.Now().Before(end) {
		n, err := w.Write(buf)
		sent += int64(n)
		if err != nil {
			return 0, err
		}
	}
	w.Close()
	select {
	case n := <-got:
		if n != sent {
			return 0, fmt.Errorf("sent %d bytes, received %d", sent, n)
		}
	case <-time.After(30 * time.Second):
		r.Close()
		return 0, errors.New("reader did not finish")
	}
	return float64(sent) / time.Since(start).Seconds() / 1e6, nil
}

// versusRaw fills r with runs of a measure over a link of a fresh pair
// (sealed with secret when set) and, in the same runs, its raw TCP
// reference.
func versusRaw(r *row, runs int, secret string, raw func(run int) (float64, error), link func(p *pair, run int) (float64, error)) {
	p, err := newPair(secret)
	if err != nil {
		r.err = err
		return
	}
	defer p.close()
	for i := range runs {
		ref, err := raw(i)
		if err != nil {
			r.err = fmt.Errorf("raw tcp: %w", err)
			return
		}
		got, err := link(p, i)
		if err != nil {
			r.err = err
			return
		}
		r.samples = append(r.samples, got)
		r.raw = append(r.raw, ref)
	}
}

// measureThroughput fills r with runs of one stream's throughput at chunk-
// sized writes, and the raw TCP reference.
func measureThroughput(r *row, runs, chunk int, d time.Duration, secret string) {
	const max = 8 << 30
	versusRaw(r, runs, secret, func(int) (float64, error) {
		tw, tr, err := tcpPair()
		if err != nil {
			return 0, err
		}
		defer tr.Close()
		return throughput(tw, tr, chunk, d, max)
	}, func(p *pair, i int) (float64, error) {
		sw, sr, err := p.streams(fmt.Sprintf("tp-%d", i))
		if err != nil {
			return 0, err
		}
		defer sr.Close()
		return throughput(sw, sr, chunk, d, max)
	})
}

// measureMessages fills r with the rate of count 64-byte messages sent one
// way with Send and taken with Receive, and the raw TCP reference: each
// message written with its own Write as a length-prefixed frame, read
// through a bufio.Reader.
func measureMessages(r *row, runs, count int) {
	msg := make([]byte, 64)
	versusRaw(r, runs, "",
		func(int) (float64, error) { return rawMessages(count, msg) },
		func(p *pair, _ int) (float64, error) { return meshMessages(p, count, msg) })
}

func meshMessages(p *pair, count int, msg []byte) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for range count {
			if _, err := p.b.Receive(ctx); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	start := time.Now()
	for range count {
		if err := p.a.Send(ctx, p.b.ID(), msg); err != nil {
			return 0, err
		}
	}
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(count) / time.Since(start).Seconds(), nil
}

func rawMessages(count int, msg []byte) (float64, error) {
	w, r, err := tcpPair()
	if err != nil {
		return 0, err
	}
	defer w.Close()
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		br := bufio.NewReaderSize(r, 64<<10)
		var head [4]byte
		buf := make([]byte, 0, 256)
		for range count {
			if _, err := io.ReadFull(br, head[:]); err != nil {
				done <- err
				return
			}
			n := binary.BigEndian.Uint32(head[:])
			if _, err := io.ReadFull(br, buf[:n]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	frame = append(frame, msg...)
	start := time.Now()
	for range count {
		if _, err := w.Write(frame); err != nil {
			return 0, err
		}
	}
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(count) / time.Since(start).Seconds(), nil
}

// measurePingPong fills r with round trips per second of a 64-byte
// message sent with Send and answered with Send, and the raw TCP
// reference (a length-prefixed frame written and echoed).
func measurePingPong(r *row, runs, count int) {
	msg := make([]byte, 64)
	versusRaw(r, runs, "",
		func(int) (float64, error) { return rawPingPong(count, msg) },
		func(p *pair, _ int) (float64, error) { return meshPingPong(p, count, msg) })
}

func meshPingPong(p *pair, count int, msg []byte) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for range count {
			m, err := p.b.Receive(ctx)
			if err == nil {
				err = p.b.Send(ctx, m.From, m.Data)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	start := time.Now()
	for range count {
		if err := p.a.Send(ctx, p.b.ID(), msg); err != nil {
			return 0, err
		}
		if _, err := p.a.Receive(ctx); err != nil {
			return 0, err
		}
	}
	elapsed := time.Since(start)
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(count) / elapsed.Seconds(), nil
}

func rawPingPong(count int, msg []byte) (float64, error) {
	a, b, err := tcpPair()
	if err != nil {
		return 0, err
	}
	defer a.Close()
	defer b.Close()
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	frame = append(frame, msg...)
	return pingPong(a, b, count, frame)
}

// pingPong sends frame on a, echoes it on b, count times, and returns the
// round trips per second.
func pingPong(a, b net.Conn, count int, frame []byte) (float64, error) {
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, len(frame))
		for range count {
			if _, err := io.ReadFull(b, buf); err != nil {
				done <- err
				return
			}
			if _, err := b.Write(buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	buf := make([]byte, len(frame))
	start := time.Now()
	for range count {
		if _, err := a.Write(frame); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(a, buf); err != nil {
			return 0, err
		}
	}
	elapsed := time.Since(start)
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(count) / elapsed.Seconds(), nil
}

// measureStreamPingPong is measurePingPong over one stream of the link.
func measureStreamPingPong(r *row, runs, count int) {
	msg := make([]byte, 64)
	versusRaw(r, runs, "",
		func(int) (float64, error) { return rawPingPong(count, msg) },
		func(p *pair, i int) (float64, error) {
			a, b, err := p.streams(fmt.Sprintf("pp-%d", i))
			if err != nil {
				return 0, err
			}
			defer a.Close()
			defer b.Close()
			return pingPong(a, b, count, msg)
		})
}
