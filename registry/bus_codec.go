package registry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// The bus's messages (see ServeBus and docs/sites.md). A bus message is
// an envelope, then registry frames as a link's stream carries them:
//
//	byte    version (busVersion)
//	string  site    the sender's site
//	string  node    the sender's id
//	frames  one or more: type[1] length[uvarint] payload[length]
//
// The frames are Put, Del and Cred as on a link; Snap as on a link after
// its chunk's index and the number of chunks; Want as on a link, then
// the asker's clock; and two of the bus's own: Beat (an owner's
// liveness) and Sync (every node of another site, send me what you own).
// Beat, Sync and Want carry the sender's wall clock (Unix milliseconds):
// a receiver drops them when that is not within busWindow of its own, so
// that an old one replayed does nothing.

// busVersion is the bus envelope's version. Version 1 (the first step)
// had no clocks and no chunk numbers; a node drops the other version's
// messages quietly.
const busVersion = 2

// The bus's own message types, after the link protocol's.
const (
	msgBeat msgType = 9  // owner, inc, seq, beat, flags, lifetime_ms, time_ms, sig
	msgSync msgType = 10 // time_ms
)

// A Beat's flags.
const (
	beatLeaving  = 1
	beatObserver = 2
)

// busFrame is a frame of a bus message: its type, its payload (not yet
// decoded), and what decodeBus reads that the link protocol's message
// has no room for.
type busFrame struct {
	typ     msgType
	payload []byte
	at      time.Time // Beat, Sync, Want: the sender's clock
	part    int       // Snap: the chunk's index, from 0
	parts   int       // Snap: the number of chunks
}

// MaxSiteBytes bounds a site name.
const MaxSiteBytes = 64

// CheckSite reports why site is not a valid site name, or nil: 1 to
// MaxSiteBytes bytes of ASCII letters, digits, '.', '-' and '_', starting
// with a letter or a digit. Errors wrap ErrConfig.
func CheckSite(site string) error {
	if len(site) > MaxSiteBytes {
		return fmt.Errorf("%w: site longer than %d bytes", ErrConfig, MaxSiteBytes)
	}
	if err := checkName(site); err != nil {
		return fmt.Errorf("%w: site: %v", ErrConfig, err)
	}
	return nil
}

// busHeaderSize bounds an envelope's header for a site and a node id.
func busHeaderSize(site, node string) int {
	return 1 + 2*binary.MaxVarintLen16 + len(site) + len(node)
}

// appendBusHeader starts a bus message from node of site.
func appendBusHeader(b []byte, site, node string) []byte {
	b = append(b, busVersion)
	b = appendString(b, site)
	return appendString(b, node)
}

// beatSigned returns what an owner signs for a Beat: its own label, so
// that no Beat passes for a State of the link protocol and no State for
// a Beat.
func beatSigned(owner string, inc, seq, beat uint64, leaving, observer bool, lifetime time.Duration, at time.Time) []byte {
	b := make([]byte, 0, len(labelBeat)+60+len(owner))
	b = append(b, labelBeat...)
	return appendBeat(b, owner, inc, seq, beat, leaving, observer, lifetime, at)
}

// appendBeat appends a Beat's fields but its signature: what encodeBeat
// sends and, behind its label, what beatSigned signs.
func appendBeat(b []byte, owner string, inc, seq, beat uint64, leaving, observer bool, lifetime time.Duration, at time.Time) []byte {
	b = appendOwner(b, owner, inc, seq)
	b = binary.AppendUvarint(b, beat)
	var flags byte
	if leaving {
		flags |= beatLeaving
	}
	if observer {
		flags |= beatObserver
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(max(lifetime.Milliseconds(), 0)))
	return binary.AppendUvarint(b, unixMilli(at))
}

// labelBeat opens what an owner signs for a Beat.
const labelBeat = "tallship registry site beat v2\x00"

// unixMilli is t as the bus carries a clock: Unix milliseconds, 0 for
// times before 1970.
func unixMilli(t time.Time) uint64 { return uint64(max(t.UnixMilli(), 0)) }

