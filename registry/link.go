package registry

import (
	"bufio"
	"bytes"
	"io"
	"maps"
	"sync"
	"time"
)

// maxQueueBytes bounds what may wait in a link's outgoing queue beyond its
// initial sync; a peer that falls further behind is disconnected
// (ErrSlowPeer) and resyncs when it links again.
const maxQueueBytes = 64 << 20

// link is one Serve call: the replication protocol over one stream to a
// directly linked peer. Its writer goroutine owns the writes; the Serve
// goroutine reads and applies under r.mu.
type link struct {
	peer string
	self string // this node's id
	conn io.ReadWriteCloser

	// Guarded by Registry.mu.
	hello   bool                 // the peer's Hello is processed: it is adjacent
	peerInc uint64               // the peer's incarnation, from its Hello
	ready   bool                 // our sync is queued: changes are pushed
	synced  bool                 // the peer's sync is applied
	known   map[string]peerKnows // what the peer is known to have, by owner
	// helloKnown is what the peer's Hello said it holds of the owners
	// known here that it is not linked to, by owner idx, until a Lifetime
	// after the Hello (helloAt; see knows). Kept in known, it was a map
	// entry made, and deleted as each owner linked with the peer, for
	// half of N owners on each of a forming mesh's N² link ends.
	helloKnown []helloKnows
	helloAt    time.Time
	// knownPeak is the most entries known has held since it was made
	// (see forget).
	knownPeak int
	wanted    map[string]bool // owners whose snapshot was asked for
	// taken: the frame being handled is kept as it was read (keepFrame);
	// the next is read into a new buffer. Used by the reader alone.
	taken bool
	snap  *snapshot // a snapshot being received
	// The peer's neighbours as its Hello named them (owner → incarnation),
	// until a State it issued after the Hello (a beat above helloBeat)
	// supersedes them: then nil.
	helloPeers map[string]uint64
	helloBeat  uint64
	// selfAdj is the beat of this node's adjacency in the last State of
	// its own sent on this link (0: none yet): a delta goes only on top of
	// that one. selfIssued is that adjacency (Registry.issued then, which
	// is never changed in place).
	selfAdj    uint64
	selfIssued map[string]uint64
	// creds names, by owner, the run whose credential the peer has (sent
	// either way); nil unless owners sign.
	creds map[string]uint64

	// The writer runs only while there is something to write: an idle
	// link holds no goroutine for it.
	qmu       sync.Mutex
	queue     [][]byte
	queued    int
	limit     int
	writing   bool  // a writer goroutine runs
	finishing bool  // write what is queued, then stop
	stopped   bool  // Serve is ending: no writer starts any more
	fail      error // stop and close the conn
	writer    sync.WaitGroup
	flushed   chan struct{} // closed once finishing and all is written (or the link failed)
	flushOnce sync.Once
}

// helloKnows is what a Hello said its sender holds of o.
type helloKnows struct {
	o *owner
	k peerKnows
}

// knows returns what the peer is known to hold of o: from what it sent
// or was sent on the link (known), or said in its Hello (helloKnown),
// whichever is newer.
func (l *link) knows(o *owner) peerKnows {
	k := l.known[o.id]
	if o.idx < len(l.helloKnown) {
		if h := l.helloKnown[o.idx]; h.o == o {
			if h.k.records.Compare(k.records) > 0 {
				k.records = h.k.records
			}
			if h.k.state.Compare(k.state) > 0 {
				k.state = h.k.state
			}
		}
	}
	return k
}

// peerKnows is the newest version of an owner's records and state that a
// peer is known to have (from its Hello, from what it sent or was sent).
type peerKnows struct {
	records Rev // Incarnation, records Seq
	state   Rev // Incarnation, beat
}

// snapshot accumulates the chunks of one owner's snapshot.
type snapshot struct {
	owner    string
	inc, seq uint64
	recs     map[string]*entry
	frames   [][]byte // as received, for relaying
	sig      []byte   // the owner's signature of the whole set, if any
}

func newLink(peer string, conn io.ReadWriteCloser) *link {
	return &link{
		peer:    peer,
		conn:    conn,
		known:   map[string]peerKnows{},
		wanted:  map[string]bool{},
		limit:   maxQueueBytes,
		flushed: make(chan struct{}),
	}
}

// forget drops what the peer is known to hold of owner. A map keeps its
// room when entries go: once most have gone, it is made again, as small
// as what is left.
func (l *link) forget(owner string) {
	if _, ok := l.known[owner]; !ok {
		return
	}
	delete(l.known, owner)
	delete(l.creds, owner) // sent again if needed: a Cred twice is harmless
	if len(l.known) < l.knownPeak/4 {
		known := make(map[string]peerKnows, len(l.known)) // (maps.Clone keeps the room)
		maps.Copy(known, l.known)
		l.known, l.knownPeak = known, len(known)
	}
}

// keepFrame returns frame, just read from the peer, to keep for syncs and
// relays: the read buffer itself when frame fills it (a frame larger than
// the reader keeps between reads is read into a buffer its size), else a
// copy. While a mesh forms every node keeps N States, each many times
// over, and copying them was a twentieth of what it allocated.
func (l *link) keepFrame(frame []byte) []byte {
	if len(frame) == cap(frame) {
		l.taken = true
		return frame
	}
	return bytes.Clone(frame)
}

