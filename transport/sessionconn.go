package transport

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
)

// sessionConn is the connection under a link's yamux session.
//
// yamux closes it right after it starts shutting down, whatever the cause
// (a failed keepalive, a broken connection, Close), so its Close is where
// the link's streams are aborted, before any reader can spin (see
// streamSet).
//
// Its Write joins each yamux data frame into one write. yamux writes a
// data frame as two writes, the 12-byte header and then the body: two
// system calls, two TCP segments for a small message, and two sealed
// records under a cluster secret. A data header announcing a body is held
// and goes out with that body, which yamux writes next, from the same
// goroutine (yamux's send loop, the only writer); every other write goes
// out at once, so nothing waits.
type sessionConn struct {
	net.Conn
	streams *streamSet
	live    *liveness // told of every read

	// Used only by the reader (yamux's receive loop): the frames read,
	// followed to see the peer open streams (see Link.Serve), told to
	// opened; and closed, told once the connection closes.
	frames frameScan
	opened func(n int)
	closed func()

	// writing is when the write under way started (now's clock), 0 when
	// none is: the link's liveness closes a link whose connection takes
	// no more (see liveness). wrote is when the last write ended.
	writing, wrote atomic.Int64

	// wmu makes each Write one turn on the connection, so that a beat
	// (written by the link's liveness check, not by yamux's send loop)
	// never lands inside one.
	wmu sync.Mutex

	// Used only by the holder of the session's write turn.
	held    bool
	hdr     [yamuxHeaderSize]byte
	vectors net.Buffers // over pair, reset before each writev
	pair    [2][]byte
	direct  bool // Conn writes vectors in one system call
	copyMax int  // bodies up to this size are copied after their header
}

// yamux's frame header: version[1] type[1] flags[2] stream[4] length[4].
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// On a TCP connection, bodies up to tcpCopyMax are copied after their
	// header, larger ones written with it as a vector (writev). Elsewhere
	// (a sealed or TLS connection) bodies up to sealedCopyMax are copied,
	// so that header and body make one record.
	tcpCopyMax    = 1 << 10
	sealedCopyMax = maxPlainText - yamuxHeaderSize
)

var joinBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func newSessionConn(c net.Conn, streams *streamSet, live *liveness) *sessionConn {
	sc := &sessionConn{Conn: c, streams: streams, live: live, copyMax: sealedCopyMax}
	sc.wrote.Store(int64(now()))
	if live != nil {
		live.writing, live.wrote, live.beat = &sc.writing, &sc.wrote, sc.beat
	}
	if _, tcp := c.(*net.TCPConn); tcp {
		sc.direct, sc.copyMax = true, tcpCopyMax
	}
	return sc
}

func (c *sessionConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.held {
		c.held = false
		c.writeStarts()
		defer c.writeEnds()
		return c.writeJoined(p)
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	c.writeStarts()
	defer c.writeEnds()
	return c.Conn.Write(p)
}

// writeStarts and writeEnds note a write to the connection starting and
// ending (see writing, wrote); c.wmu is held.
func (c *sessionConn) writeStarts() { c.writing.Store(int64(now())) }

func (c *sessionConn) writeEnds() {
	c.writing.Store(0)
	c.wrote.Store(int64(now()))
}

// beatFrame is a yamux ping answer (type 2, flag ACK) for a ping id this
// node never sent (ids count up from 0): the peer's yamux reads it and
// finds no ping waiting for it, and its liveness check has heard from
// this node.
var beatFrame = [yamuxHeaderSize]byte{0, 2, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}

// beat writes a beatFrame, unless yamux's send loop is writing (its
// frames are traffic enough). A held data header is not on the wire yet:
// the beat goes before it, never between a frame's parts. A beat that
// blocks (the connection takes nothing more) is what liveness finds
// through writing.
func (c *sessionConn) beat() error {
	if !c.wmu.TryLock() {
		return nil
	}
	defer c.wmu.Unlock()
	c.writeStarts()
	defer c.writeEnds()
	_, err := c.Conn.Write(beatFrame[:])
	return err
}

// writeJoined writes the held header and body in one write.
func (c *sessionConn) writeJoined(body []byte) (int, error) {
	if len(body) > c.copyMax && c.direct {
		c.pair = [2][]byte{c.hdr[:], body}
		c.vectors = c.pair[:]
		n, err := c.vectors.WriteTo(c.Conn) // consumes c.vectors, not pair
		c.pair = [2][]byte{}
		return max(0, int(n)-yamuxHeaderSize), err
	}
	if len(body) > c.copyMax {
		if _, err := c.Conn.Write(c.hdr[:]); err != nil {
			return 0, err
		}
		return c.Conn.Write(body)
	}
	bp := joinBufs.Get().(*[]byte)
	b := append(append((*bp)[:0], c.hdr[:]...), body...)
	n, err := c.Conn.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		joinBufs.Put(bp)
	}
	return max(0, n-yamuxHeaderSize), err
}

// Read reads from the connection; anything read is a sign of life.
func (c *sessionConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if c.live != nil {
			c.live.touch()
		}
		if k := c.frames.scan(p[:n]); k > 0 && c.opened != nil {
			c.opened(k)
		}
	}
	return n, err
}

func (c *sessionConn) Close() error {
	c.streams.abort()
	err := c.Conn.Close()
	if c.closed != nil {
		c.closed()
	}
	return err
}
