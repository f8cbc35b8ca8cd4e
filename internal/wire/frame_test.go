package wire

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"
)

func TestFramesRoundTrip(t *testing.T) {
	var buf []byte
	payloads := [][]byte{{}, []byte("hello"), bytes.Repeat([]byte{7}, 100000)}
	for _, p := range payloads {
		buf = AppendFrame(buf, Message, p)
	}
	r := NewReader(bytes.NewReader(buf), 1<<20)
	for _, want := range payloads {
		typ, got, err := r.Next()
		if err != nil || typ != Message || !bytes.Equal(got, want) {
			t.Fatalf("got %d %d bytes %v", typ, len(got), err)
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("err = %v, want EOF", err)
	}
}

func TestFrameLimits(t *testing.T) {
	errStream := errors.New("stream broke")
	bytesThen := func(b []byte, err error) func() io.Reader {
		return func() io.Reader { return io.MultiReader(bytes.NewReader(b), iotest.ErrReader(err)) }
	}
	just := func(b []byte) func() io.Reader { return bytesThen(b, io.EOF) }
	tests := []struct {
		name string
		in   func() io.Reader
		want error
	}{
		{"max passes", just(Frame(Message, make([]byte, 64))), nil},
		{"one more is refused", just(Frame(Message, make([]byte, 65))), ErrTooLarge},
		{"unknown type", just([]byte{99, 0}), ErrBadFrame},
		{"type zero", just([]byte{0, 0, 0, 5}), ErrBadFrame},
		{"length overflows", just([]byte{Message, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}), ErrBadFrame},
		{"truncated payload", just([]byte{Message, 5, 1, 2}), io.ErrUnexpectedEOF},
		{"truncated length", just([]byte{Message, 0x80}), io.ErrUnexpectedEOF},
		{"stream error in the length", bytesThen([]byte{Message, 0x80}, errStream), errStream},
		{"stream error in the payload", bytesThen([]byte{Message, 5, 1}, errStream), errStream},
	}
	for _, tt := range tests {
		_, _, errNext := NewReader(tt.in(), 64).Next()
		_, _, _, errInto := NewReader(tt.in(), 64).NextInto(nil)
		for _, err := range []error{errNext, errInto} {
			if !errors.Is(err, tt.want) || (tt.want != ErrBadFrame && errors.Is(err, ErrBadFrame)) {
				t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
			}
		}
	}
}

func TestReaderTypes(t *testing.T) {
	tests := []struct {
		typ         byte
		first, last byte
		ok          bool
	}{
		{Message, Message, Goodbye, true},
		{Goodbye, Message, Goodbye, true},
		{Goodbye + 1, Message, Goodbye, false},
		{7, 1, 7, true},
		{1, 1, 7, true},
		{0, 1, 7, false},
		{8, 1, 7, false},
	}
	for _, tt := range tests {
		typ, _, err := NewReaderTypes(bytes.NewReader(Frame(tt.typ, nil)), 64, tt.first, tt.last).Next()
		if ok := err == nil && typ == tt.typ; ok != tt.ok {
			t.Errorf("type %d of %d-%d: got %d, %v; want accepted = %v", tt.typ, tt.first, tt.last, typ, err, tt.ok)
		}
		if !tt.ok && !errors.Is(err, ErrBadFrame) {
			t.Errorf("type %d of %d-%d: err = %v, want ErrBadFrame", tt.typ, tt.first, tt.last, err)
		}
	}
}

// sizes around each step of the length's uvarint.
var sizes = []int{0, 1, 127, 128, 16383, 16384, 1<<21 - 1, 1 << 21}

func TestBeginEndFrame(t *testing.T) {
	for _, max := range sizes {
		for _, n := range sizes {
			if n > max {
				continue
			}
			payload := bytes.Repeat([]byte{0xa5}, n)
			b := BeginFrame(Members, max, n)
			end := &b[:cap(b)][cap(b)-1]
			b = append(b, payload...)
			f, err := EndFrame(b, max)
			if err != nil {
				t.Fatalf("%d of max %d bytes: %v", n, max, err)
			}
			if want := AppendFrame(nil, Members, payload); !bytes.Equal(f, want) {
				t.Fatalf("%d of max %d bytes: frame %x..., want %x...", n, max, f[:min(len(f), 8)], want[:min(len(want), 8)])
			}
			if &f[:cap(f)][cap(f)-1] != end {
				t.Errorf("%d of max %d bytes: the frame moved out of the array BeginFrame made", n, max)
			}
			if skipped := cap(b) - cap(f); skipped > uvarintLen(uint64(max))-1 {
				t.Errorf("%d of max %d bytes: %d bytes skipped before the header", n, max, skipped)
			}
		}
	}
}

func TestEndFrameRefusesOverMax(t *testing.T) {
	for _, max := range []int{0, 127, 128, 1 << 20} {
		b := append(BeginFrame(Message, max, max+1), make([]byte, max+1)...)
		if f, err := EndFrame(b, max); !errors.Is(err, ErrTooLarge) || f != nil {
			t.Errorf("max %d: a payload of %d bytes gave %d bytes, %v; want ErrTooLarge", max, max+1, len(f), err)
		}
	}
}

func TestNextIntoReusesBuffer(t *testing.T) {
	var stream []byte
	var payloads [][]byte
	for _, n := range []int{16384, 5, 0, 200, 1 << 21, 3} {
		p := bytes.Repeat([]byte{byte(n)}, n)
		stream = AppendFrame(stream, Message, p)
		payloads = append(payloads, p)
	}
	r := NewReader(bytes.NewReader(stream), 1<<21)
	var buf []byte
	for i, want := range payloads {
		typ, payload, frame, err := r.NextInto(buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != Message || !bytes.Equal(payload, want) || !bytes.Equal(frame, Frame(Message, want)) {
			t.Fatalf("frame %d: type %d, %d bytes of payload, %d of frame; want %d of payload", i, typ, len(payload), len(frame), len(want))
		}
		if &payload[:cap(payload)][cap(payload)-1] != &frame[:cap(frame)][cap(frame)-1] {
			t.Fatalf("frame %d: payload and frame in different arrays", i)
		}
		if len(frame) <= cap(buf) && &frame[:cap(frame)][cap(frame)-1] != &buf[:cap(buf)][cap(buf)-1] {
			t.Errorf("frame %d: %d bytes fit a buffer of %d, yet a new one was made", i, len(frame), cap(buf))
		}
		buf = frame
	}
	if _, _, frame, err := r.NextInto(buf); err != io.EOF || len(frame) != 0 || cap(frame) != cap(buf) {
		t.Fatalf("at the end: %d bytes (cap %d), %v; want none, the buffer, EOF", len(frame), cap(frame), err)
	}
}

func TestMembersRoundTrip(t *testing.T) {
	in := []Member{
		{ID: "a", Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("[::1]:2")}},
		{ID: "b"},
	}
	out, err := ParseMembers(AppendMembers(nil, in))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].ID != "a" || len(out[0].Addrs) != 2 || out[0].Addrs[1] != in[0].Addrs[1] || out[1].ID != "b" {
		t.Fatalf("got %+v", out)
	}
}

