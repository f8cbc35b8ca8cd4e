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

// BenchmarkReaderNext reads frames of each size from an endless stream of
// them, as a link's message reader does.
func BenchmarkReaderNext(b *testing.B) {
	for _, size := range []int{64, 4 << 10, 64 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			var stream []byte
			for len(stream) < 1<<20 {
				stream = AppendFrame(stream, Message, make([]byte, size))
			}
			src := &loop{data: stream}
			r := NewReader(src, 1<<20)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := r.Next(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
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
