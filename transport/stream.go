package transport

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Stream is one tagged stream of a link. It is a net.Conn whose
// RemoteAddr names the peer.
//
// It wraps a hashicorp/yamux stream and changes what yamux does in three
// places (see linkErr): a read or write blocked when the link closes ends
// at once with an error that unwraps to net.ErrClosed; a frame that waited
// 4 × WriteTimeout for its turn on the connection closes the link (yamux
// leaves it queued and returns an error, so the link's byte stream is no
// longer known); deadlines already past fail at once with a net.Error
// whose Timeout is true.
type Stream struct {
	ys       *yamux.Stream
	protocol string
	link     *Link

	readDeadline, writeDeadline atomic.Value // time.Time
	closed                      atomic.Bool  // its writing side is closed (Close, CloseWrite)
	readClosed                  atomic.Bool  // its reading side is closed (Close)
	reads                       atomic.Int32 // reads under way (see streamSet.shrink)
}

// errStreamClosed is what a read or write of a stream closed here gets.
var errStreamClosed = fmt.Errorf("transport: stream closed: %w", net.ErrClosed)

// Read reads from the stream; a deadline already past fails at once with
// a net.Error whose Timeout is true. Once the peer has closed its side and
// everything it sent is read, Read returns io.EOF; once the link or the
// stream (Close) has closed, an error that unwraps to net.ErrClosed.
func (s *Stream) Read(b []byte) (int, error) {
	if s.readClosed.Load() {
		return 0, errStreamClosed
	}
	if past(&s.readDeadline) {
		return 0, s.linkErr(&timeoutError{op: "read"})
	}
	s.reads.Add(1)
	if s.closed.Load() {
		s.link.streams.reading(s) // see streamSet.shrink
	}
	n, err := s.ys.Read(b)
	s.reads.Add(-1)
	if err != nil && s.readClosed.Load() {
		return n, errStreamClosed // ended by Close
	}
	return n, s.linkErr(err)
}

// Write writes b to the stream, waiting while the peer's receive window is
// full; a deadline already past fails at once with a net.Error whose
// Timeout is true. Once the link has closed it returns an error that
// unwraps to net.ErrClosed.
func (s *Stream) Write(b []byte) (int, error) {
	if past(&s.writeDeadline) {
		return 0, s.linkErr(&timeoutError{op: "write"})
	}
	n, err := s.ys.Write(b)
	return n, s.linkErr(err)
}

// WriteNoWait writes as much of b as the peer's receive window takes now,
// without waiting for the peer to read: n < len(b) with a nil error means
// that the window is full, and the rest of b is the caller's to write
// later. It still waits for its turn on the connection, like Write. It
// must not run at the same time as another write or write deadline change
// on s.
func (s *Stream) WriteNoWait(b []byte) (int, error) {
	// yamux waits for window only where a write deadline applies: one
	// already past makes it return what it sent as soon as it would wait.
	s.ys.SetWriteDeadline(abortedDeadline)
	n, err := s.ys.Write(b)
	s.SetWriteDeadline(s.deadline(&s.writeDeadline))
	if errors.Is(err, yamux.ErrTimeout) && !s.link.streams.isAborted() {
		return n, nil
	}
	return n, s.linkErr(err)
}

// Close closes the stream, as a net.Conn's Close does: reads and writes
// here end at once with an error that unwraps to net.ErrClosed, blocked
// ones included. The peer reads what was written, then io.EOF; what it
// writes from then on is dropped. (yamux waits for the peer's close up to
// streamCloseTimeout, and then resets the stream.)
func (s *Stream) Close() error {
	s.readClosed.Store(true)
	s.ys.SetReadDeadline(abortedDeadline) // ends a read under way
	return s.CloseWrite()
}

