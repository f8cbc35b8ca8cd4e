package registry

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/tallship-go/tallship/internal/wire"
)

// protoVersion is the replication protocol's version, sent in Hello.
// Version 5 carries owners' signatures and credentials (Config.Identity:
// every State, Put, Del and Snap ends with one, empty when owners do not
// sign, and a State's lifetime is always there); version 4 sends a change of adjacency as a delta (see stateIsDelta), and
// says in every whole State the beat its adjacency was issued at; version 3 marks the sender's neighbours in its Hello's digest; version 2
// frames messages as internal/wire does; version 1 had a u32 length
// prefix.
const protoVersion = 5

// maxRecordIDBytes bounds a record id on the wire.
const maxRecordIDBytes = 512

// Bounds of a signature and a credential on the wire.
const (
	maxSigBytes  = 1 << 10
	maxCredBytes = 32 << 10
)

// msgType is a message's type: its frame's type byte.
type msgType byte

const (
	msgHello  msgType = 1 // proto, node id, digest
	msgState  msgType = 2 // an owner's node state
	msgPut    msgType = 3 // an owner registered or updated a record
	msgDel    msgType = 4 // an owner freed a record
	msgSnap   msgType = 5 // one chunk of an owner's full record set
	msgSynced msgType = 6 // end of the initial sync
	msgWant   msgType = 7 // please send a snapshot of an owner
	msgCred   msgType = 8 // an owner's credential for one of its runs
)

