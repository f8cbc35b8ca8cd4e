package transport

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// streamSet holds the link's streams that a read or write may block on
// (the open ones, and those closed on this side whose reads go on), so
// that closing the link ends their blocked reads and writes at once.
//
// yamux v0.1.2 does not: a Read or Write blocked on a stream whose session
// shuts down loops on the closed shutdown channel (hashicorp/yamux#176)
// until the session has closed its connection, its receive loop has ended
// and it has closed its streams; with many links dropping at once on a
// loaded machine those spinning goroutines starved the loops they waited
// for, keepalives timed out, more links dropped. The deadline in the past
// set here ends such a read or write at once (Stream.linkErr reports it
// as net.ErrClosed), as well as reads and writes that start after the link
// closed, and deadlines set after it. The session's connection
// (sessionConn.Close) and Link.Close abort the set, before yamux closes
// its streams.
type streamSet struct {
	mu      sync.Mutex
	m       map[*Stream]struct{}
	aborted bool
}

// add tracks s; it reports false, and s must be closed, when the link is
// closing.
func (ss *streamSet) add(s *Stream) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.aborted {
		return false
	}
	if ss.m == nil {
		ss.m = make(map[*Stream]struct{})
	}
	ss.m[s] = struct{}{}
	return true
}

// isAborted reports whether abort has run.
func (ss *streamSet) isAborted() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.aborted
}

// abort ends every blocked and future read and write of the streams.
func (ss *streamSet) abort() {
	ss.mu.Lock()
	ss.aborted = true
	m := ss.m
	ss.m = nil
	ss.mu.Unlock()
	for s := range m {
		s.abortDeadlines()
	}
}

// shrink drops the streams closed on this side on which no read is under
// way, and lets go of the receive buffers of the streams that have none
// of their data waiting. yamux keeps a stream's buffer as large as the
// largest burst it has held until Shrink is called, so without this a
// link that once synced a large registry, or carried a bulk transfer,
// would hold up to StreamWindow per stream for as long as it lives. The
// link's liveness check calls it every KeepAliveInterval: a busy stream
// allocates its buffer again at most that often.
//
// Only a read can block on a stream whose writing side is closed here
// (CloseWrite: a write fails at once; Close ends its reads too), so such
// a stream needs to be in the set only while a read on it is under way:
// a read that starts on a stream dropped already puts it back (reading).
// Streams closed long ago are not kept for a read that may come: yamux
// waits up to a minute for the peer's close (streamCloseTimeout), and a
// link that opens streams by the thousand would hold them all that long.
func (ss *streamSet) shrink() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for s := range ss.m {
		if s.closed.Load() && s.reads.Load() == 0 {
			delete(ss.m, s)
			continue
		}
		s.ys.Shrink()
	}
}

// reading puts s, closed on this side, back in the set while a read on
// it is under way (see shrink); once the set is aborted, it ends the
// read at once instead.
func (ss *streamSet) reading(s *Stream) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.aborted {
		s.abortDeadlines()
		return
	}
	if ss.m == nil {
		ss.m = make(map[*Stream]struct{})
	}
	ss.m[s] = struct{}{}
}

// abortedDeadline is a deadline long past.
var abortedDeadline = time.Unix(1, 0)

// track adds s to the link's streams, or closes it when the link is
// closing.
func (l *Link) track(s *Stream) (*Stream, error) {
	if !l.streams.add(s) {
		s.ys.Close()
		return nil, fmt.Errorf("transport: link closed: %w", net.ErrClosed)
	}
	return s, nil
}
