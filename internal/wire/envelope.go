package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Envelopes carry the mesh's messages between sites over NATS
// (docs/protocol.md, "Across sites"): each NATS message is one envelope,
// from one node to one node (on that node's subject) or to several nodes
// of one site (on the site's subject). Layout:
//
//	u8      version      EnvelopeVersion
//	string  site         the sender's site (uvarint length, then bytes)
//	string  node         the sender's id
//	u64     run          the sender's run (its registry's incarnation)
//	u8      flags        bit 0: an ack follows; bit 1: with it, follows
//	[ack]   epoch[8] next[uvarint] [follows[8]]
//	uvarint count        addressees; 0: nothing follows
//	count × key[8] epoch[8] base[uvarint] seq[uvarint]
//	uvarint part         with count > 0: this envelope's part of its
//	uvarint parts        frames, from 0, and how many parts
//	frames               the rest
//
// The ack says that of the receiver's frames to the sender, of the
// receiver's epoch, every one before next was delivered. Follows, when
// set, is an epoch of the sender's frames to the receiver that the
// receiver takes for later than the one it dropped frames of: the sender
// never used it (a forged envelope did), and starts one later. Each addressee
// is a receiver (the NodeKey of its id and run), the sender's epoch for it (its stream of
// frames to that node), base, the number of the oldest frame the sender
// holds for it unacknowledged, and seq, the number of the first frame
// here: with parts 1, the frames are whole Message frames, numbered seq,
// seq+1, … for that receiver; with parts > 1, they are part part of one
// Message frame numbered seq, cut where the NATS message ends.
type Envelope struct {
	Site, Node []byte // point into the parsed bytes
	Run        uint64
	Ack        bool
	AckEpoch   uint64
	AckNext    uint64
	AckFollows uint64 // with Ack: 0, or the epoch the receiver follows (see above)
	To         []Addressee
	Part       int
	Parts      int
	Frames     []byte // points into the parsed bytes
}

// Addressee is one receiver of an envelope's frames and their numbers for
// it.
type Addressee struct {
	Key   uint64 // NodeKey of the receiver's id and run
	Epoch uint64
	Base  uint64
	Seq   uint64
}

// EnvelopeVersion is the version of the envelopes this package reads and
// writes.
const EnvelopeVersion = 1

// Bounds of an envelope.
const (
	MaxEnvelopeSite = 64
	MaxEnvelopeNode = 255
	// MaxAddressees bounds an envelope's addressees (the members of one
	// site it is for).
	MaxAddressees = 4096
	// MaxParts bounds the parts of one frame.
	MaxParts = 1 << 16
)

// Flags of an envelope.
const (
	envelopeAck     = 1 // an ack follows
	envelopeFollows = 2 // with envelopeAck: the ack's follows
)

// ErrEnvelopeVersion: an envelope of another version. It wraps
// ErrBadFrame, as the envelope decoder's other errors do.
var ErrEnvelopeVersion = fmt.Errorf("%w: envelope of another version", ErrBadFrame)

// NodeKey is the key that names a run of a node in an envelope's
// addressees: the first 8 bytes of a SHA-256 of its id and run. An
// envelope for one run is not for the next. Two nodes of one site may
// share one (a sender then does not address them in one envelope).
func NodeKey(id string, run uint64) uint64 {
	b := binary.BigEndian.AppendUint64([]byte("tallship envelope key\x00"), run)
	sum := sha256.Sum256(append(b, id...))
	return binary.BigEndian.Uint64(sum[:8])
}

// EnvelopeHeaderMax bounds the bytes of an envelope's header (all but its
// frames) from a sender of site and node, with n addressees.
func EnvelopeHeaderMax(site, node string, n int) int {
	return 1 + 2*binary.MaxVarintLen16 + len(site) + len(node) + 8 + 1 + 8 + binary.MaxVarintLen64 + 8 +
		binary.MaxVarintLen16 + n*(16+2*binary.MaxVarintLen64) + 2*binary.MaxVarintLen32
}

// AppendEnvelopeHeader appends e's header to b: all but e.Frames, which
// the caller appends after it.
func AppendEnvelopeHeader(b []byte, e *Envelope) []byte {
	b = append(b, EnvelopeVersion)
	b = binary.AppendUvarint(b, uint64(len(e.Site)))
	b = append(b, e.Site...)
	b = binary.AppendUvarint(b, uint64(len(e.Node)))
	b = append(b, e.Node...)
	b = binary.BigEndian.AppendUint64(b, e.Run)
	switch {
	case e.Ack && e.AckFollows != 0:
		b = append(b, envelopeAck|envelopeFollows)
		b = binary.BigEndian.AppendUint64(b, e.AckEpoch)
		b = binary.AppendUvarint(b, e.AckNext)
		b = binary.BigEndian.AppendUint64(b, e.AckFollows)
	case e.Ack:
		b = append(b, envelopeAck)
		b = binary.BigEndian.AppendUint64(b, e.AckEpoch)
		b = binary.AppendUvarint(b, e.AckNext)
	default:
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(e.To)))
	if len(e.To) == 0 {
		return b
	}
	for _, a := range e.To {
		b = binary.BigEndian.AppendUint64(b, a.Key)
		b = binary.BigEndian.AppendUint64(b, a.Epoch)
		b = binary.AppendUvarint(b, a.Base)
		b = binary.AppendUvarint(b, a.Seq)
	}
	b = binary.AppendUvarint(b, uint64(e.Part))
	return binary.AppendUvarint(b, uint64(e.Parts))
}

