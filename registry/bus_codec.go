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
// The frames are Put, Del, Snap, Want and Cred as on a link, and two of
// the bus's own: Beat (an owner's liveness) and Sync (every node of
// another site, send me what you own).

// busVersion is the bus envelope's version.
const busVersion = 1

// The bus's own message types, after the link protocol's.
const (
	msgBeat msgType = 9  // owner, inc, seq, beat, flags, lifetime_ms, sig
	msgSync msgType = 10 // (none)
)

// A Beat's flags.
const (
	beatLeaving  = 1
	beatObserver = 2
)

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
func beatSigned(owner string, inc, seq, beat uint64, leaving, observer bool, lifetime time.Duration) []byte {
	b := make([]byte, 0, len(labelBeat)+50+len(owner))
	b = append(b, labelBeat...)
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
	return binary.AppendUvarint(b, uint64(max(lifetime.Milliseconds(), 0)))
}

// labelBeat opens what an owner signs for a Beat.
const labelBeat = "tallship registry site beat v1\x00"

// encodeBeat encodes a Beat: the owner's run, its records' seq, the
// beat's number (rising in the run), leaving, whether the owner only
// observes, the record lifetime, and the owner's signature (nil when
// owners do not sign).
func encodeBeat(owner string, inc, seq, beat uint64, leaving, observer bool, lifetime time.Duration, sig []byte, limit int) ([]byte, error) {
	b := beginFrame(msgBeat, 50+len(owner)+len(sig), limit)
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
	b = appendBytes(b, sig)
	return endFrame(b, limit)
}

func encodeSync() []byte {
	b, _ := endFrame(beginFrame(msgSync, 0, 0), 0)
	return b
}

// busMessage is a decoded envelope: its sender and its frames, not yet
// decoded.
type busMessage struct {
	site, node string
	frames     []busFrame
}

type busFrame struct {
	typ     msgType
	payload []byte
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
	case bm.site == "":
		r.fail(errors.New("empty site"))
	case bm.node == "":
		r.fail(errors.New("empty node id"))
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

// decodeBus is decode for a frame of a bus message: the link protocol's
// types, and Beat and Sync.
func (d *decoder) decodeBus(t msgType, p []byte, m *message) error {
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
		if len(p) != 0 {
			return fmt.Errorf("%w: sync message: %d trailing bytes", ErrProtocol, len(p))
		}
		return nil
	}
	return d.decode(t, p, m)
}
