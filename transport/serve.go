package transport

import (
	"context"
	"errors"
	"net"
	"sync"
)

// acceptor runs a link's Serve: it accepts the peer's streams from a
// goroutine that exists only while streams wait to be accepted, instead of
// one blocked in AcceptStream for the link's whole life.
//
// The session tells it of each stream it queues for acceptance (yamux's
// AcceptNotify, from the receive loop); the link's closing reaches it from
// the connection under the session (sessionConn.Close), which yamux closes
// as soon as it shuts down.
type acceptor struct {
	mu      sync.Mutex
	handle  func(*Stream, error)
	closed  func()
	queued  int  // streams queued by the session and not yet taken
	running bool // a goroutine accepts them
	shut    bool // the link has closed
	closing bool // the goroutine that reports the close has started
	runs    sync.WaitGroup
}

// Serve hands each stream the peer opens to handle, in the order the peer
// opened them, and calls closed once the link has closed and the last call
// of handle has returned. It returns at once.
//
// No goroutine waits for streams meanwhile: one starts when a stream
// arrives and ends when no stream is left to accept. handle runs on it,
// so the streams after one wait until handle returns; it should hand the
// stream on and not block. It receives the stream and a nil error, or a
// nil stream and an error wrapping ErrBadStream when the peer's stream had
// a malformed protocol tag (that stream is closed; the link stays up).
// Accepting a stream reads its tag, for up to HandshakeTimeout.
//
// closed runs on a goroutine of its own, once, also when the link has
// closed before Serve. Call Serve at most once, and then not AcceptStream.
func (l *Link) Serve(handle func(*Stream, error), closed func()) {
	a := &l.accept
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handle, a.closed = handle, closed
	if a.shut {
		l.reportCloseLocked()
		return
	}
	l.startAcceptsLocked()
}

// streamQueued is the session's AcceptNotify: the peer opened a stream.
// It runs on the receive loop and must not block.
func (l *Link) streamQueued() {
	a := &l.accept
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queued++
	l.startAcceptsLocked()
}

// sessionClosed is told that the session has shut down.
func (l *Link) sessionClosed() {
	a := &l.accept
	a.mu.Lock()
	defer a.mu.Unlock()
	a.shut = true
	if a.handle != nil {
		l.reportCloseLocked()
	}
}

func (l *Link) startAcceptsLocked() {
	a := &l.accept
	if a.handle == nil || a.running || a.shut || a.queued == 0 {
		return
	}
	a.running = true
	a.runs.Add(1)
	go l.runAccepts()
}

// runAccepts accepts the queued streams, then ends.
func (l *Link) runAccepts() {
	a := &l.accept
	defer a.runs.Done()
	for {
		a.mu.Lock()
		if a.queued == 0 || a.shut {
			a.running = false
			a.mu.Unlock()
			return
		}
		a.queued--
		handle := a.handle
		a.mu.Unlock()
		// A stream is queued, so this does not wait for one; it fails
		// only when the link closes, or the stream's tag is bad.
		s, err := l.AcceptStream(context.Background())
		if errors.Is(err, net.ErrClosed) {
			a.mu.Lock()
			a.running = false
			a.mu.Unlock()
			return
		}
		handle(s, err)
	}
}

// reportCloseLocked starts, once, the goroutine that waits until the link
// has closed completely and its accepts have ended, then calls closed.
func (l *Link) reportCloseLocked() {
	a := &l.accept
	if a.closing {
		return
	}
	a.closing = true
	closed := a.closed
	go func() {
		// The session may still be shutting down (this runs from the
		// Close of its connection); Close returns when it has.
		l.Close()
		a.runs.Wait()
		if closed != nil {
			closed()
		}
	}()
}
