package wire

import (
	"fmt"
	"io"
	"net/netip"
	"testing"
)

func BenchmarkAppendFrame64(b *testing.B) {
	payload := make([]byte, 64)
	buf := make([]byte, 0, 128)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFrame(buf[:0], Message, payload)
	}
}

func BenchmarkFrame64(b *testing.B) {
	payload := make([]byte, 64)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		Frame(Message, payload)
	}
}

// BenchmarkBeginEndFrame64 frames a payload encoded in place, as the
// registry's encoders do.
func BenchmarkBeginEndFrame64(b *testing.B) {
	payload := make([]byte, 64)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EndFrame(append(BeginFrame(Message, 1<<20, len(payload)), payload...), 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReaderNext reads frames of each size from an endless stream of
// them, as a link's message reader does.
func BenchmarkReaderNext(b *testing.B) {
	for _, size := range readSizes {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			r := endlessReader(b, size)
			for b.Loop() {
				if _, _, err := r.Next(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReaderNextInto reads frames of each size into one buffer, as a
// registry stream's reader does.
func BenchmarkReaderNextInto(b *testing.B) {
	for _, size := range readSizes {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			r := endlessReader(b, size)
			var buf []byte
			for b.Loop() {
				_, _, frame, err := r.NextInto(buf)
				if err != nil {
					b.Fatal(err)
				}
				buf = frame
			}
		})
	}
}

// readSizes are the payload sizes the reader benchmarks read.
var readSizes = []int{64, 4 << 10, 64 << 10}

// endlessReader returns a Reader of an endless stream of frames of size
// bytes, and sets b up to measure reading them.
func endlessReader(b *testing.B, size int) *Reader {
	var stream []byte
	for len(stream) < 1<<20 {
		stream = AppendFrame(stream, Message, make([]byte, size))
	}
	r := NewReader(&loop{data: stream}, 1<<20)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	return r
}

// loop reads data over and over; it holds whole frames, so every read
// restarts on a frame boundary.
type loop struct {
	data []byte
	off  int
}

func (l *loop) Read(p []byte) (int, error) {
	if l.off == len(l.data) {
		l.off = 0
	}
	n := copy(p, l.data[l.off:])
	l.off += n
	return n, nil
}

var _ io.Reader = (*loop)(nil)

func benchMembers(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{
			ID:    fmt.Sprintf("6f1c2a4e-8b1d-4c55-9a1e-%012d", i),
			Addrs: []netip.AddrPort{netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:41234", i%250+1)), netip.MustParseAddrPort("[fd00::1]:41234")},
		}
	}
	return ms
}

// BenchmarkAppendMembers20 encodes the member list a node of a 21-node
// mesh sends a newcomer.
func BenchmarkAppendMembers20(b *testing.B) {
	ms := benchMembers(20)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMembers(buf[:0], ms)
	}
}

func BenchmarkParseMembers20(b *testing.B) {
	enc := AppendMembers(nil, benchMembers(20))
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMembers(enc); err != nil {
			b.Fatal(err)
		}
	}
}