// CloseWrite closes the writing side of the stream only, as a TCP
// connection's CloseWrite does: the peer reads what was written, then
// io.EOF; reads here go on until the peer closes its side as well (a
// peer that has not closed it streamCloseTimeout later, a minute, has
// the stream reset). A read keeps the stream in the link's set (see
// streamSet), so that a read blocked when the link closes still ends at
// once.
func (s *Stream) CloseWrite() error {
	s.closed.Store(true)
	return s.linkErr(s.ys.Close())
}

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.readDeadline.Store(t)
	if s.link.streams.isAborted() || s.readClosed.Load() {
		t = abortedDeadline
	}
	err := s.ys.SetReadDeadline(t)
	if s.readClosed.Load() {
		s.ys.SetReadDeadline(abortedDeadline) // Close came meanwhile
	}
	return err
}

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.writeDeadline.Store(t)
	if s.link.streams.isAborted() {
		t = abortedDeadline
	}
	return s.ys.SetWriteDeadline(t)
}

func (s *Stream) deadline(d *atomic.Value) time.Time {
	t, _ := d.Load().(time.Time)
	return t
}

func past(d *atomic.Value) bool {
	t, _ := d.Load().(time.Time)
	return !t.IsZero() && !time.Now().Before(t)
}

// abortDeadlines ends every blocked and future read and write of s.
func (s *Stream) abortDeadlines() { s.ys.SetDeadline(abortedDeadline) }

// Protocol is the stream's tag.
func (s *Stream) Protocol() string { return s.protocol }

// Link is the link the stream runs on.
func (s *Stream) Link() *Link { return s.link }

// RemoteAddr names the peer: its Network is "tallship", its String the
// peer's node id.
func (s *Stream) RemoteAddr() net.Addr {
	return PeerAddr{ID: s.link.remote.ID, Addr: s.link.conn.RemoteAddr()}
}

// LocalAddr names this node.
func (s *Stream) LocalAddr() net.Addr {
	return PeerAddr{ID: s.link.local.ID, Addr: s.link.conn.LocalAddr()}
}

// PeerAddr is the address of one end of a stream: a node id, and the
// network address its link runs over.
type PeerAddr struct {
	ID   string
	Addr net.Addr
}

// Network returns "tallship".
func (a PeerAddr) Network() string { return "tallship" }

// String returns the node id.
func (a PeerAddr) String() string { return a.ID }

// linkErr turns yamux's errors into the ones Stream documents.
//
//   - ErrConnectionWriteTimeout: yamux gave up waiting for its send loop
//     to take a frame but left the frame queued, so what reaches the peer
//     is no longer known. The link is closed, as when the peer falls
//     silent, and the error unwraps to net.ErrClosed.
//   - ErrSessionShutdown, and the timeouts that the link's closing caused
//     (streamSet.abort): net.ErrClosed.
//   - ErrStreamClosed (a write after Close): net.ErrClosed.
//   - ErrConnectionReset: ErrStreamReset.
//   - ErrTimeout: a deadline passed; it is a net.Error already.
func (s *Stream) linkErr(err error) error {
	if err == nil {
		return nil // before the checks below, which allocate
	}
	return s.link.streamErr(err)
}

// streamErr is linkErr for any stream of l, or l's session.
func (l *Link) streamErr(err error) error {
	switch {
	case errors.Is(err, yamux.ErrConnectionWriteTimeout):
		wait := l.cfg.frameWait()
		l.cfg.Logger.Debug("link write timed out; closing the link", "peer", l.remote.ID, "timeout", wait)
		l.live.why.CompareAndSwap(nil, ErrWriteBlocked)
		l.Close()
		return fmt.Errorf("transport: link closed: a write waited %v for the connection: %w", wait, net.ErrClosed)
	case errors.Is(err, yamux.ErrSessionShutdown):
		return fmt.Errorf("transport: link closed: %w", net.ErrClosed)
	case errors.Is(err, yamux.ErrStreamClosed):
		return fmt.Errorf("transport: stream closed: %w", net.ErrClosed)
	case errors.Is(err, yamux.ErrConnectionReset):
		return ErrStreamReset
	}
	var ne net.Error
	if (errors.Is(err, yamux.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout())) && l.streams.isAborted() {
		return fmt.Errorf("transport: link closed: %w", net.ErrClosed)
	}
	return err
}
