package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/yamux"

	"github.com/tallship-go/tallship/internal/testutil/loopback"
)

// recordingConn records each Write it is given.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestSessionConnJoinsDataFrames(t *testing.T) {
	for _, size := range []int{1, 64, tcpCopyMax + 1, sealedCopyMax} {
		rc := &recordingConn{}
		c := newSessionConn(rc, &streamSet{}, nil)
		body := bytes.Repeat([]byte{7}, size)
		hdr := yamuxHeader(yamuxTypeData, uint32(size))
		if n, err := c.Write(hdr); n != len(hdr) || err != nil {
			t.Fatalf("header write: %d, %v", n, err)
		}
		if len(rc.writes) != 0 {
			t.Fatalf("size %d: header written alone", size)
		}
		if n, err := c.Write(body); n != size || err != nil {
			t.Fatalf("body write: %d, %v", n, err)
		}
		want := append(hdr, body...)
		if len(rc.writes) != 1 || !bytes.Equal(rc.writes[0], want) {
			t.Fatalf("size %d: %d writes, want header and body in one", size, len(rc.writes))
		}
	}
}

func TestSessionConnPassesControlFrames(t *testing.T) {
	const typeWindowUpdate, typePing = 1, 2
	for _, hdr := range [][]byte{
		yamuxHeader(typeWindowUpdate, 1<<18), // a window update: no body follows
		yamuxHeader(typePing, 7),
		yamuxHeader(yamuxTypeData, 0), // a data frame without a body
	} {
		rc := &recordingConn{}
		c := newSessionConn(rc, &streamSet{}, nil)
		c.Write(hdr)
		if len(rc.writes) != 1 || !bytes.Equal(rc.writes[0], hdr) {
			t.Fatalf("header %x held back", hdr)
		}
	}
}

// BenchmarkSessionSend measures the sending side of one stream alone:
// writes into a TCP connection on 127.0.0.1 whose far end takes what
// arrives as fast as it can, timed until it has all of it. It shows where
// a link's bulk throughput goes (docs/benchmarks.md, "On hashicorp/yamux
// v0.1.2"):
//
//   - tcp: the writes on the connection itself, the reference;
//   - frames: each write as one yamux data frame, header and body in one
//     writev from the writing goroutine, as a multiplexer without a send
//     loop writes it;
//   - yamux: a hashicorp/yamux stream over sessionConn, as on a link: each
//     frame is handed to the session's send loop, which copies the body
//     and writes it while the writer waits.
//
// The far end of frames and yamux is an idealReceiver, which never lets
// the send window run out.
func BenchmarkSessionSend(b *testing.B) {
	for _, size := range []int{32 << 10, 1 << 20} {
		for _, kind := range []string{"tcp", "frames", "yamux"} {
			b.Run(fmt.Sprintf("%s/%dKiB", kind, size>>10), func(b *testing.B) {
				w, r := loopback.Pair(b)
				var got atomic.Int64
				done := make(chan struct{})
				go func() {
					defer close(done)
					if kind == "tcp" {
						buf := make([]byte, 64<<10) // as idealReceiver reads
						for {
							n, err := r.Read(buf)
							got.Add(int64(n))
							if err != nil {
								return
							}
						}
					}
					idealReceiver(r, &got, kind == "yamux")
				}()
				var out io.Writer = w
				switch kind {
				case "frames":
					out = &frameWriter{conn: w}
				case "yamux":
					yc := Config{Logger: slog.New(slog.DiscardHandler)}.withDefaults()
					sess, err := yamux.Client(newSessionConn(w, &streamSet{}, nil), yc.yamux(yc.Logger))
					if err != nil {
						b.Fatal(err)
					}
					defer sess.Close()
					s, err := sess.OpenStream()
					if err != nil {
						b.Fatal(err)
					}
					out = s
				}
				writeTimed(b, out, size, &got, done, "receiver")
				b.StopTimer()
				w.Close()
				<-done
			})
		}
	}
}

// frameWriter writes each Write as one yamux data frame of stream 1.
type frameWriter struct {
	conn net.Conn
	hdr  [yamuxHeaderSize]byte
	pair [2][]byte
	v    net.Buffers
}

func (f *frameWriter) Write(p []byte) (int, error) {
	f.hdr[0], f.hdr[1] = 0, yamuxTypeData
	binary.BigEndian.PutUint32(f.hdr[4:], 1)
	binary.BigEndian.PutUint32(f.hdr[8:], uint32(len(p)))
	f.pair = [2][]byte{f.hdr[:], p}
	f.v = f.pair[:]
	n, err := f.v.WriteTo(f.conn)
	return max(0, int(n)-yamuxHeaderSize), err
}

