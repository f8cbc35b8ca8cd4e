package registry

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"testing"

	"github.com/tallship-go/tallship/internal/wire"
)

// splitFrame returns the type and payload of f, one whole frame, read as a
// registry stream's reader reads it.
func splitFrame(f []byte) (msgType, []byte) {
	t, p, _, err := readFrame(newFrameReader(bytes.NewReader(f), len(f)), nil)
	if err != nil {
		panic(err)
	}
	return t, p
}

// Every encoder's frame reads back, through one reused buffer, as its
// type, its payload and the frame byte for byte (what a relay forwards).
func TestFramesRoundTrip(t *testing.T) {
	frames := seedFrames()
	fr := newFrameReader(bytes.NewReader(bytes.Join(frames, nil)), 1<<20)
	d := decoder{maxMeta: 4096}
	var buf []byte
	for i, want := range frames {
		typ, payload, frame, err := readFrame(fr, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(frame, want) || typ != msgType(want[0]) {
			t.Fatalf("frame %d: %s %x, want %x", i, typ, frame, want)
		}
		var m message
		if err := d.decode(typ, payload, &m); err != nil || m.typ != typ {
			t.Fatalf("frame %d: decoded %s, %v", i, m.typ, err)
		}
		buf = frame
	}
	if _, _, _, err := readFrame(fr, buf); err != io.EOF {
		t.Fatalf("at the end: %v, want EOF", err)
	}
}

// The bound the encoders check is the one the reader enforces: a message
// of max bytes passes both, one more neither.
func TestFrameBoundIsTheReadersBound(t *testing.T) {
	const max = 100
	fits := must(encodeWant(string(bytes.Repeat([]byte("x"), max-1)), max)) // a uvarint length then the id
	if _, _, _, err := readFrame(newFrameReader(bytes.NewReader(fits), max), nil); err != nil {
		t.Fatalf("a frame the encoder let through: %v", err)
	}
	if _, err := encodeWant(string(bytes.Repeat([]byte("x"), max)), max); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("encoding one byte more: %v, want ErrMessageTooLarge", err)
	}
	over := wire.Frame(byte(msgWant), make([]byte, max+1))
	if _, _, _, err := readFrame(newFrameReader(bytes.NewReader(over), max), nil); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("reading one byte more: %v, want ErrMessageTooLarge", err)
	}
}

// A frame that is too large or malformed closes the registry stream it
// came on, and only that: the node and its other links carry on.
func TestBadFrameClosesOnlyItsStream(t *testing.T) {
	const max = 64 << 10
	hello := func(f *fakePeer) []byte {
		return must(encodeHello(f.id, []digestEntry{{owner: f.id, inc: f.inc, beat: 1}}, max))
	}
	// A version 1 peer: the same hello behind a u32 length.
	oldHello := func(f *fakePeer) []byte {
		m := typeAndPayload(hello(f))
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(m))), m...)
	}
	for _, tc := range []struct {
		name   string
		frames func(f *fakePeer) [][]byte
		want   error
	}{
		{"oversized", func(f *fakePeer) [][]byte {
			return [][]byte{hello(f), binary.AppendUvarint([]byte{byte(msgPut)}, max+1)}
		}, ErrMessageTooLarge},
		{"largest length", func(f *fakePeer) [][]byte {
			return [][]byte{hello(f), binary.AppendUvarint([]byte{byte(msgSnap)}, math.MaxUint64)}
		}, ErrMessageTooLarge},
		{"length overflows", func(f *fakePeer) [][]byte {
			return [][]byte{hello(f), {byte(msgState), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}}
		}, ErrProtocol},
		{"unknown type", func(f *fakePeer) [][]byte {
			return [][]byte{hello(f), wire.Frame(99, []byte{1, 2})}
		}, ErrProtocol},
		{"version 1 framing", func(f *fakePeer) [][]byte {
			return [][]byte{oldHello(f)}
		}, ErrProtocol},
		{"truncated field", func(f *fakePeer) [][]byte {
			return [][]byte{hello(f), wire.Frame(byte(msgWant), []byte{5, 'a'})}
		}, ErrProtocol},
		{"trailing bytes", func(f *fakePeer) [][]byte {
			return [][]byte{hello(f), wire.Frame(byte(msgSynced), []byte{0})}
		}, ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newNode(t, "b", func(c *Config) { c.MaxMessageBytes = max })
			a := newNode(t, "a", func(c *Config) { c.MaxMessageBytes = max })
			connectSynced(t, a, b)
			f := newFakePeer(t, b, "bad", 5)
			f.send(tc.frames(f)...)
			if err := f.serveErr(); !errors.Is(err, tc.want) {
				t.Fatalf("Serve = %v, want %v", err, tc.want)
			}
			if _, err := f.conn.Write([]byte{byte(msgSynced), 0}); err == nil {
				t.Fatal("the bad peer's stream is still open")
			}
			fromA := a.register(t, "web@1.0.0", 80, nil)
			b.waitEvent(t, Registered, fromA.ID)
			fromB := b.register(t, "db@1.0.0", 81, nil)
			a.waitEvent(t, Registered, fromB.ID)
		})
	}
}

// A new link's decoder takes the ids of the owners its registry knows
// from the registry: a State naming them costs the new link no string of
// its own (each link held a copy of every id before, N² a node).
func TestDecoderSharesKnownIDs(t *testing.T) {
	var known idTable
	var peers []peerRef
	for i := range 20 {
		id := fmt.Sprintf("node-%02d", i)
		known.add(id)
		peers = append(peers, peerRef{id: id, inc: uint64(i + 1)})
	}
	typ, p := splitFrame(must(encodeState(peers[0].id, 1, 0, 1, false, peers[1:], 1<<20)))
	var m message
	warm := decoder{maxMeta: 4096, known: &known}
	if err := warm.decode(typ, p, &m); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(10, func() {
		d := decoder{maxMeta: 4096, known: &known} // a new link's
		if err := d.decode(typ, p, &m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a new link's decoder allocated %v times for a State of known ids", allocs)
	}
	if m.peers[0].id != peers[1].id {
		t.Errorf("decoded %q, want %q", m.peers[0].id, peers[1].id)
	}
}

// TestStateNeighboursInOrderOnce: a State names each neighbour once, in
// order (as every encoder writes them); one that repeats a neighbour, or
// lists them out of order, is refused whole: read either way, it would
// make the adjacency applied depend on how the reader walks it.
func TestStateNeighboursInOrderOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		peers []peerRef
		ok    bool
	}{
		{"in order", []peerRef{{"a", 1}, {"b", 2}}, true},
		{"repeated", []peerRef{{"a", 1}, {"a", 2}, {"b", 1}}, false},
		{"out of order", []peerRef{{"b", 1}, {"a", 1}}, false},
	} {
		typ, p := splitFrame(must(encodeState("x", 1, 0, 1, false, tc.peers, 1<<20)))
		var m message
		d := decoder{maxMeta: 4096}
		err := d.decode(typ, p, &m)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrProtocol)) {
			t.Errorf("%s: decode = %v, want ok %v (else ErrProtocol)", tc.name, err, tc.ok)
		}
	}
}