func FuzzReader(f *testing.F) {
	f.Add(Frame(Message, []byte("hi")))
	f.Add(Frame(Members, AppendMembers(nil, []Member{{ID: "x"}})))
	f.Add([]byte{Goodbye, 0})
	f.Add([]byte{Message, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), 1024)
		into := NewReader(bytes.NewReader(b), 1024)
		var buf []byte
		for i := 0; i < 100; i++ {
			typ, p, err := r.Next()
			typ2, p2, frame, err2 := into.NextInto(buf)
			if (err == nil) != (err2 == nil) || typ != typ2 || !bytes.Equal(p, p2) {
				t.Fatalf("Next: %d %q %v; NextInto: %d %q %v", typ, p, err, typ2, p2, err2)
			}
			if err != nil {
				return
			}
			if len(p) > 1024 {
				t.Fatalf("payload of %d bytes passed a 1024 limit", len(p))
			}
			if again := AppendFrame(nil, typ, p); !bytes.Equal(frame, again) {
				t.Fatalf("NextInto's frame %q, want %q", frame, again)
			}
			if typ == Members {
				ParseMembers(p)
			}
			buf = frame
		}
	})
}

func FuzzParseMembers(f *testing.F) {
	f.Add(AppendMembers(nil, []Member{{ID: "a", Addrs: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := ParseMembers(b)
		if err != nil {
			return
		}
		again, err := ParseMembers(AppendMembers(nil, ms))
		if err != nil || len(again) != len(ms) {
			t.Fatalf("round trip: %v, %d != %d", err, len(again), len(ms))
		}
	})
}