// encodeBeat encodes a Beat: the owner's run, its records' seq, the
// beat's number (rising in the run), leaving, whether the owner only
// observes, the record lifetime, the owner's clock, and the owner's
// signature (nil when owners do not sign).
func encodeBeat(owner string, inc, seq, beat uint64, leaving, observer bool, lifetime time.Duration, at time.Time, sig []byte, limit int) ([]byte, error) {
	b := beginFrame(msgBeat, 60+len(owner)+len(sig), limit)
	b = appendBeat(b, owner, inc, seq, beat, leaving, observer, lifetime, at)
	b = appendBytes(b, sig)
	return endFrame(b, limit)
}

// encodeSync encodes a Sync at the asker's clock at.
func encodeSync(at time.Time) []byte {
	b := beginFrame(msgSync, binary.MaxVarintLen64, binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, unixMilli(at))
	f, err := endFrame(b, binary.MaxVarintLen64)
	if err != nil {
		panic(err) // a clock fits
	}
	return f
}

// encodeBusWant encodes a Want of owner's records, at the asker's clock
// at.
func encodeBusWant(owner string, at time.Time, limit int) ([]byte, error) {
	b := beginFrame(msgWant, 12+len(owner), limit)
	b = appendString(b, owner)
	b = binary.AppendUvarint(b, unixMilli(at))
	return endFrame(b, limit)
}

// snapPartHead bounds what a chunk's index and count add to a Snap frame.
const snapPartHead = 2 * binary.MaxVarintLen32

// encodeBusSnap encodes an owner's records as the bus carries them: Snap
// frames of the link protocol within limit, each with its index and the
// number of chunks before the link's payload.
func encodeBusSnap(owner string, inc, seq uint64, recs []*entry, sig []byte, limit int) ([][]byte, error) {
	frames, err := encodeSnapSigned(owner, inc, seq, recs, sig, limit-snapPartHead)
	if err != nil {
		return nil, err
	}
	for i, f := range frames {
		payload, err := framePayload(f)
		if err != nil {
			return nil, err
		}
		b := beginFrame(msgSnap, len(payload)+snapPartHead, limit)
		b = binary.AppendUvarint(b, uint64(i))
		b = binary.AppendUvarint(b, uint64(len(frames)))
		b = append(b, payload...)
		if frames[i], err = endFrame(b, limit); err != nil {
			return nil, err
		}
	}
	return frames, nil
}

// framePayload returns a whole frame's payload (after its type and
// length).
func framePayload(f []byte) ([]byte, error) {
	n, k := binary.Uvarint(f[1:])
	if k <= 0 || uint64(len(f)-1-k) != n {
		return nil, fmt.Errorf("%w: a frame of %d bytes", ErrProtocol, len(f))
	}
	return f[1+k:], nil
}

// busMessage is a decoded envelope: its sender and its frames, not yet
// decoded.
type busMessage struct {
	site, node string
	frames     []busFrame
}

// errBusVersion marks a message of another bus version: dropped quietly
// (a newer node's), not as garbage.
var errBusVersion = errors.New("another bus version")

// decodeBusMessage parses a bus message's envelope and splits its frames;
// each payload is at most max bytes. The payloads alias msg. Errors wrap
// ErrProtocol (or errBusVersion).
func decodeBusMessage(msg []byte, max int, bm *busMessage) error {
	*bm = busMessage{frames: bm.frames[:0]}
	r := &reader{b: msg}
	if v := r.byte(); r.err == nil && v != busVersion {
		return fmt.Errorf("%w: version %d", errBusVersion, v)
	}
	bm.site = r.string(MaxSiteBytes, "site")
	bm.node = r.string(MaxIDBytes, "node id")
	switch {
	case r.err != nil:
	case CheckSite(bm.site) != nil:
		r.fail(fmt.Errorf("site %q: not a site name", bm.site))
	case !plausibleID(bm.node):
		r.fail(fmt.Errorf("node id %q", bm.node))
	case len(r.b) == 0:
		r.fail(errors.New("no frames"))
	}
	for r.err == nil && len(r.b) > 0 {
		t := msgType(r.byte())
		if r.err == nil && (t < msgPut || t > msgSync || t == msgSynced) {
			r.fail(fmt.Errorf("frame type %d", byte(t)))
			break
		}
		n := r.uvarint()
		if r.err == nil && n > uint64(max) {
			r.fail(fmt.Errorf("%w: frame of %d bytes (max %d)", ErrMessageTooLarge, n, max))
			break
		}
		if r.err == nil && n > uint64(len(r.b)) {
			r.fail(errShort)
			break
		}
		if r.err == nil {
			bm.frames = append(bm.frames, busFrame{typ: t, payload: r.b[:n]})
			r.b = r.b[n:]
		}
	}
	if r.err != nil {
		if errors.Is(r.err, ErrMessageTooLarge) {
			return r.err
		}
		return fmt.Errorf("%w: bus message: %v", ErrProtocol, r.err)
	}
	return nil
}