// idealReceiver reads yamux frames from c until it fails, adding the data
// frames' lengths to got and dropping their bodies. With window set, it
// answers a stream's opening with a 16 MiB send window and gives every
// data frame's length back as soon as the frame is read, as a reader that
// is never behind would.
func idealReceiver(c net.Conn, got *atomic.Int64, window bool) {
	const (
		typeWindowUpdate = 1
		flagSYN, flagACK = 1, 2
	)
	br := bufio.NewReaderSize(c, 64<<10)
	var hdr, reply [yamuxHeaderSize]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		typ, flags, length := hdr[1], binary.BigEndian.Uint16(hdr[2:]), binary.BigEndian.Uint32(hdr[8:])
		if typ == yamuxTypeData {
			if _, err := br.Discard(int(length)); err != nil {
				return
			}
			got.Add(int64(length))
		}
		if !window || (typ == typeWindowUpdate && flags&flagSYN == 0) || (typ != yamuxTypeData && typ != typeWindowUpdate) {
			continue
		}
		reply = [yamuxHeaderSize]byte{0, typeWindowUpdate}
		copy(reply[4:8], hdr[4:8])
		switch {
		case flags&flagSYN != 0:
			binary.BigEndian.PutUint16(reply[2:], flagACK)
			binary.BigEndian.PutUint32(reply[8:], 16<<20)
		case typ == yamuxTypeData && length > 0:
			binary.BigEndian.PutUint32(reply[8:], length)
		default:
			continue
		}
		c.Write(reply[:])
	}
}

// BenchmarkSessionReceive measures the receiving side of one stream alone:
// data frames written by an idealSender, as fast as the stream's window
// takes them, into a TCP connection on 127.0.0.1 whose far end is a
// hashicorp/yamux session over sessionConn, as on a link, and a reader
// that reads the stream 8 KiB at a time (as io.Copy to io.Discard does),
// timed until it has all of it. tcp is the reference: the same writes on
// the connection, read the same way.
func BenchmarkSessionReceive(b *testing.B) {
	for _, size := range []int{32 << 10, 1 << 20} {
		for _, kind := range []string{"tcp", "yamux"} {
			b.Run(fmt.Sprintf("%s/%dKiB", kind, size>>10), func(b *testing.B) {
				w, r := loopback.Pair(b)
				var in io.Reader = r
				var out io.Writer = w
				if kind == "yamux" {
					yc := Config{Logger: slog.New(slog.DiscardHandler)}.withDefaults()
					sess, err := yamux.Server(newSessionConn(r, &streamSet{}, nil), yc.yamux(yc.Logger))
					if err != nil {
						b.Fatal(err)
					}
					defer sess.Close()
					out = startIdealSender(w)
					s, err := sess.AcceptStream()
					if err != nil {
						b.Fatal(err)
					}
					in = s
				}
				var got atomic.Int64
				done := make(chan struct{})
				go func() {
					defer close(done)
					buf := make([]byte, 8<<10)
					for {
						n, err := in.Read(buf)
						got.Add(int64(n))
						if err != nil {
							return
						}
					}
				}()
				writeTimed(b, out, size, &got, done, "reader")
				b.StopTimer()
				w.Close()
				r.Close()
				<-done
			})
		}
	}
}

// idealSender writes data frames on stream 1 of a yamux session at the
// far end of its connection, each as large as the write and the stream's
// send window allow, as a sender that is never behind would. Its
// goroutine reads the window updates until the connection fails.
type idealSender struct {
	fw     frameWriter
	window atomic.Int64
	more   chan struct{} // the window grew
}

// startIdealSender opens stream 1 and returns its sender.
func startIdealSender(c net.Conn) *idealSender {
	const typeWindowUpdate, flagSYN = 1, 1
	s := &idealSender{fw: frameWriter{conn: c}, more: make(chan struct{}, 1)}
	s.window.Store(256 << 10) // yamux's initial window
	go func() {
		br := bufio.NewReader(c)
		var hdr [yamuxHeaderSize]byte
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return
			}
			if hdr[1] == typeWindowUpdate {
				s.window.Add(int64(binary.BigEndian.Uint32(hdr[8:])))
				select {
				case s.more <- struct{}{}:
				default:
				}
			}
		}
	}()
	open := [yamuxHeaderSize]byte{0, typeWindowUpdate, 0, flagSYN, 0, 0, 0, 1}
	c.Write(open[:])
	return s
}

func (s *idealSender) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		n := min(int64(len(p)), s.window.Load())
		if n <= 0 {
			<-s.more
			continue
		}
		if _, err := s.fw.Write(p[:n]); err != nil {
			return total, err
		}
		s.window.Add(-n)
		total += int(n)
		p = p[n:]
	}
	return total, nil
}

// writeTimed writes b.N buffers of size to out, timed, and waits until
// the other end has counted them all in got; done closing first means the
// other end (who) stopped.
func writeTimed(b *testing.B, out io.Writer, size int, got *atomic.Int64, done <-chan struct{}, who string) {
	b.Helper()
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := out.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	for got.Load() < int64(b.N)*int64(size) {
		select {
		case <-done:
			b.Fatalf("%s stopped at %d of %d bytes", who, got.Load(), b.N*size)
		default:
			runtime.Gosched()
		}
	}
}
