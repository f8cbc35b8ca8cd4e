package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
)

// Serve hands each stream the peer opens to handle, in the order the peer
// opened them, and calls closed once the link has closed and the last call
// of handle has returned. It returns at once.
//
// yamux tells of a new stream only through Accept, and a goroutine
// waiting there for as long as a link lives was one of the five an idle
// link held (a fifth of an idle mesh of 100 nodes' 50,000). So the link
// watches what its connection reads for the frames that open streams (a
// yamux SYN), and a goroutine accepts only while streams the peer opened
// have not been taken: it ends once every one has been. handle runs on
// it, so the streams after one wait until handle returns; it should hand
// the stream on and not block. It receives the stream and a nil error, or
// a nil stream and an error wrapping ErrBadStream when the peer's stream
// had a malformed protocol tag (that stream is closed; the link stays
// up). Accepting a stream reads its tag, for up to HandshakeTimeout.
//
// Streams are accepted as soon as they arrive, so the peer's streams
// never overflow yamux's accept backlog while handle keeps up: a stream
// that finds the backlog full is reset (ErrStreamReset on the opener's
// side), and the opener's OpenStream waits while AcceptBacklog of its
// streams are not accepted yet.
//
// closed runs once, also when the link has closed before Serve, on the
// goroutine that ran handle. Call Serve at most once, and then not
// AcceptStream.
func (l *Link) Serve(handle func(*Stream, error), closed func()) {
	a := &l.accept
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handle, a.closed, a.serving = handle, closed, true
	l.acceptLocked()
}

// acceptor is what Serve keeps of a link.
type acceptor struct {
	mu      sync.Mutex
	opened  int  // streams the peer opened: SYN frames read
	taken   int  // streams taken from yamux's backlog (AcceptStream)
	shut    bool // the session has shut down
	serving bool // Serve was called
	running bool // a goroutine accepts
	handle  func(*Stream, error)
	closed  func()
}

// acceptLocked starts a goroutine that accepts, if Serve was called and
// none runs, while a stream waits or once the session has shut down (to
// call closed). l.accept.mu is held.
func (l *Link) acceptLocked() {
	a := &l.accept
	if a.serving && !a.running && (a.opened > a.taken || a.shut) {
		a.running = true
		go l.acceptRun()
	}
}

// acceptRun accepts and hands on streams until none waits, or calls
// closed once the link has closed.
func (l *Link) acceptRun() {
	a := &l.accept
	for {
		s, err := l.AcceptStream(context.Background())
		if errors.Is(err, net.ErrClosed) {
			// AcceptStream fails as soon as the session shuts down;
			// Close returns once it has. The goroutine stays "running":
			// nothing is accepted any more.
			l.Close()
			if a.closed != nil {
				a.closed()
			}
			return
		}
		a.handle(s, err)
		a.mu.Lock()
		if a.taken >= a.opened && !a.shut {
			a.running = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
	}
}

// streamsOpened counts streams the peer opened; the connection's reader
// (yamux's receive loop) calls it before yamux reads their frames.
func (l *Link) streamsOpened(n int) {
	a := &l.accept
	a.mu.Lock()
	defer a.mu.Unlock()
	a.opened += n
	l.acceptLocked()
}

// streamTaken counts a stream taken from yamux's backlog.
func (l *Link) streamTaken() {
	a := &l.accept
	a.mu.Lock()
	defer a.mu.Unlock()
	a.taken++
}

// sessionShut notes that the session has shut down: its connection
// closed.
func (l *Link) sessionShut() {
	a := &l.accept
	a.mu.Lock()
	defer a.mu.Unlock()
	a.shut = true
	l.acceptLocked()
}

// yamux's frame types and its flag that opens a stream.
const (
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 1
)

// frameScan follows yamux's frames in what a connection reads (a header
// of yamuxHeaderSize bytes, then for a data frame its body) and counts
// those that open a stream: a data or window update frame with SYN, as
// yamux takes them (see its handleStreamMessage).
type frameScan struct {
	hdr  [yamuxHeaderSize]byte
	n    int    // bytes of hdr read so far
	skip uint32 // bytes of a data frame's body still to come
}

// scan reads p, the next bytes of the connection, and returns how many
// stream-opening frames' headers ended in it.
func (f *frameScan) scan(p []byte) (opened int) {
	for len(p) > 0 {
		if f.skip > 0 {
			k := min(uint32(len(p)), f.skip)
			f.skip -= k
			p = p[k:]
			continue
		}
		k := copy(f.hdr[f.n:], p)
		f.n += k
		p = p[k:]
		if f.n < yamuxHeaderSize {
			break
		}
		f.n = 0
		typ, flags := f.hdr[1], binary.BigEndian.Uint16(f.hdr[2:4])
		if (typ == yamuxTypeData || typ == yamuxTypeWindowUpdate) && flags&yamuxFlagSYN != 0 {
			opened++
		}
		if typ == yamuxTypeData {
			f.skip = binary.BigEndian.Uint32(f.hdr[8:])
		}
	}
	return opened
}
