package transport

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
)

// Version is the link protocol version this package speaks: what a link
// carries, its streams' framings included. A node refuses a peer of
// another version in the handshake (ErrWrongVersion on both ends), before
// any stream exists.
//
//   - 2: the registry stream frames its messages as the message stream
//     does (type, uvarint length); 1 had a u32 length, which a node of
//     the other version would misread.
//   - 3: the registry protocol 3 (its Hello marks the sender's
//     neighbours; docs/registry-protocol.md), which a node of version 2
//     would refuse on the registry stream after the link was made.
//   - 4: the mesh's message streams carry sequence numbers and
//     acknowledgements (delivery across links), and probes of silent
//     peers (docs/protocol.md).
//   - 5: the registry protocol 4 (a change of adjacency goes as a delta;
//     docs/registry-protocol.md), which a node of version 4 would refuse
//     on the registry stream after the link was made.
//   - 6: the registry protocol 5 (owners' signatures and credentials;
//     docs/registry-protocol.md), likewise.
const Version = 6

// magic opens every handshake frame.
var magic = [4]byte{'T', 'S', 'H', 'P'}

// Limits on the fields of a hello, so that a hostile peer cannot make a
// node allocate without bound.
const (
	maxHelloBytes   = 16 << 10
	maxClusterBytes = 4 << 10
	maxIDBytes      = 1 << 10
	maxAddrs        = 32
	maxAddrBytes    = 64
	nonceSize       = 16
)

// Hello is what each side of a link tells the other first.
type Hello struct {
	// Version is the sender's link protocol version.
	Version uint16
	// Cluster is the sender's cluster name.
	Cluster string
	// ID is the sender's node id.
	ID string
	// Addrs are the addresses the sender can be reached at.
	Addrs []netip.AddrPort
	// Incarnation tells apart runs of a node with the same id: the later
	// run has the larger value (its start time in Unix nanoseconds).
	Incarnation int64
	// DialSeq counts the dials of the sender's run; on the acceptor's side
	// it is zero. It orders two links dialed by the same node.
	DialSeq uint64
	// Nonce is fresh randomness for this handshake; the dialer's names the
	// link.
	Nonce [nonceSize]byte
	// Flags say what protection the sender requires: a cluster secret,
	// TLS. Set by the transport from its Config.
	Flags byte
}

// frame layout: magic[4] version[2] length[4] body[length]. The layout is
// the same in every protocol version, so that a node can read, and refuse,
// a hello of a version it does not speak.
//
// It is not internal/wire's framing, which the streams share, and must
// not become it: the hello is what tells versions apart, so it cannot
// follow a framing that a version may change; and it is read from the raw
// connection, byte-exact, before the secure phase, which wire's buffered
// Reader would eat into (the acceptor's hello, its verdict and the first
// secure-phase bytes may arrive in one read). The same holds for the
// verdict and the secure phase's frames.
func (h *Hello) marshal() ([]byte, error) {
	if len(h.Cluster) > maxClusterBytes {
		return nil, fmt.Errorf("%w: cluster name of %d bytes (max %d)", ErrBadHandshake, len(h.Cluster), maxClusterBytes)
	}
	if len(h.ID) > maxIDBytes {
		return nil, fmt.Errorf("%w: node id of %d bytes (max %d)", ErrBadHandshake, len(h.ID), maxIDBytes)
	}
	addrs := h.Addrs
	if len(addrs) > maxAddrs {
		addrs = addrs[:maxAddrs]
	}
	body := make([]byte, 0, 64+len(h.Cluster)+len(h.ID)+len(addrs)*32)
	body = appendString(body, h.Cluster)
	body = appendString(body, h.ID)
	body = binary.AppendUvarint(body, uint64(len(addrs)))
	for _, a := range addrs {
		s := a.String()
		body = appendString(body, s)
	}
	body = binary.BigEndian.AppendUint64(body, uint64(h.Incarnation))
	body = binary.BigEndian.AppendUint64(body, h.DialSeq)
	body = append(body, h.Nonce[:]...)
	body = append(body, h.Flags)
	out := make([]byte, 0, 10+len(body))
	out = append(out, magic[:]...)
	out = binary.BigEndian.AppendUint16(out, h.Version)
	out = binary.BigEndian.AppendUint32(out, uint32(len(body)))
	return append(out, body...), nil
}

// readHello reads one hello frame. A frame of another version is returned
// with only Version set, and no error: the caller refuses it politely.
func readHello(r io.Reader) (Hello, error) {
	h, _, err := readHelloRaw(r)
	return h, err
}

// readHelloRaw is readHello that also returns the frame's bytes.
func readHelloRaw(r io.Reader) (Hello, []byte, error) {
	var head [10]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return Hello{}, nil, err
	}
	if [4]byte(head[:4]) != magic {
		return Hello{}, nil, fmt.Errorf("%w: bad magic %q", ErrBadHandshake, head[:4])
	}
	h := Hello{Version: binary.BigEndian.Uint16(head[4:6])}
	n := binary.BigEndian.Uint32(head[6:10])
	if n > maxHelloBytes {
		return Hello{}, nil, fmt.Errorf("%w: hello of %d bytes (max %d)", ErrBadHandshake, n, maxHelloBytes)
	}
	raw := make([]byte, 10+n)
	copy(raw, head[:])
	if _, err := io.ReadFull(r, raw[10:]); err != nil {
		return Hello{}, nil, err
	}
	if h.Version != Version {
		return h, raw, nil
	}
	if err := h.unmarshalBody(raw[10:]); err != nil {
		return Hello{}, nil, err
	}
	return h, raw, nil
}

// ParseHello decodes one hello frame from b. It is the decoder readHello
// uses, exposed for fuzzing and tools.
func ParseHello(b []byte) (Hello, error) {
	return readHello(bytes.NewReader(b))
}

func (h *Hello) unmarshalBody(b []byte) error {
	d := &decoder{b: b}
	h.Cluster = d.string(maxClusterBytes, "cluster name")
	h.ID = d.string(maxIDBytes, "node id")
	n := d.uvarint()
	if d.err == nil && n > maxAddrs {
		d.fail("%d addresses (max %d)", n, maxAddrs)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		s := d.string(maxAddrBytes, "address")
		if d.err != nil {
			break
		}
		a, err := netip.ParseAddrPort(s)
		if err != nil {
			d.fail("address %q: %v", s, err)
			break
		}
		h.Addrs = append(h.Addrs, a)
	}
	h.Incarnation = int64(d.uint64())
	h.DialSeq = d.uint64()
	copy(h.Nonce[:], d.bytes(nonceSize))
	if f := d.bytes(1); f != nil {
		h.Flags = f[0]
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads fields from a byte slice, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrBadHandshake}, args...)...)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(max int, what string) string {
	n := d.uvarint()
	if d.err == nil && n > uint64(max) {
		d.fail("%s of %d bytes (max %d)", what, n, max)
	}
	return string(d.bytes(int(n)))
}

func (d *decoder) uint64() uint64 {
	b := d.bytes(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
