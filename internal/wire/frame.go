// Package wire holds the codecs of tallship's link streams: message frames
// and the member lists of peer exchange.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Frame types on a link's message stream.
const (
	// Message carries an application message.
	Message byte = 1
	// Members carries a member list (peer exchange).
	Members byte = 2
	// Goodbye says the sender is leaving the mesh.
	Goodbye byte = 3
)

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

// Reader reads frames from a stream, refusing any larger than Max.
type Reader struct {
	r   *bufio.Reader
	max int
}

// NewReader returns a Reader of frames from r whose payloads are at most
// max bytes.
func NewReader(r io.Reader, max int) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 1<<10), max: max} // big payloads bypass it
}

// Next reads the next frame. The payload is newly allocated and belongs to
// the caller. It returns io.EOF at a clean end of stream, ErrTooLarge or
// ErrBadFrame (wrapped) for a frame it refuses.
func (r *Reader) Next() (typ byte, payload []byte, err error) {
	typ, err = r.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	if typ < Message || typ > Goodbye {
		return 0, nil, fmt.Errorf("%w: unknown frame type %d", ErrBadFrame, typ)
	}
	n, err := binary.ReadUvarint(r.r)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: length: %w", ErrBadFrame, unexpected(err))
	}
	if n > uint64(r.max) {
		return 0, nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, n, r.max)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r.r, payload); err != nil {
		return 0, nil, fmt.Errorf("%w: payload: %w", ErrBadFrame, unexpected(err))
	}
	return typ, payload, nil
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
	for _, m := range ms {
		b = appendString(b, m.ID)
		addrs := m.Addrs
		if len(addrs) > maxMemberAddrs {
			addrs = addrs[:maxMemberAddrs]
		}
		b = binary.AppendUvarint(b, uint64(len(addrs)))
		for _, a := range addrs {
			b = appendString(b, a.String())
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
	var ms []Member
	for i := uint64(0); i < n && d.err == nil; i++ {
		m := Member{ID: d.string(maxMemberID)}
		na := d.uvarint()
		if na > maxMemberAddrs {
			return nil, fmt.Errorf("%w: %d addresses (max %d)", ErrBadFrame, na, maxMemberAddrs)
		}
		for j := uint64(0); j < na && d.err == nil; j++ {
			s := d.string(maxAddrText)
			if d.err != nil {
				break
			}
			a, err := netip.ParseAddrPort(s)
			if err != nil {
				return nil, fmt.Errorf("%w: address %q", ErrBadFrame, s)
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
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: string of %d bytes", ErrBadFrame, n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
