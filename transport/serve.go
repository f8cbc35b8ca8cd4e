package transport

import (
	"context"
	"errors"
	"net"
)

// Serve hands each stream the peer opens to handle, in the order the peer
// opened them, and calls closed once the link has closed and the last call
// of handle has returned. It returns at once.
//
// One goroutine accepts the streams for as long as the link lives (yamux
// tells of a new stream only through Accept) and ends when the link
// closes. handle runs on it, so the streams after one wait until handle
// returns; it should hand the stream on and not block. It receives the
// stream and a nil error, or a nil stream and an error wrapping
// ErrBadStream when the peer's stream had a malformed protocol tag (that
// stream is closed; the link stays up). Accepting a stream reads its tag,
// for up to HandshakeTimeout.
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
	go func() {
		for {
			s, err := l.AcceptStream(context.Background())
			if errors.Is(err, net.ErrClosed) {
				break
			}
			handle(s, err)
		}
		// AcceptStream fails as soon as the session shuts down; Close
		// returns once it has.
		l.Close()
		if closed != nil {
			closed()
		}
	}()
}