func (t msgType) String() string {
	switch t {
	case msgHello:
		return "hello"
	case msgState:
		return "state"
	case msgPut:
		return "put"
	case msgDel:
		return "del"
	case msgSnap:
		return "snap"
	case msgSynced:
		return "synced"
	case msgWant:
		return "want"
	case msgCred:
		return "cred"
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

// peerRef names a node and its incarnation, in an adjacency.
type peerRef struct {
	id  string
	inc uint64
}

// digestEntry is what a node knows of one owner, and whether the owner
// is its neighbour: its adjacency names the owner at inc.
type digestEntry struct {
	owner          string
	inc, seq, beat uint64
	neighbour      bool
}

// A digest entry's flags.
const digestNeighbour = 1

// message is any decoded protocol message; which fields are set depends on
// typ.
type message struct {
	typ msgType

	// msgHello
	proto  uint64
	node   string
	digest []digestEntry

	// msgState, msgPut, msgDel, msgSnap, msgWant
	owner string
	inc   uint64
	seq   uint64 // records version (State carries the owner's current one)

	// msgState
	beat    uint64
	leaving bool
	// msgBeat: its owner only reads the cluster (Config.Observer)
	observer bool
	// lifetime is what a state says of its owner's record lifetime.
	lifetime time.Duration
	// A whole state (delta false) names every neighbour in peers, and
	// base is the beat that adjacency was issued at (at most beat: a
	// heartbeat repeats it). A delta names only what changed since the
	// adjacency issued at base (below beat): a neighbour added or at a
	// new incarnation, or removed (incarnation 0). Its own beat is the
	// adjacency's new issue.
	base  uint64
	delta bool
	peers []peerRef

	// msgDel
	id string
	// msgPut (one) and msgSnap (any number)
	recs []*entry
	// msgSnap: the last chunk of a snapshot
	last bool

	// msgState, msgPut, msgDel, msgSnap: the owner's signature (nil when
	// owners do not sign); msgCred: the owner's signature of its run.
	sig []byte
	// msgCred: the credential
	cred []byte
}

// trim lets go of m's slices when they are large, keeping small ones for
// the next message to reuse. A large digest or adjacency goes back to a
// pool that all links share: while a mesh forms, every Hello and whole
// State names up to every node, and each made its slice afresh (a tenth
// of what 100 nodes forming allocated).
func (m *message) trim() {
	const keep = 16
	if cap(m.digest) > keep {
		d := m.digest
		digests.Put(&d)
		m.digest = nil
	}
	if cap(m.peers) > keep {
		p := m.peers
		peerLists.Put(&p)
		m.peers = nil
	}
	if cap(m.recs) > keep {
		m.recs = nil
	}
}

var (
	digests   sync.Pool // of *[]digestEntry
	peerLists sync.Pool // of *[]peerRef
)

// emptied returns s emptied with room for n elements: s itself, a slice from
// pool, or a new one.
func emptied[T any](s []T, pool *sync.Pool, n int) []T {
	if cap(s) >= n {
		return s[:0]
	}
	if p, ok := pool.Get().(*[]T); ok && cap(*p) >= n {
		return (*p)[:0]
	}
	return make([]T, 0, n)
}

// Encoding. Each function returns a whole frame of internal/wire's framing
// (type[1] length[uvarint] payload[length]): the message type, then the
// length of the payload, which holds the message's fields. A payload is at
// most max bytes (Config.MaxMessageBytes), the bound the peer's reader
// enforces.

// beginFrame starts a frame of type t, for about sizeHint bytes of fields
// and at most max.
func beginFrame(t msgType, sizeHint, max int) []byte {
	return wire.BeginFrame(byte(t), max, sizeHint)
}

// endFrame completes a frame begun by beginFrame with the same max.
func endFrame(b []byte, max int) ([]byte, error) {
	f, err := wire.EndFrame(b, max)
	if err != nil {
		return nil, fmt.Errorf("%w: %s message: %v", ErrMessageTooLarge, msgType(b[0]), err)
	}
	return f, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendOwner(b []byte, owner string, inc, seq uint64) []byte {
	b = appendString(b, owner)
	b = binary.AppendUvarint(b, inc)
	return binary.AppendUvarint(b, seq)
}

func appendRecord(b []byte, e *entry) []byte { return appendRecordMeta(b, e, false) }

// appendRecordMeta is appendRecord, with the metadata in the order of its
// keys when sorted (as a signature's digest needs it; see entry.digest).
func appendRecordMeta(b []byte, e *entry, sorted bool) []byte {
	r := &e.rec
	b = appendString(b, r.ID)
	b = appendString(b, r.Name)
	b = appendString(b, r.Version)
	b = appendString(b, r.Host)
	b = binary.AppendUvarint(b, uint64(r.Port))
	b = binary.AppendUvarint(b, r.Rev.Seq)
	b = binary.AppendUvarint(b, uint64(len(r.Meta)))
	if !sorted {
		for k, v := range r.Meta {
			b = appendString(b, k)
			b = appendString(b, v)
		}
		return b
	}
	for _, k := range slices.Sorted(maps.Keys(r.Meta)) {
		b = appendString(b, k)
		b = appendString(b, r.Meta[k])
	}
	return b
}

// recordSize is an upper bound of appendRecord's output length.
func recordSize(e *entry) int {
	r := &e.rec
	n := 5*10 + len(r.ID) + len(r.Name) + len(r.Version) + len(r.Host)
	for k, v := range r.Meta {
		n += 20 + len(k) + len(v)
	}
	return n
}

func encodeHello(node string, digest []digestEntry, max int) ([]byte, error) {
	hint := 16 + len(node)
	for _, d := range digest {
		hint += 31 + len(d.owner)
	}
	b := beginFrame(msgHello, hint, max)
	b = binary.AppendUvarint(b, protoVersion)
	b = appendString(b, node)
	b = binary.AppendUvarint(b, uint64(len(digest)))
	for _, d := range digest {
		b = appendString(b, d.owner)
		b = binary.AppendUvarint(b, d.inc)
		b = binary.AppendUvarint(b, d.seq)
		b = binary.AppendUvarint(b, d.beat)
		var flags byte
		if d.neighbour {
			flags = digestNeighbour
		}
		b = append(b, flags)
	}
	return endFrame(b, max)
}

// encodeState encodes a whole state whose adjacency is issued at its beat.
func encodeState(owner string, inc, seq, beat uint64, leaving bool, peers []peerRef, max int) ([]byte, error) {
	return encodeStateLifetime(owner, inc, seq, beat, leaving, peers, 0, max)
}

// encodeStateLifetime encodes a whole state, issued at its beat, that also
// says how long the owner's records live without renewal (0: not said;
// receivers use their own Lifetime), so that nodes with other timings
// never expire them early.
func encodeStateLifetime(owner string, inc, seq, beat uint64, leaving bool, peers []peerRef, lifetime time.Duration, max int) ([]byte, error) {
	return encodeStateOf(&message{typ: msgState, owner: owner, inc: inc, seq: seq, beat: beat, leaving: leaving, lifetime: lifetime, base: beat, peers: peers}, max)
}

// The flags of a State.
const (
	stateLeaving = 1
	stateIsDelta = 2
)

// encodeStateOf encodes m, a whole state or a delta (see message).
func encodeStateOf(m *message, max int) ([]byte, error) {
	hint := 50 + len(m.owner)
	for _, p := range m.peers {
		hint += 12 + len(p.id)
	}
	b := beginFrame(msgState, hint, max)
	b = appendOwner(b, m.owner, m.inc, m.seq)
	b = binary.AppendUvarint(b, m.beat)
	var flags byte
	if m.leaving {
		flags |= stateLeaving
	}
	if m.delta {
		flags |= stateIsDelta
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, m.base)
	b = binary.AppendUvarint(b, uint64(len(m.peers)))
	for _, p := range m.peers {
		b = appendString(b, p.id)
		b = binary.AppendUvarint(b, p.inc)
	}
	if ms := m.lifetime.Milliseconds(); ms > 0 {
		b = binary.AppendUvarint(b, uint64(ms))
	} else {
		b = append(b, 0)
	}
	b = appendBytes(b, m.sig)
	return endFrame(b, max)
}

func encodePut(owner string, inc uint64, e *entry, max int) ([]byte, error) {
	return encodePutSigned(owner, inc, e, nil, max)
}

// encodePutSigned encodes a Put with the owner's signature (see
// recordsSigned).
func encodePutSigned(owner string, inc uint64, e *entry, sig []byte, max int) ([]byte, error) {
	b := beginFrame(msgPut, 32+len(owner)+recordSize(e)+len(sig), max)
	b = appendOwner(b, owner, inc, e.rec.Rev.Seq)
	b = appendRecord(b, e)
	b = appendBytes(b, sig)
	return endFrame(b, max)
}

func encodeDel(owner string, inc, seq uint64, id string, max int) ([]byte, error) {
	return encodeDelSigned(owner, inc, seq, id, nil, max)
}

// encodeDelSigned encodes a Del with the owner's signature.
func encodeDelSigned(owner string, inc, seq uint64, id string, sig []byte, max int) ([]byte, error) {
	b := beginFrame(msgDel, 32+len(owner)+len(id)+len(sig), max)
	b = appendOwner(b, owner, inc, seq)
	b = appendString(b, id)
	b = appendBytes(b, sig)
	return endFrame(b, max)
}

// encodeSnap encodes an owner's records as one or more msgSnap frames, each
// within max; the last has the last flag. Zero records make one frame.
func encodeSnap(owner string, inc, seq uint64, recs []*entry, max int) ([][]byte, error) {
	return encodeSnapSigned(owner, inc, seq, recs, nil, max)
}

// encodeSnapSigned encodes a snapshot whose every frame carries the
// owner's signature of the whole set.
func encodeSnapSigned(owner string, inc, seq uint64, recs []*entry, sig []byte, max int) ([][]byte, error) {
	var frames [][]byte
	head := 30 + len(owner) + 1 + 10 + 2 + len(sig)
	for {
		n := 0
		size := head
		for n < len(recs) && (n == 0 || size+recordSize(recs[n]) <= max) {
			size += recordSize(recs[n])
			n++
		}
		// (A frame of the size it needs: of 4 KiB each, a snapshot of
		// one record was a seventh of what 200 nodes forming a mesh
		// allocated.)
		b := beginFrame(msgSnap, size, max)
		b = appendOwner(b, owner, inc, seq)
		last := n == len(recs)
		if last {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = binary.AppendUvarint(b, uint64(n))
		for _, e := range recs[:n] {
			b = appendRecord(b, e)
		}
		b = appendBytes(b, sig)
		f, err := endFrame(b, max)
		if err != nil {
			return nil, err
		}
		frames = append(frames, f)
		recs = recs[n:]
		if last {
			return frames, nil
		}
	}
}

func encodeSynced() []byte {
	b, _ := endFrame(beginFrame(msgSynced, 0, 0), 0)
	return b
}

func encodeWant(owner string, max int) ([]byte, error) {
	b := beginFrame(msgWant, 2+len(owner), max)
	b = appendString(b, owner)
	return endFrame(b, max)
}

// encodeCred encodes an owner's credential for its run inc, with the
// owner's signature of that run (see credSigned).
func encodeCred(owner string, inc uint64, cred, sig []byte, max int) ([]byte, error) {
	b := beginFrame(msgCred, 20+len(owner)+len(cred)+len(sig), max)
	b = appendString(b, owner)
	b = binary.AppendUvarint(b, inc)
	b = appendBytes(b, cred)
	b = appendBytes(b, sig)
	return endFrame(b, max)
}

// Decoding.

// errShort is the decoder's error for truncated input.
var errShort = errors.New("truncated message")

// newFrameReader returns a reader of a registry stream's frames: message
// types msgHello to msgCred, payloads of at most max bytes.
func newFrameReader(r io.Reader, max int) *wire.Reader {
	return wire.NewReaderTypes(r, max, byte(msgHello), byte(msgCred))
}

// readFrame reads the next frame into buf's array (a new one when buf is
// too small) and returns its type, its payload and the whole frame, both
// valid until buf is reused. A frame over the reader's max is an error
// wrapping ErrMessageTooLarge, one of an unknown type or an impossible
// length one wrapping ErrProtocol; the stream is then unusable. Read
// errors are returned as they are (io.ErrUnexpectedEOF for a stream that
// ends inside a frame).
func readFrame(fr *wire.Reader, buf []byte) (t msgType, payload, frame []byte, err error) {
	typ, payload, frame, err := fr.NextInto(buf)
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		err = fmt.Errorf("%w: %v", ErrMessageTooLarge, err)
	case errors.Is(err, wire.ErrBadFrame):
		err = fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return msgType(typ), payload, frame, err
}

// frameOf returns a copy of a frame readFrame returned, to keep for syncs
// and relays: relayed frames are forwarded as received.
func frameOf(frame []byte) []byte { return bytes.Clone(frame) }

// reader walks a payload. The first error sticks; later reads return zero
// values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errShort)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail(errShort)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// string reads a string of at most max bytes.
func (r *reader) string(max int, what string) string {
	return string(r.bytes(max, what))
}

// bytes reads a string of at most max bytes, without copying it.
func (r *reader) bytes(max int, what string) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.fail(fmt.Errorf("%s of %d bytes exceeds %d", what, n, max))
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(errShort)
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

// sig reads a signature, without copying it; nil when empty.
func (r *reader) sig() []byte {
	b := r.bytes(maxSigBytes, "signature")
	if len(b) == 0 {
		return nil
	}
	return b
}

// count reads an element count, each element taking at least minSize bytes.
func (r *reader) count(minSize int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/minSize) {
		r.fail(errShort)
		return 0
	}
	return int(n)
}

// decoder decodes payloads, enforcing the registry's limits. It is not
// safe for concurrent use: each link has its own.
type decoder struct {
	maxMeta  int
	known    *idTable                   // the registry's node ids; nil: none
	reading  bool                       // known is held for reading
	versions map[string]*semver.Version // canonical versions seen, parsed
	ids      map[string]string          // other node ids seen lately; without known only
}

// idTable holds the ids of the owners a registry knows, for the decoders
// of all its links to share: a State names every neighbour of its owner,
// and every link decodes the same ids again and again. Each link kept a
// string of every id before: in a mesh of N nodes, N² strings and N maps
// of N entries on each node.
//
// Ids that are no owner's (yet) are shared too: a node's adjacency names
// peers this node has not heard from, and while a mesh forms every State
// does. Each link's decoder kept its own copy of those, and the owners'
// adjacency maps kept them for good: at 100 nodes, 3 KiB per link side
// of the idle heap. They are in others, bounded, taken under othersMu (a
// decoder holds mu for reading).
type idTable struct {
	mu  sync.RWMutex
	ids map[string]string

	othersMu sync.Mutex
	others   map[string]string
}

// maxOtherIDs bounds idTable.others: the ids of nodes joining, a few
// hundred at most, or a peer's made-up ones, which are dropped.
const maxOtherIDs = 1024

func (t *idTable) add(id string) {
	t.othersMu.Lock()
	delete(t.others, id)
	t.othersMu.Unlock()
	t.mu.Lock()
	if t.ids == nil {
		t.ids = map[string]string{}
	}
	t.ids[id] = id
	t.mu.Unlock()
}

// other returns b as a string, the one the table has when it has it.
func (t *idTable) other(b []byte) string {
	t.othersMu.Lock()
	defer t.othersMu.Unlock()
	if s, ok := t.others[string(b)]; ok {
		return s
	}
	s := string(b)
	if t.others == nil || len(t.others) >= maxOtherIDs {
		t.others = make(map[string]string)
	}
	t.others[s] = s
	return s
}

func (t *idTable) remove(id string) {
	t.mu.Lock()
	delete(t.ids, id)
	t.mu.Unlock()
}

// maxCachedIDs bounds the cache of node ids of a decoder that has no
// registry's table (known).
const maxCachedIDs = 64

// id reads a node id, as a string shared with the registry when it is
// an owner's id there.
func (d *decoder) id(r *reader, what string) string {
	b := r.bytes(MaxIDBytes, what)
	if r.err != nil {
		return ""
	}
	if d.known != nil {
		if !d.reading {
			d.known.mu.RLock()
			defer d.known.mu.RUnlock()
		}
		if s, ok := d.known.ids[string(b)]; ok {
			return s
		}
		return d.known.other(b)
	}
	if s, ok := d.ids[string(b)]; ok {
		return s
	}
	s := string(b)
	if d.ids == nil || len(d.ids) >= maxCachedIDs {
		d.ids = make(map[string]string)
	}
	d.ids[s] = s
	return s
}

// maxCachedVersions bounds a decoder's cache of parsed versions.
const maxCachedVersions = 256

// version parses a canonical version string, with a cache: a cluster has
// few distinct versions and parsing one costs more than the rest of a
// record.
func (d *decoder) version(s string) (*semver.Version, error) {
	if v, ok := d.versions[s]; ok {
		return v, nil
	}
	v, err := parseVersion(s)
	if err != nil {
		return nil, err
	}
	if v.String() != s {
		return nil, fmt.Errorf("version %q is not canonical", s)
	}
	if d.versions == nil || len(d.versions) >= maxCachedVersions {
		d.versions = make(map[string]*semver.Version)
	}
	d.versions[s] = v
	return v, nil
}

// decode parses the payload of a message of type t into m, reusing m's
// slices. Errors wrap ErrProtocol, or ErrMetadataTooLarge for a record
// over the limit.
func (d *decoder) decode(t msgType, p []byte, m *message) error {
	*m = message{digest: m.digest[:0], peers: m.peers[:0], recs: m.recs[:0]}
	m.typ = t
	r := &reader{b: p}
	switch m.typ {
	case msgHello:
		d.readIDs()
		defer d.doneIDs()
		m.proto = r.uvarint()
		m.node = r.string(MaxIDBytes, "node id")
		n := r.count(5)
		m.digest = emptied(m.digest, &digests, n)
		for i := 0; i < n && r.err == nil; i++ {
			var e digestEntry
			e.owner = d.id(r, "owner id")
			e.inc = r.uvarint()
			e.seq = r.uvarint()
			e.beat = r.uvarint()
			flags := r.byte()
			if flags&^digestNeighbour != 0 {
				r.fail(fmt.Errorf("unknown digest flags %#x", flags))
			}
			e.neighbour = flags&digestNeighbour != 0
			m.digest = append(m.digest, e)
		}
	case msgState:
		d.readIDs()
		defer d.doneIDs()
		d.owner(r, m)
		m.beat = r.uvarint()
		flags := r.byte()
		if flags&^(stateLeaving|stateIsDelta) != 0 {
			r.fail(fmt.Errorf("unknown state flags %#x", flags))
		}
		m.leaving = flags&stateLeaving != 0
		m.delta = flags&stateIsDelta != 0
		m.base = r.uvarint()
		switch {
		case r.err != nil:
		case m.delta && (m.base == 0 || m.base >= m.beat):
			r.fail(fmt.Errorf("delta of beat %d on beat %d", m.beat, m.base))
		case !m.delta && m.base > m.beat:
			r.fail(fmt.Errorf("state of beat %d issued at beat %d", m.beat, m.base))
		}
		n := r.count(2)
		m.peers = emptied(m.peers, &peerLists, n)
		for i := 0; i < n && r.err == nil; i++ {
			id := d.id(r, "peer id")
			inc := r.uvarint()
			switch {
			case r.err != nil:
			case inc == 0 && !m.delta:
				r.fail(fmt.Errorf("neighbour %q at incarnation 0", id))
			case i > 0 && id <= m.peers[i-1].id:
				// Encoders sort them: a repeated neighbour would make
				// the adjacency applied depend on how it is read.
				r.fail(fmt.Errorf("neighbour %q out of order or repeated", id))
			}
			m.peers = append(m.peers, peerRef{id: id, inc: inc})
		}
		ms := r.uvarint()
		if ms > uint64(maxLifetime/time.Millisecond) {
			r.fail(fmt.Errorf("lifetime of %d ms", ms))
		}
		m.lifetime = time.Duration(ms) * time.Millisecond
		m.sig = r.sig()
	case msgPut:
		d.owner(r, m)
		if e := d.record(r, m); e != nil {
			if e.rec.Rev.Seq != m.seq {
				r.fail(fmt.Errorf("put of seq %d carries a record of seq %d", m.seq, e.rec.Rev.Seq))
			}
			m.recs = append(m.recs, e)
		}
		m.sig = r.sig()
	case msgDel:
		d.owner(r, m)
		m.id = r.string(maxRecordIDBytes, "record id")
		m.sig = r.sig()
	case msgSnap:
		d.owner(r, m)
		switch r.byte() {
		case 0:
		case 1:
			m.last = true
		default:
			r.fail(errors.New("bad snapshot flag"))
		}
		n := r.count(7)
		for i := 0; i < n && r.err == nil; i++ {
			if e := d.record(r, m); e != nil {
				if e.rec.Rev.Seq > m.seq {
					r.fail(fmt.Errorf("snapshot at seq %d holds a record of seq %d", m.seq, e.rec.Rev.Seq))
				}
				m.recs = append(m.recs, e)
			}
		}
		m.sig = r.sig()
	case msgSynced:
	case msgWant:
		m.owner = d.id(r, "owner id")
	case msgCred:
		m.owner = d.id(r, "owner id")
		if r.err == nil && m.owner == "" {
			r.fail(errors.New("empty owner id"))
		}
		m.inc = r.uvarint()
		m.cred = r.bytes(maxCredBytes, "credential")
		m.sig = r.sig()
	default:
		return fmt.Errorf("%w: unknown message type %d", ErrProtocol, byte(t))
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
	}
	if r.err != nil {
		if errors.Is(r.err, ErrMetadataTooLarge) {
			return fmt.Errorf("%s message: %w", m.typ, r.err)
		}
		return fmt.Errorf("%w: %s message: %v", ErrProtocol, m.typ, r.err)
	}
	return nil
}

// readIDs holds the registry's ids for reading until doneIDs: a Hello or
// a State names many.
func (d *decoder) readIDs() {
	if d.known != nil {
		d.known.mu.RLock()
		d.reading = true
	}
}

func (d *decoder) doneIDs() {
	if d.reading {
		d.reading = false
		d.known.mu.RUnlock()
	}
}

func (d *decoder) owner(r *reader, m *message) {
	m.owner = d.id(r, "owner id")
	if r.err == nil && m.owner == "" {
		r.fail(errors.New("empty owner id"))
	}
	m.inc = r.uvarint()
	m.seq = r.uvarint()
}

// record reads one record of owner m.owner, validating it.
func (d *decoder) record(r *reader, m *message) *entry {
	e := &entry{}
	rec := &e.rec
	rec.Owner = m.owner
	rec.Rev.Incarnation = m.inc
	rec.ID = r.string(maxRecordIDBytes, "record id")
	rec.Name = r.string(MaxNameBytes, "name")
	rec.Version = r.string(maxVersionBytes, "version")
	rec.Host = r.string(MaxHostBytes, "host")
	port := r.uvarint()
	rec.Rev.Seq = r.uvarint()
	n := r.count(2)
	if r.err != nil {
		return nil
	}
	if port > 65535 {
		r.fail(fmt.Errorf("port %d out of range", port))
		return nil
	}
	rec.Port = int(port)
	if rec.ID == "" {
		r.fail(errors.New("empty record id"))
		return nil
	}
	if err := checkName(rec.Name); err != nil {
		r.fail(err)
		return nil
	}
	v, err := d.version(rec.Version)
	if err != nil {
		r.fail(err)
		return nil
	}
	e.ver = v
	size := 0
	if n > 0 {
		rec.Meta = make(map[string]string, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		k := r.string(math.MaxInt, "metadata key") // bounded by the message
		val := r.string(math.MaxInt, "metadata value")
		size += len(k) + len(val)
		if size > d.maxMeta {
			r.fail(fmt.Errorf("%w: record %q has more than %d bytes", ErrMetadataTooLarge, rec.ID, d.maxMeta))
			return nil
		}
		rec.Meta[k] = val
	}
	if r.err != nil {
		return nil
	}
	return e
}
