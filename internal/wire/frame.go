// Package wire holds the codecs of tallship's link streams: the frames
// of the message and registry streams, and the member lists of peer
// exchange.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Frame types on a link's message stream. The registry stream's frames
// carry the registry's message types instead (see NewReaderTypes).
const (
	// Message carries an application message.
	Message byte = 1
	// Members carries a member list (peer exchange).
	Members byte = 2
	// Goodbye says the sender is leaving the mesh.
	Goodbye byte = 3
	// Ack acknowledges the frames received from the peer (AppendAck).
	Ack byte = 4
	// Probe asks the peer whether it hears a third node (AppendProbe).
	Probe byte = 5
	// ProbeReply answers a Probe (AppendProbeReply).
	ProbeReply byte = 6
	// Dead says the sender found a node silent, and the peers it asked
	// too (DeadFrame).
	Dead byte = 7
)

// Sequenced reports whether frames of type typ count in a message
// stream's sequence (see docs/protocol.md, "Delivery"): the ones queued
// by Send and peer exchange, which a new link resends until the peer
// acknowledges them. The others are about the link in hand.
func Sequenced(typ byte) bool { return typ == Message || typ == Members }

// Errors of the frame decoder.
var (
	// ErrTooLarge: a frame is larger than the reader allows.
	ErrTooLarge = errors.New("wire: frame too large")
	// ErrBadFrame: bytes that are not a valid frame.
	ErrBadFrame = errors.New("wire: malformed frame")
)

// HeaderMax is the most bytes a frame header takes.
const HeaderMax = 1 + binary.MaxVarintLen64

// AppendFrame appends a frame of type typ carrying payload to b.
// Layout: type[1] length[uvarint] payload[length].
func AppendFrame(b []byte, typ byte, payload []byte) []byte {
	b = append(b, typ)
	b = binary.AppendUvarint(b, uint64(len(payload)))
	return append(b, payload...)
}

// Frame returns a new frame of type typ carrying payload, in one
// allocation.
func Frame(typ byte, payload []byte) []byte {
	return AppendFrame(make([]byte, 0, HeaderMax+len(payload)), typ, payload)
}

// BeginFrame starts a new frame of type typ whose payload, at most max
// bytes, is encoded in place, for an encoder that learns the payload's
// length only once it has written it: append the payload to the result
// (hint is its expected size), then pass it to EndFrame with the same max.
// The result starts with room for the longest header such a payload
// needs, its first byte the type. One allocation when hint is enough, and
// no copy.
func BeginFrame(typ byte, max, hint int) []byte {
	room := 1 + uvarintLen(uint64(max))
	b := make([]byte, room, room+hint)
	b[0] = typ
	return b
}

// EndFrame completes a frame begun with BeginFrame(typ, max, hint) and
// returns it: b's array, from the header written just before the payload
// (the room the header does not need is skipped). It returns ErrTooLarge
// (wrapped) for a payload over max. b must not be used after.
func EndFrame(b []byte, max int) ([]byte, error) {
	room := 1 + uvarintLen(uint64(max))
	n := len(b) - room
	if n > max {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, n, max)
	}
	h := 1 + uvarintLen(uint64(n))
	f := b[room-h:]
	f[0] = b[0]
	binary.PutUvarint(f[1:], uint64(n))
	return f, nil
}

func uvarintLen(n uint64) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// Reader reads frames from a stream, refusing any larger than its max or
// of a type it does not know.
type Reader struct {
	r           *bufio.Reader
	length      byteReader // r, for binary.ReadUvarint
	max         int
	first, last byte
}

// byteReader is a bufio.Reader that keeps the error of its last ReadByte:
// binary.ReadUvarint returns the stream's errors and its own overflow
// alike.
type byteReader struct {
	r   *bufio.Reader
	err error
}

func (b *byteReader) ReadByte() (byte, error) {
	c, err := b.r.ReadByte()
	b.err = err
	return c, err
}

// NewReader returns a Reader of a message stream's frames (types Message
// to Dead) whose payloads are at most max bytes.
func NewReader(r io.Reader, max int) *Reader {
	return NewReaderTypes(r, max, Message, Dead)
}

// NewReaderTypes returns a Reader of frames of the types first to last
// whose payloads are at most max bytes: the frames of another stream than
// the message stream.
func NewReaderTypes(r io.Reader, max int, first, last byte) *Reader {
	br := bufio.NewReaderSize(r, readBuffer) // big payloads bypass it
	return &Reader{r: br, length: byteReader{r: br}, max: max, first: first, last: last}
}

// readBuffer is a Reader's buffer: every link of a big mesh holds two
// readers, one of its message stream and one of its registry's. Reads
// come from yamux's buffer in memory, not the connection: 64-byte
// messages one way ran as fast with 512 bytes as with 1 KiB (629–643 vs
// 618–640 ns each, BenchmarkSendReceive64).
const readBuffer = 512

