package registry

import (
	"bufio"
	"bytes"
	"io"
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
	hello   bool   // the peer's Hello is processed: it is adjacent
	peerInc uint64 // the peer's incarnation, from its Hello
	ready   bool   // our sync is queued: changes are pushed
	synced  bool   // the peer's sync is applied
	// known is what the peer is known to have of each owner (from its
	// Hello, from what it sent or was sent), by the owner's idx; nil when
	// nothing is noted (see knows). It was a map by owner id, and while a
	// mesh forms each Hello noted half the owners there, each deleted
	// again as its owner linked with the peer: a fifth of the registry's
	// work for 100 nodes.
	known      []knownOf
	knownCount int             // entries of known in use
	knownSize  int             // how large a table to make: the owners known here at the Hello
	wanted     map[string]bool // owners whose snapshot was asked for
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
	selfIssued []peerRef
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

// knownOf is what a peer is known to hold of the owner of its index
// (used false: nothing noted). An index given back to the registry is
// forgotten on every link first (forgetIdx), so an entry in use is
// always of the owner that holds the index. The table holds no pointer:
// a forming mesh's tables were written a million times, and each write
// of a pointer cost the garbage collector's write barrier.
type knownOf struct {
	used bool
	k    peerKnows
}

// knows returns what the peer is known to hold of o.
func (l *link) knows(o *owner) peerKnows {
	if o.idx < len(l.known) && l.known[o.idx].used {
		return l.known[o.idx].k
	}
	return peerKnows{}
}

// note sets what the peer is known to hold of o.
func (l *link) note(o *owner, k peerKnows) {
	if o.idx >= len(l.known) {
		known := make([]knownOf, max(o.idx+1, 2*len(l.known), l.knownSize, 8))
		copy(known, l.known)
		l.known = known
	}
	if !l.known[o.idx].used {
		l.knownCount++
	}
	l.known[o.idx] = knownOf{true, k}
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
		wanted:  map[string]bool{},
		limit:   maxQueueBytes,
		flushed: make(chan struct{}),
	}
}

// forget drops what the peer is known to hold of o (or of a run of its
// id that was forgotten here). Once nothing is left, so is the table: a
// whole mesh holds none.
func (l *link) forget(o *owner) {
	if o.idx >= len(l.known) || !l.known[o.idx].used {
		return
	}
	delete(l.creds, o.id) // sent again if needed: a Cred twice is harmless
	l.known[o.idx] = knownOf{}
	if l.knownCount--; l.knownCount == 0 {
		l.known = nil
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

// untracked reports whether what the peer holds of o is not noted: of an
// owner not known here (nil), and, once the sync is computed, of the
// peer itself (the owner of it all) and of this node (whose changes go
// to every ready link). Kept, they were two entries on every link of a
// whole mesh.
func (l *link) untracked(o *owner) bool {
	return o == nil || l.ready && (o.id == l.peer || o.id == l.self)
}

// noteCred notes that the peer has owner's credential for its run inc.
func (l *link) noteCred(owner string, inc uint64) {
	if l.creds == nil {
		l.creds = map[string]uint64{}
	}
	l.creds[owner] = inc
}

// noteRecords notes that the peer has o's records at (inc, seq) or newer.
func (l *link) noteRecords(o *owner, inc, seq uint64) {
	if l.untracked(o) {
		return
	}
	k := l.knows(o)
	if v := (Rev{inc, seq}); v.Compare(k.records) > 0 {
		k.records = v
		l.note(o, k)
	}
}

// noteState notes that the peer has o's state at (inc, beat) or newer.
func (l *link) noteState(o *owner, inc, beat uint64) {
	if l.untracked(o) {
		return
	}
	k := l.knows(o)
	if v := (Rev{inc, beat}); v.Compare(k.state) > 0 {
		k.state = v
		l.note(o, k)
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