// untracked reports whether what the peer holds of owner is not noted:
// of the peer itself (the owner of it all) and of this node (whose
// changes go to every ready link), once the sync is computed. Kept, they
// were a map of two entries on every link of a whole mesh.
func (l *link) untracked(owner string) bool {
	return l.ready && (owner == l.peer || owner == l.self)
}

// noteCred notes that the peer has owner's credential for its run inc.
func (l *link) noteCred(owner string, inc uint64) {
	if l.creds == nil {
		l.creds = map[string]uint64{}
	}
	l.creds[owner] = inc
}

// noteRecords notes that the peer has owner's records at (inc, seq) or
// newer.
func (l *link) noteRecords(owner string, inc, seq uint64) {
	if l.untracked(owner) {
		return
	}
	k := l.known[owner]
	if v := (Rev{inc, seq}); v.Compare(k.records) > 0 {
		k.records = v
		l.known[owner] = k
		l.knownPeak = max(l.knownPeak, len(l.known))
	}
}

// noteState notes that the peer has owner's state at (inc, beat) or
// newer.
func (l *link) noteState(owner string, inc, beat uint64) {
	if l.untracked(owner) {
		return
	}
	k := l.known[owner]
	if v := (Rev{inc, beat}); v.Compare(k.state) > 0 {
		k.state = v
		l.known[owner] = k
		l.knownPeak = max(l.knownPeak, len(l.known))
	}
}

// enqueue queues frames for the writer, in order. Frames are shared and
// never changed.
func (l *link) enqueue(frames ...[]byte) { l.enqueueSync(false, frames) }

// enqueueSync queues frames; when sync is set, they are the initial sync
// and do not count against the queue's bound.
func (l *link) enqueueSync(sync bool, frames [][]byte) {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.finishing || l.fail != nil {
		return
	}
	if sync {
		n := 0
		for _, f := range frames {
			n += len(f)
		}
		l.limit = max(l.limit, l.queued+n+maxQueueBytes)
	}
	for _, f := range frames {
		l.queue = append(l.queue, f)
		l.queued += len(f)
	}
	if l.queued > l.limit {
		l.fail = ErrSlowPeer
		l.queue = nil
	}
	l.startWriter()
}

// finish makes the writer write what is queued and stop; flushed is
// closed when it has.
func (l *link) finish() {
	l.qmu.Lock()
	l.finishing = true
	l.startWriter()
	l.qmu.Unlock()
}

// stopWriter keeps any writer from starting again and waits for the one
// that runs, if any; Serve calls it once the conn is aborted.
func (l *link) stopWriter() {
	l.qmu.Lock()
	l.stopped = true
	l.qmu.Unlock()
	l.writer.Wait()
	l.markFlushed()
}

// startWriter starts the writer unless it runs or has nothing to do; when
// finishing with nothing left, it marks the link flushed. l.qmu is held.
func (l *link) startWriter() {
	switch {
	case l.writing:
	case l.stopped:
	case len(l.queue) > 0 || l.fail != nil:
		l.writing = true
		l.writer.Add(1)
		go l.writeLoop()
	case l.finishing:
		l.markFlushed()
	}
}

func (l *link) markFlushed() { l.flushOnce.Do(func() { close(l.flushed) }) }

// writeLoop writes queued frames until the queue is empty (it then ends;
// the next enqueue starts it again), a write fails (it then closes the
// conn so the reader ends too) or the link stopped.
func (l *link) writeLoop() {
	defer l.writer.Done()
	for {
		l.qmu.Lock()
		q, fail := l.queue, l.fail
		l.queue, l.queued, l.limit = nil, 0, maxQueueBytes
		if fail == nil && (len(q) == 0 || l.stopped) {
			l.writing = false
			if l.finishing {
				l.markFlushed()
			}
			l.qmu.Unlock()
			return
		}
		l.qmu.Unlock()
		if fail != nil {
			l.abort()
			l.markFlushed()
			return // writing stays set: nothing more is written
		}
		if err := l.write(q); err != nil {
			l.abort() // writing stays set: nothing more is written
			l.markFlushed()
			return
		}
	}
}

// writeBytes bounds one write to the link's stream. yamux keeps, for as
// long as a link lives, a buffer as large as the largest write made on
// any of its streams (its send loop copies each body into it): a sync
// written in 32 KiB writes left every idle link of a 100-node mesh
// holding about 11 KiB, and in 4 KiB writes (a Hello of 100 owners is
// more) about 4 KiB. A sync takes a few more writes; a change, one.
const writeBytes = 2 << 10

// writers buffer the frames of one batch; an idle link holds none.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBytes) }}

// write sends frames in as few writes as the buffer allows, none over
// writeBytes.
func (l *link) write(frames [][]byte) error {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(l.conn)
	defer func() {
		bw.Reset(nil)
		writers.Put(bw)
	}()
	for _, f := range frames {
		// bufio writes a frame larger than its buffer in one write:
		// give it the frame in pieces.
		for len(f) > 0 {
			n := min(len(f), writeBytes)
			if _, err := bw.Write(f[:n]); err != nil {
				return err
			}
			f = f[n:]
		}
	}
	return bw.Flush()
}

// abort closes the conn so that its reader and writer return at once: a
// conn with deadlines (a net.Conn, a yamux stream, whose Close alone lets a
// pending Read wait for the peer's close) gets one in the past first.
func (l *link) abort() {
	if d, ok := l.conn.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Unix(1, 0))
	}
	l.conn.Close()
}

// failure returns why the writer stopped the link, if it did.
func (l *link) failure() error {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	return l.fail
}