// Next reads the next frame. The payload is newly allocated and belongs to
// the caller. It returns io.EOF at a clean end of stream,
// io.ErrUnexpectedEOF for a stream that ends inside a frame, ErrTooLarge
// or ErrBadFrame (wrapped) for a frame it refuses, and the stream's other
// read errors as they are.
func (r *Reader) Next() (typ byte, payload []byte, err error) {
	typ, n, err := r.header()
	if err != nil {
		return 0, nil, err
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r.r, payload); err != nil {
		return 0, nil, unexpected(err)
	}
	return typ, payload, nil
}

// NextInto reads the next frame into buf's array when it is large enough
// (into a new one when not) and returns its type, its payload and the
// whole frame (header then payload: the bytes that forward it as
// received, its length written in the shortest form); payload and frame
// share that array, so they are valid until buf is reused. On error
// frame is buf[:0]. Errors as Next.
func (r *Reader) NextInto(buf []byte) (typ byte, payload, frame []byte, err error) {
	typ, n, err := r.header()
	if err != nil {
		return 0, nil, buf[:0], err
	}
	hn := 1 + uvarintLen(uint64(n))
	if cap(buf) < hn+n {
		buf = make([]byte, hn+n)
	}
	frame = buf[:hn+n]
	frame[0] = typ
	binary.PutUvarint(frame[1:hn], uint64(n))
	if _, err := io.ReadFull(r.r, frame[hn:]); err != nil {
		return 0, nil, buf[:0], unexpected(err)
	}
	return typ, frame[hn:], frame, nil
}

// header reads a frame's type and length, checking both.
func (r *Reader) header() (typ byte, n int, err error) {
	typ, err = r.r.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	if typ < r.first || typ > r.last {
		return 0, 0, fmt.Errorf("%w: unknown frame type %d", ErrBadFrame, typ)
	}
	u, err := binary.ReadUvarint(&r.length)
	if err != nil {
		if r.length.err != nil {
			return 0, 0, unexpected(r.length.err)
		}
		return 0, 0, fmt.Errorf("%w: length: %w", ErrBadFrame, err)
	}
	if u > uint64(r.max) {
		return 0, 0, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, u, r.max)
	}
	return typ, int(u), nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Member is one entry of a member list.
type Member struct {
	ID    string
	Addrs []netip.AddrPort
}

// Limits of a member list.
const (
	maxMembers     = 4096
	maxMemberID    = 1 << 10
	maxMemberAddrs = 32
	maxAddrText    = 64
)

// AppendMembers encodes a member list.
func AppendMembers(b []byte, ms []Member) []byte {
	b = binary.AppendUvarint(b, uint64(len(ms)))
	var text [maxAddrText]byte // an address's text, without a string of its own
	for _, m := range ms {
		b = appendString(b, m.ID)
		addrs := m.Addrs
		if len(addrs) > maxMemberAddrs {
			addrs = addrs[:maxMemberAddrs]
		}
		b = binary.AppendUvarint(b, uint64(len(addrs)))
		for _, a := range addrs {
			t := a.AppendTo(text[:0])
			b = binary.AppendUvarint(b, uint64(len(t)))
			b = append(b, t...)
		}
	}
	return b
}

// ParseMembers decodes a member list.
func ParseMembers(b []byte) ([]Member, error) {
	d := decoder{b: b}
	n := d.uvarint()
	if n > maxMembers {
		return nil, fmt.Errorf("%w: %d members (max %d)", ErrBadFrame, n, maxMembers)
	}
	// Room for as many members as the bytes left can hold (an id and a
	// count at least each), not as many as a hostile count says.
	ms := make([]Member, 0, min(n, uint64(len(d.b)/2)))
	for i := uint64(0); i < n && d.err == nil; i++ {
		m := Member{ID: d.string(maxMemberID)}
		na := d.uvarint()
		if na > maxMemberAddrs {
			return nil, fmt.Errorf("%w: %d addresses (max %d)", ErrBadFrame, na, maxMemberAddrs)
		}
		if na > 0 && d.err == nil {
			m.Addrs = make([]netip.AddrPort, 0, min(na, uint64(len(d.b))))
		}
		for j := uint64(0); j < na && d.err == nil; j++ {
			t := d.bytes(maxAddrText)
			if d.err != nil {
				break
			}
			a, err := netip.ParseAddrPort(string(t))
			if err != nil {
				return nil, fmt.Errorf("%w: address %q", ErrBadFrame, t)
			}
			m.Addrs = append(m.Addrs, a)
		}
		ms = append(ms, m)
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrBadFrame, len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return ms, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrBadFrame)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(max int) string {
	return string(d.bytes(max))
}

// bytes reads a length-prefixed string of at most max bytes, as the frame's
// own bytes (nil after an error).
func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: string of %d bytes", ErrBadFrame, n)
		return nil
	}
	t := d.b[:n:n]
	d.b = d.b[n:]
	return t
}
