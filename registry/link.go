package registry

import (
	"bufio"
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
	conn io.ReadWriteCloser

	// Guarded by Registry.mu.
	hello   bool                  // the peer's Hello is processed: it is adjacent
	peerInc uint64                // the peer's incarnation, from its Hello
	ready   bool                  // our sync is queued: changes are pushed
	synced  bool                  // the peer's sync is applied
	known   map[string]*peerKnows // what the peer is known to have, by owner
	wanted  map[string]bool       // owners whose snapshot was asked for
	snap    *snapshot             // a snapshot being received

	qmu       sync.Mutex
	queue     [][]byte
	queued    int
	limit     int
	finishing bool  // write what is queued, then stop
	fail      error // stop and close the conn

	wake       chan struct{}
	stop       chan struct{} // closed when Serve ends
	writerDone chan struct{}
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
}

func newLink(peer string, conn io.ReadWriteCloser) *link {
	return &link{
		peer:       peer,
		conn:       conn,
		known:      map[string]*peerKnows{},
		wanted:     map[string]bool{},
		limit:      maxQueueBytes,
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

// knows returns what the peer is known to have of owner.
func (l *link) knows(owner string) *peerKnows {
	k := l.known[owner]
	if k == nil {
		k = &peerKnows{}
		l.known[owner] = k
	}
	return k
}

func (l *link) noteRecords(owner string, inc, seq uint64) {
	k := l.knows(owner)
	if v := (Rev{inc, seq}); v.Compare(k.records) > 0 {
		k.records = v
	}
}

func (l *link) noteState(owner string, inc, beat uint64) {
	k := l.knows(owner)
	if v := (Rev{inc, beat}); v.Compare(k.state) > 0 {
		k.state = v
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
	l.signal()
}

// finish makes the writer write what is queued and stop.
func (l *link) finish() {
	l.qmu.Lock()
	l.finishing = true
	l.signal()
	l.qmu.Unlock()
}

func (l *link) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes queued frames until the link stops, a write fails (it
// then closes the conn so the reader ends too), or, when finishing, the
// queue is empty.
func (l *link) writeLoop() {
	defer close(l.writerDone)
	for {
		l.qmu.Lock()
		q, fail, finishing := l.queue, l.fail, l.finishing
		l.queue, l.queued, l.limit = nil, 0, maxQueueBytes
		l.qmu.Unlock()
		if fail != nil {
			l.abort()
			return
		}
		if len(q) > 0 {
			if err := l.write(q); err != nil {
				l.abort()
				return
			}
			continue
		}
		if finishing {
			return
		}
		select {
		case <-l.wake:
		case <-l.stop:
			return
		}
	}
}

// writers buffer the frames of one batch; an idle link holds none.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// write sends frames in as few writes as the buffer allows.
func (l *link) write(frames [][]byte) error {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(l.conn)
	defer func() {
		bw.Reset(nil)
		writers.Put(bw)
	}()
	for _, f := range frames {
		if _, err := bw.Write(f); err != nil {
			return err
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
