package wire

import (
	"encoding/binary"
	"fmt"
)

// StreamHeaderLen is the length of a message stream's header: the id of
// the link that carried the sender's previous stream to this peer (0:
// none), the sender's epoch (its stream of frames to this peer, for as
// long as it knows the peer) and the sequence number of the stream's
// first sequenced frame, each 8 bytes, big-endian.
const StreamHeaderLen = 24

// StreamHeader is a message stream's header.
type StreamHeader struct {
	Prev  uint64
	Epoch uint64
	Start uint64
}

// Append appends h's encoding to b.
func (h StreamHeader) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, h.Prev)
	b = binary.BigEndian.AppendUint64(b, h.Epoch)
	return binary.BigEndian.AppendUint64(b, h.Start)
}

// ParseStreamHeader decodes the StreamHeaderLen bytes of b.
func ParseStreamHeader(b []byte) StreamHeader {
	return StreamHeader{
		Prev:  binary.BigEndian.Uint64(b[0:8]),
		Epoch: binary.BigEndian.Uint64(b[8:16]),
		Start: binary.BigEndian.Uint64(b[16:24]),
	}
}

// AppendAck appends an Ack frame to b: of the sender's frames of epoch,
// all before sequence number next have arrived. Layout: epoch[8]
// next[uvarint].
func AppendAck(b []byte, epoch, next uint64) []byte {
	at := len(b)
	b = append(b, Ack, 0)
	b = binary.BigEndian.AppendUint64(b, epoch)
	b = binary.AppendUvarint(b, next)
	b[at+1] = byte(len(b) - at - 2) // at most 18: one byte of length
	return b
}

// ParseAck decodes an Ack frame's payload.
func ParseAck(p []byte) (epoch, next uint64, err error) {
	if len(p) < 9 {
		return 0, 0, fmt.Errorf("%w: ack of %d bytes", ErrBadFrame, len(p))
	}
	next, n := binary.Uvarint(p[8:])
	if n <= 0 || 8+n != len(p) {
		return 0, 0, fmt.Errorf("%w: ack's sequence number", ErrBadFrame)
	}
	return binary.BigEndian.Uint64(p[:8]), next, nil
}

// MaxProbeID bounds the node id a Probe names.
const MaxProbeID = 255

// ProbeFrame returns a Probe frame: does the receiver hear the run inc
// of the node with id? Layout: nonce[8] inc[8] id.
func ProbeFrame(nonce uint64, inc int64, id string) []byte {
	p := binary.BigEndian.AppendUint64(make([]byte, 0, 16+len(id)), nonce)
	p = binary.BigEndian.AppendUint64(p, uint64(inc))
	return Frame(Probe, append(p, id...))
}

// ParseProbe decodes a Probe frame's payload.
func ParseProbe(p []byte) (nonce uint64, inc int64, id string, err error) {
	if len(p) < 17 || len(p) > 16+MaxProbeID {
		return 0, 0, "", fmt.Errorf("%w: probe of %d bytes", ErrBadFrame, len(p))
	}
	return binary.BigEndian.Uint64(p[:8]), int64(binary.BigEndian.Uint64(p[8:16])), string(p[16:]), nil
}

// Answers to a Probe.
const (
	// ProbeUnknown: the receiver has no link to that run of the node.
	ProbeUnknown byte = 0
	// ProbeAlive: the receiver hears that node.
	ProbeAlive byte = 1
	// ProbeSilent: the receiver's link to that node is silent too.
	ProbeSilent byte = 2
)

// ProbeReplyFrame returns the answer to the Probe with nonce. Layout:
// nonce[8] answer[1].
func ProbeReplyFrame(nonce uint64, answer byte) []byte {
	p := binary.BigEndian.AppendUint64(make([]byte, 0, 9), nonce)
	return Frame(ProbeReply, append(p, answer))
}

// ParseProbeReply decodes a ProbeReply frame's payload.
func ParseProbeReply(p []byte) (nonce uint64, answer byte, err error) {
	if len(p) != 9 || p[8] > ProbeSilent {
		return 0, 0, fmt.Errorf("%w: probe reply", ErrBadFrame)
	}
	return binary.BigEndian.Uint64(p[:8]), p[8], nil
}

// DeadFrame returns a Dead frame: the sender found the run inc of the
// node with id silent, and the peers it asked found it silent too. Layout:
// inc[8] id.
func DeadFrame(inc int64, id string) []byte {
	p := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), uint64(inc))
	return Frame(Dead, append(p, id...))
}

// ParseDead decodes a Dead frame's payload.
func ParseDead(p []byte) (inc int64, id string, err error) {
	if len(p) < 9 || len(p) > 8+MaxProbeID {
		return 0, "", fmt.Errorf("%w: dead of %d bytes", ErrBadFrame, len(p))
	}
	return int64(binary.BigEndian.Uint64(p[:8])), string(p[8:]), nil
}