// ParseEnvelope decodes p into e, reusing e.To's array. e's byte fields
// point into p. It checks the envelope's bounds, not its frames (see
// ParseMessages). Errors wrap ErrBadFrame (ErrEnvelopeVersion for
// another version).
func ParseEnvelope(p []byte, e *Envelope) error {
	if len(p) == 0 || p[0] != EnvelopeVersion {
		return ErrEnvelopeVersion
	}
	d := decoder{b: p[1:]}
	e.Site = d.name(MaxEnvelopeSite, "site")
	e.Node = d.name(MaxEnvelopeNode, "node")
	e.Run = d.uint64()
	flags := d.byte()
	if d.err == nil && flags != 0 && flags != envelopeAck && flags != envelopeAck|envelopeFollows {
		d.fail("flags %#x", flags)
	}
	e.Ack = flags&envelopeAck != 0
	e.AckEpoch, e.AckNext, e.AckFollows = 0, 0, 0
	if e.Ack {
		e.AckEpoch = d.uint64()
		e.AckNext = d.uvarint()
	}
	if flags&envelopeFollows != 0 {
		e.AckFollows = d.uint64()
		if d.err == nil && e.AckFollows == 0 {
			d.fail("follows epoch 0")
		}
	}
	n := d.uvarint()
	if d.err == nil && n > MaxAddressees {
		d.fail("%d addressees", n)
	}
	e.To = e.To[:0]
	e.Part, e.Parts, e.Frames = 0, 0, nil
	for i := uint64(0); i < n && d.err == nil; i++ {
		a := Addressee{Key: d.uint64(), Epoch: d.uint64(), Base: d.uvarint(), Seq: d.uvarint()}
		if d.err == nil && a.Base > a.Seq {
			d.fail("base %d after seq %d", a.Base, a.Seq)
		}
		e.To = append(e.To, a)
	}
	if n > 0 {
		part, parts := d.uvarint(), d.uvarint()
		if d.err == nil && (parts == 0 || parts > MaxParts || part >= parts) {
			d.fail("part %d of %d", part, parts)
		}
		e.Part, e.Parts = int(part), int(parts)
		if d.err == nil && len(d.b) == 0 {
			d.fail("no frames")
		}
		e.Frames = d.b
	} else if d.err == nil && (len(d.b) > 0 || !e.Ack) {
		d.fail("%d bytes and no addressee", len(d.b))
	}
	return d.err
}

// ParseMessages appends to dst the payloads of the Message frames of b,
// which holds one or more of them and nothing else, each at most max
// bytes. The payloads point into b. Errors wrap ErrBadFrame (ErrTooLarge
// for a payload over max).
func ParseMessages(dst [][]byte, b []byte, max int) ([][]byte, error) {
	if len(b) == 0 {
		return dst, fmt.Errorf("%w: no frame", ErrBadFrame)
	}
	for len(b) > 0 {
		if b[0] != Message {
			return dst, fmt.Errorf("%w: frame of type %d across sites", ErrBadFrame, b[0])
		}
		n, k := binary.Uvarint(b[1:])
		switch {
		case k <= 0:
			return dst, fmt.Errorf("%w: length", ErrBadFrame)
		case n > uint64(max):
			return dst, fmt.Errorf("%w: %w: %d bytes (max %d)", ErrBadFrame, ErrTooLarge, n, max)
		case n > uint64(len(b)-1-k):
			return dst, fmt.Errorf("%w: frame of %d bytes cut short", ErrBadFrame, n)
		}
		start := 1 + k
		dst = append(dst, b[start:start+int(n):start+int(n)])
		b = b[start+int(n):]
	}
	return dst, nil
}

// The decoder's reads of envelopes, beside frame.go's.

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: envelope: "+format, append([]any{ErrBadFrame}, args...)...)
	}
}

// take returns the next n bytes, or nil (and fails) when fewer are left.
func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("cut short")
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) byte() byte {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) uint64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// name reads a string of 1 to max bytes without control characters, in
// place.
func (d *decoder) name(max int, what string) []byte {
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > uint64(max)) {
		d.fail("%s of %d bytes", what, n)
	}
	s := d.take(int(min(n, uint64(max))))
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			d.fail("%s with a control character", what)
			return nil
		}
	}
	return s
}