// plausibleID reports whether id can be a node's: not empty, and no
// control characters (a log line or a table shows it).
func plausibleID(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// decodeBus is decode for a frame f of a bus message: the link
// protocol's types, with the bus's Snap and Want, and Beat and Sync.
func (d *decoder) decodeBus(f *busFrame, m *message) error {
	t, p := f.typ, f.payload
	f.at, f.part, f.parts = time.Time{}, 0, 0
	switch t {
	case msgBeat:
		*m = message{digest: m.digest[:0], peers: m.peers[:0], recs: m.recs[:0], typ: t}
		r := &reader{b: p}
		d.owner(r, m)
		m.beat = r.uvarint()
		flags := r.byte()
		if flags&^(beatLeaving|beatObserver) != 0 {
			r.fail(fmt.Errorf("unknown beat flags %#x", flags))
		}
		m.leaving = flags&beatLeaving != 0
		m.observer = flags&beatObserver != 0
		ms := r.uvarint()
		if ms > uint64(maxLifetime/time.Millisecond) {
			r.fail(fmt.Errorf("lifetime of %d ms", ms))
		}
		m.lifetime = time.Duration(ms) * time.Millisecond
		f.at = readClock(r)
		m.sig = r.sig()
		if r.err == nil && m.beat == 0 {
			r.fail(errors.New("beat 0"))
		}
		if r.err == nil && len(r.b) != 0 {
			r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
		}
		if r.err != nil {
			return fmt.Errorf("%w: beat message: %v", ErrProtocol, r.err)
		}
		return nil
	case msgSync:
		*m = message{digest: m.digest[:0], peers: m.peers[:0], recs: m.recs[:0], typ: t}
		r := &reader{b: p}
		f.at = readClock(r)
		if r.err == nil && len(r.b) != 0 {
			r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
		}
		if r.err != nil {
			return fmt.Errorf("%w: sync message: %v", ErrProtocol, r.err)
		}
		return nil
	case msgWant:
		// The link's Want, then the asker's clock (its last uvarint).
		r := &reader{b: p}
		r.string(MaxIDBytes, "owner id")
		if r.err != nil {
			return fmt.Errorf("%w: want message: %v", ErrProtocol, r.err)
		}
		link := p[:len(p)-len(r.b)]
		f.at = readClock(r)
		if r.err == nil && len(r.b) != 0 {
			r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
		}
		if r.err != nil {
			return fmt.Errorf("%w: want message: %v", ErrProtocol, r.err)
		}
		return d.decode(t, link, m)
	case msgSnap:
		r := &reader{b: p}
		part, parts := r.uvarint(), r.uvarint()
		switch {
		case r.err != nil:
		case parts == 0 || parts > uint64(maxSnapParts) || part >= parts:
			r.fail(fmt.Errorf("chunk %d of %d", part, parts))
		}
		if r.err != nil {
			return fmt.Errorf("%w: snap message: %v", ErrProtocol, r.err)
		}
		f.part, f.parts = int(part), int(parts)
		if err := d.decode(t, r.b, m); err != nil {
			return err
		}
		if m.last != (f.part == f.parts-1) {
			return fmt.Errorf("%w: snap message: chunk %d of %d is last: %v", ErrProtocol, part, parts, m.last)
		}
		return nil
	}
	return d.decode(t, p, m)
}

// maxSnapParts bounds the chunks of one snapshot on the bus.
const maxSnapParts = 1 << 16

// readClock reads a clock (Unix milliseconds); 0 is no clock and fails.
func readClock(r *reader) time.Time {
	ms := r.uvarint()
	if r.err == nil && (ms == 0 || ms > 1<<53) {
		r.fail(fmt.Errorf("clock %d", ms))
	}
	return time.UnixMilli(int64(ms))
}
