package wire

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
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
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"max passes", Frame(Message, make([]byte, 64)), nil},
		{"one more is refused", Frame(Message, make([]byte, 65)), ErrTooLarge},
		{"unknown type", []byte{99, 0}, ErrBadFrame},
		{"truncated payload", []byte{Message, 5, 1, 2}, ErrBadFrame},
		{"truncated length", []byte{Message, 0x80}, ErrBadFrame},
	}
	for _, tt := range tests {
		_, _, err := NewReader(bytes.NewReader(tt.in), 64).Next()
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
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
		for i := 0; i < 100; i++ {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			if len(p) > 1024 {
				t.Fatalf("payload of %d bytes passed a 1024 limit", len(p))
			}
			if typ == Members {
				ParseMembers(p)
			}
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
