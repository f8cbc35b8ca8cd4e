// Copyright (c) 2014 HashiCorp, Inc.
// SPDX-License-Identifier: MPL-2.0
//
// From github.com/hashicorp/yamux v0.1.2; see doc.go for what tallship changed.

package yamux

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Session is used to wrap a reliable ordered connection and to
// multiplex it into multiple streams.
type Session struct {
	// remoteGoAway indicates the remote side does
	// not want futher connections. Must be first for alignment.
	remoteGoAway int32

	// localGoAway indicates that we should stop
	// accepting futher connections. Must be first for alignment.
	localGoAway int32

	// nextStreamID is the next stream we should
	// send. This depends if we are a client/server.
	nextStreamID uint32

	// config holds our configuration
	config *Config

	// logger is used for our logs
	logger Logger

	// conn is the underlying connection
	conn io.ReadWriteCloser

	// bufRead is a buffered reader
	bufRead *bufio.Reader

	// pings is used to track inflight pings
	pings    map[uint32]chan struct{}
	pingID   uint32
	pingLock sync.Mutex

	// streams maps a stream id to a stream, and inflight has an entry
	// for any outgoing stream that has not yet been established. Both are
	// protected by streamLock.
	streams    map[uint32]*Stream
	inflight   map[uint32]struct{}
	streamLock sync.Mutex

	// synCh acts like a semaphore. It is sized to the AcceptBacklog which
	// is assumed to be symmetric between the client and server. This allows
	// the client to avoid exceeding the backlog and instead blocks the open.
	synCh chan struct{}

	// acceptCh is used to pass ready streams to the client
	acceptCh chan *Stream

	// tallship: writeSem is held by whoever writes to conn (there is no
	// send loop): a stream's Write for its data frame, or a writer of
	// the control frames queued in ctrl (see flush).
	writeSem chan struct{}

	// ctrl holds the control frames waiting for the write turn;
	// ctrlSpare is a drained queue to reuse; both under ctrlLock.
	// ctrlBuf, used by the holder of the write turn, joins them.
	ctrl      []*sendReady
	ctrlSpare []*sendReady
	ctrlLock  sync.Mutex
	ctrlBuf   []byte

	// recvDoneCh is closed when recv() exits to avoid a race
	// between stream registration and stream shutdown
	recvDoneCh chan struct{}

	// shutdown is used to safely close a session
	shutdown        bool
	shutdownErr     error
	shutdownCh      chan struct{}
	shutdownLock    sync.Mutex
	shutdownErrLock sync.Mutex
}

// sendReady is a control frame waiting for the write turn, and where to
// report its write (tallship: no more data bodies, see writeFrame).
type sendReady struct {
	Hdr []byte
	Err chan error
}

// newSession is used to construct a new session
func newSession(config *Config, conn io.ReadWriteCloser, client bool) *Session {
	logger := config.Logger
	if logger == nil {
		logger = log.New(config.LogOutput, "", log.LstdFlags)
	}

	s := &Session{
		config:     config,
		logger:     logger,
		conn:       conn,
		bufRead:    bufio.NewReader(conn),
		pings:      make(map[uint32]chan struct{}),
		streams:    make(map[uint32]*Stream),
		inflight:   make(map[uint32]struct{}),
		synCh:      make(chan struct{}, config.AcceptBacklog),
		acceptCh:   make(chan *Stream, config.AcceptBacklog),
		writeSem:   make(chan struct{}, 1),
		recvDoneCh: make(chan struct{}),
		shutdownCh: make(chan struct{}),
	}
	if client {
		s.nextStreamID = 1
	} else {
		s.nextStreamID = 2
	}
	go s.recv()
	if config.EnableKeepAlive {
		go s.keepalive()
	}
	return s
}

// IsClosed does a safe check to see if we have shutdown
func (s *Session) IsClosed() bool {
	select {
	case <-s.shutdownCh:
		return true
	default:
		return false
	}
}

// CloseChan returns a read-only channel which is closed as
// soon as the session is closed.
func (s *Session) CloseChan() <-chan struct{} {
	return s.shutdownCh
}

// NumStreams returns the number of currently open streams
func (s *Session) NumStreams() int {
	s.streamLock.Lock()
	num := len(s.streams)
	s.streamLock.Unlock()
	return num
}

// Open is used to create a new stream as a net.Conn
func (s *Session) Open() (net.Conn, error) {
	conn, err := s.OpenStream()
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// OpenStream is used to create a new stream
func (s *Session) OpenStream() (*Stream, error) {
	if s.IsClosed() {
		return nil, ErrSessionShutdown
	}
	if atomic.LoadInt32(&s.remoteGoAway) == 1 {
		return nil, ErrRemoteGoAway
	}

	// Block if we have too many inflight SYNs
	select {
	case s.synCh <- struct{}{}:
	case <-s.shutdownCh:
		return nil, ErrSessionShutdown
	}

GET_ID:
	// Get an ID, and check for stream exhaustion
	id := atomic.LoadUint32(&s.nextStreamID)
	if id >= math.MaxUint32-1 {
		return nil, ErrStreamsExhausted
	}
	if !atomic.CompareAndSwapUint32(&s.nextStreamID, id, id+2) {
		goto GET_ID
	}

	// Register the stream
	stream := newStream(s, id, streamInit)
	s.streamLock.Lock()
	s.streams[id] = stream
	s.inflight[id] = struct{}{}
	s.streamLock.Unlock()

	if s.config.StreamOpenTimeout > 0 {
		go s.setOpenTimeout(stream)
	}

	// Send the window update to create
	if err := stream.sendWindowUpdate(); err != nil {
		select {
		case <-s.synCh:
		default:
			s.logger.Printf("[ERR] yamux: aborted stream open without inflight syn semaphore")
		}
		return nil, err
	}
	return stream, nil
}

// setOpenTimeout implements a timeout for streams that are opened but not established.
// If the StreamOpenTimeout is exceeded we assume the peer is unable to ACK,
// and close the session.
// The number of running timers is bounded by the capacity of the synCh.
func (s *Session) setOpenTimeout(stream *Stream) {
	timer := time.NewTimer(s.config.StreamOpenTimeout)
	defer timer.Stop()

	select {
	case <-stream.establishCh:
		return
	case <-s.shutdownCh:
		return
	case <-timer.C:
		// Timeout reached while waiting for ACK.
		// Close the session to force connection re-establishment.
		s.logger.Printf("[ERR] yamux: aborted stream open (destination=%s): %v", s.RemoteAddr().String(), ErrTimeout.err)
		s.Close()
	}
}

// Accept is used to block until the next available stream
// is ready to be accepted.
func (s *Session) Accept() (net.Conn, error) {
	conn, err := s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return conn, err
}

// AcceptStream is used to block until the next available stream
// is ready to be accepted.
func (s *Session) AcceptStream() (*Stream, error) {
	select {
	case stream := <-s.acceptCh:
		if err := stream.sendWindowUpdate(); err != nil {
			return nil, err
		}
		return stream, nil
	case <-s.shutdownCh:
		return nil, s.shutdownErr
	}
}

// AcceptStream is used to block until the next available stream
// is ready to be accepted.
func (s *Session) AcceptStreamWithContext(ctx context.Context) (*Stream, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case stream := <-s.acceptCh:
		if err := stream.sendWindowUpdate(); err != nil {
			return nil, err
		}
		return stream, nil
	case <-s.shutdownCh:
		return nil, s.shutdownErr
	}
}

// Close is used to close the session and all streams.
// Attempts to send a GoAway before closing the connection.
func (s *Session) Close() error {
	s.shutdownLock.Lock()
	defer s.shutdownLock.Unlock()

	if s.shutdown {
		return nil
	}
	s.shutdown = true

	s.shutdownErrLock.Lock()
	if s.shutdownErr == nil {
		s.shutdownErr = ErrSessionShutdown
	}
	s.shutdownErrLock.Unlock()

	close(s.shutdownCh)

	s.conn.Close()
	<-s.recvDoneCh

	s.streamLock.Lock()
	defer s.streamLock.Unlock()
	for _, stream := range s.streams {
		stream.forceClose()
	}
	return nil
}

// exitErr is used to handle an error that is causing the
// session to terminate.
func (s *Session) exitErr(err error) {
	s.shutdownErrLock.Lock()
	if s.shutdownErr == nil {
		s.shutdownErr = err
	}
	s.shutdownErrLock.Unlock()
	s.Close()
}

// GoAway can be used to prevent accepting further
// connections. It does not close the underlying conn.
func (s *Session) GoAway() error {
	return s.waitForSend(s.goAway(goAwayNormal))
}

// goAway is used to send a goAway message
func (s *Session) goAway(reason uint32) header {
	atomic.SwapInt32(&s.localGoAway, 1)
	hdr := header(make([]byte, headerSize))
	hdr.encode(typeGoAway, 0, 0, reason)
	return hdr
}

// Ping is used to measure the RTT response time
func (s *Session) Ping() (time.Duration, error) {
	// Get a channel for the ping
	ch := make(chan struct{})

	// Get a new ping id, mark as pending
	s.pingLock.Lock()
	id := s.pingID
	s.pingID++
	s.pings[id] = ch
	s.pingLock.Unlock()

	// Send the ping request
	hdr := header(make([]byte, headerSize))
	hdr.encode(typePing, flagSYN, 0, id)
	if err := s.waitForSend(hdr); err != nil {
		return 0, err
	}

	// Wait for a response
	start := time.Now()
	select {
	case <-ch:
	case <-time.After(s.config.ConnectionWriteTimeout):
		s.pingLock.Lock()
		delete(s.pings, id) // Ignore it if a response comes later.
		s.pingLock.Unlock()
		return 0, ErrTimeout
	case <-s.shutdownCh:
		return 0, ErrSessionShutdown
	}

	// Compute the RTT
	return time.Since(start), nil
}

// keepalive is a long running goroutine that periodically does
// a ping to keep the connection alive.
func (s *Session) keepalive() {
	for {
		select {
		case <-time.After(s.config.KeepAliveInterval):
			_, err := s.Ping()
			if err != nil {
				if err != ErrSessionShutdown {
					s.logger.Printf("[ERR] yamux: keepalive failed: %v", err)
					s.exitErr(ErrKeepAliveTimeout)
				}
				return
			}
		case <-s.shutdownCh:
			return
		}
	}
}

// tallship: there is no send loop. Whoever holds the connection's write
// turn (writeSem) writes: a stream's Write its own data frame
// (writeFrame), and, before giving the turn up, the control frames others
// queued meanwhile (flush). A caller that queues a control frame while the
// turn is free takes it and starts a goroutine to write it (kick), so that
// its wait stays bounded by ConnectionWriteTimeout and the receive loop
// never writes (with a peer that does not read, it would stop reading
// too).

// waitForSend queues a control frame and waits until it is written.
func (s *Session) waitForSend(hdr header) error {
	errCh := make(chan error, 1)
	return s.waitForSendErr(hdr, errCh)
}

// waitForSendErr queues a control frame (a header: they have no body)
// and waits until it is written, checking for a potential shutdown. Since
// there's the expectation that sends can happen in a timely manner, we
// enforce the connection write timeout here; a frame not yet written then
// stays queued, and goes out later.
func (s *Session) waitForSendErr(hdr header, errCh chan error) error {
	if err := s.queue(&sendReady{Hdr: append(header(nil), hdr...), Err: errCh}, false); err != nil {
		return err
	}
	s.kick()

	timeout, done := s.writeTimer()
	defer done()
	select {
	case err := <-errCh:
		return err
	case <-s.shutdownCh:
		return ErrSessionShutdown
	case <-timeout:
		return ErrConnectionWriteTimeout
	}
}

// maxQueuedNoWait bounds the control frames queued: beyond it sendNoWait
// fails (the connection has taken nothing for that long), as upstream it
// failed when the send loop's queue stayed full.
const maxQueuedNoWait = 256

// queue adds a control frame to those waiting for the write turn.
func (s *Session) queue(r *sendReady, noWait bool) error {
	s.ctrlLock.Lock()
	defer s.ctrlLock.Unlock()
	if s.IsClosed() {
		return ErrSessionShutdown
	}
	if noWait && len(s.ctrl) >= maxQueuedNoWait {
		return ErrConnectionWriteTimeout
	}
	s.ctrl = append(s.ctrl, r)
	return nil
}

// hasQueued reports whether control frames wait to be written.
func (s *Session) hasQueued() bool {
	s.ctrlLock.Lock()
	defer s.ctrlLock.Unlock()
	return len(s.ctrl) > 0
}

// flush writes the queued control frames if the write turn is free; if
// it is not, its holder writes them before giving it up.
func (s *Session) flush() {
	select {
	case s.writeSem <- struct{}{}:
		s.flushHeld()
	default:
	}
}

// kick is flush on a goroutine of its own, started only if the turn is
// free: for callers that must not wait for the connection (the receive
// loop), or must not wait longer than ConnectionWriteTimeout.
func (s *Session) kick() {
	select {
	case s.writeSem <- struct{}{}:
		go s.flushHeld()
	default:
	}
}

// flushHeld writes the queued control frames; the caller holds the write
// turn, which flushHeld gives up.
func (s *Session) flushHeld() {
	for {
		err := s.writeQueued()
		<-s.writeSem
		if err != nil {
			if !s.IsClosed() {
				s.logger.Printf("[ERR] yamux: Failed to write header: %v", err)
			}
			s.exitErr(err)
			return
		}
		if !s.hasQueued() {
			return
		}
		select {
		case s.writeSem <- struct{}{}:
		default:
			return // the new holder writes them
		}
	}
}

// writeQueued writes the queued control frames in one write; the caller
// holds the write turn.
func (s *Session) writeQueued() error {
	// q, ctrl and ctrlSpare never share an array: appends to ctrl must
	// not touch the frames being written.
	s.ctrlLock.Lock()
	q := s.ctrl
	s.ctrl, s.ctrlSpare = s.ctrlSpare[:0], nil
	s.ctrlLock.Unlock()
	var err error
	if len(q) > 0 {
		buf := s.ctrlBuf[:0]
		for _, r := range q {
			buf = append(buf, r.Hdr...)
		}
		_, err = s.conn.Write(buf)
		for i, r := range q {
			asyncSendErr(r.Err, err)
			q[i] = nil
		}
		if cap(buf) <= 4<<10 {
			s.ctrlBuf = buf[:0]
		}
	}
	if cap(q) <= 64 {
		s.ctrlLock.Lock()
		s.ctrlSpare = q[:0]
		s.ctrlLock.Unlock()
	}
	return err
}

// writeTimer returns a pooled timer's channel, firing after
// ConnectionWriteTimeout, and the func that stops it and puts it back
// (tallship: waitForSendErr's, shared with acquireWrite).
func (s *Session) writeTimer() (<-chan time.Time, func()) {
	t := timerPool.Get()
	timer := t.(*time.Timer)
	timer.Reset(s.config.ConnectionWriteTimeout)
	return timer.C, func() {
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		timerPool.Put(t)
	}
}

// acquireWrite waits for the right to write to the connection, up to the
// connection write timeout (tallship).
func (s *Session) acquireWrite() error {
	select {
	case s.writeSem <- struct{}{}:
		return nil
	default:
	}
	timeout, done := s.writeTimer()
	defer done()
	select {
	case s.writeSem <- struct{}{}:
		return nil
	case <-s.shutdownCh:
		return ErrSessionShutdown
	case <-timeout:
		return ErrConnectionWriteTimeout
	}
}

// writeFrame writes a data frame from the caller's goroutine (tallship).
//
// Upstream, a stream's Write handed each frame to the send loop and waited
// for it to be written, and the send loop copied the body first (so that
// a Write that timed out could return while the frame stayed queued): a
// goroutine hand-off and a copy per frame, which cost a third of a
// stream's throughput on loopback. Here the writer takes its turn on the
// connection and writes the header and its own body, as a caller of
// net.Conn's Write would.
//
// Waiting for the turn is bounded by ConnectionWriteTimeout, as waiting
// for the send loop was. Once writing, a Write the connection holds up
// (the peer does not read) ends when the connection takes the frame or the
// session closes; it no longer returns ErrConnectionWriteTimeout while the
// frame stays queued to go out later. A failed write ends the session, as
// a failed write of the send loop does.
func (s *Session) writeFrame(hdr header, body []byte) error {
	if err := s.acquireWrite(); err != nil {
		return err
	}
	if s.IsClosed() {
		<-s.writeSem
		return ErrSessionShutdown
	}
	_, err := s.conn.Write(hdr)
	if err == nil && len(body) > 0 {
		_, err = s.conn.Write(body)
	}
	// Control frames queued meanwhile go out before the turn passes on:
	// the next holder may be another data writer, and another, and the
	// flush after the release below would find the turn taken each time.
	if err == nil && s.hasQueued() {
		err = s.writeQueued()
	}
	<-s.writeSem
	if err == nil && s.hasQueued() {
		s.flush()
	}
	if err != nil {
		if s.IsClosed() {
			return ErrSessionShutdown
		}
		s.logger.Printf("[ERR] yamux: Failed to write frame: %v", err)
		s.exitErr(err)
		return err
	}
	return nil
}

// sendNoWait queues a control frame and returns: a goroutine started
// for it writes it, or whoever holds the write turn. It fails only
// when the session has shut down or too many frames wait (maxQueuedNoWait).
func (s *Session) sendNoWait(hdr header) error {
	if err := s.queue(&sendReady{Hdr: append(header(nil), hdr...)}, true); err != nil {
		return err
	}
	s.kick()
	return nil
}

// recv is a long running goroutine that accepts new data
func (s *Session) recv() {
	if err := s.recvLoop(); err != nil {
		s.exitErr(err)
	}
}

// Ensure that the index of the handler (typeData/typeWindowUpdate/etc) matches the message type
var (
	handlers = []func(*Session, header) error{
		typeData:         (*Session).handleStreamMessage,
		typeWindowUpdate: (*Session).handleStreamMessage,
		typePing:         (*Session).handlePing,
		typeGoAway:       (*Session).handleGoAway,
	}
)

// recvLoop continues to receive data until a fatal error is encountered
func (s *Session) recvLoop() error {
	defer close(s.recvDoneCh)
	hdr := header(make([]byte, headerSize))
	for {
		// Read the header
		if _, err := io.ReadFull(s.bufRead, hdr); err != nil {
			if err != io.EOF && !strings.Contains(err.Error(), "closed") && !strings.Contains(err.Error(), "reset by peer") {
				s.logger.Printf("[ERR] yamux: Failed to read header: %v", err)
			}
			return err
		}

		// Verify the version
		if hdr.Version() != protoVersion {
			s.logger.Printf("[ERR] yamux: Invalid protocol version: %d", hdr.Version())
			return ErrInvalidVersion
		}

		mt := hdr.MsgType()
		if mt < typeData || mt > typeGoAway {
			return ErrInvalidMsgType
		}

		if err := handlers[mt](s, hdr); err != nil {
			return err
		}
	}
}

// handleStreamMessage handles either a data or window update frame
func (s *Session) handleStreamMessage(hdr header) error {
	// Check for a new stream creation
	id := hdr.StreamID()
	flags := hdr.Flags()
	if flags&flagSYN == flagSYN {
		if err := s.incomingStream(id); err != nil {
			return err
		}
	}

	// Get the stream
	s.streamLock.Lock()
	stream := s.streams[id]
	s.streamLock.Unlock()

	// If we do not have a stream, likely we sent a RST
	if stream == nil {
		// Drain any data on the wire
		if hdr.MsgType() == typeData && hdr.Length() > 0 {
			s.logger.Printf("[WARN] yamux: Discarding data for stream: %d", id)
			if _, err := io.CopyN(ioutil.Discard, s.bufRead, int64(hdr.Length())); err != nil {
				s.logger.Printf("[ERR] yamux: Failed to discard data: %v", err)
				return nil
			}
		} else {
			s.logger.Printf("[WARN] yamux: frame for missing stream: %v", hdr)
		}
		return nil
	}

	// Check if this is a window update
	if hdr.MsgType() == typeWindowUpdate {
		if err := stream.incrSendWindow(hdr, flags); err != nil {
			if sendErr := s.sendNoWait(s.goAway(goAwayProtoErr)); sendErr != nil {
				s.logger.Printf("[WARN] yamux: failed to send go away: %v", sendErr)
			}
			return err
		}
		return nil
	}

	// Read the new data
	if err := stream.readData(hdr, flags, s.bufRead); err != nil {
		if sendErr := s.sendNoWait(s.goAway(goAwayProtoErr)); sendErr != nil {
			s.logger.Printf("[WARN] yamux: failed to send go away: %v", sendErr)
		}
		return err
	}
	return nil
}

// handlePing is invokde for a typePing frame
func (s *Session) handlePing(hdr header) error {
	flags := hdr.Flags()
	pingID := hdr.Length()

	// Check if this is a query, respond back in a separate context so we
	// don't interfere with the receiving thread blocking for the write.
	if flags&flagSYN == flagSYN {
		// tallship: sendNoWait starts the goroutine that writes it.
		hdr := header(make([]byte, headerSize))
		hdr.encode(typePing, flagACK, 0, pingID)
		if err := s.sendNoWait(hdr); err != nil {
			s.logger.Printf("[WARN] yamux: failed to send ping reply: %v", err)
		}
		return nil
	}

	// Handle a response
	s.pingLock.Lock()
	ch := s.pings[pingID]
	if ch != nil {
		delete(s.pings, pingID)
		close(ch)
	}
	s.pingLock.Unlock()
	return nil
}

// handleGoAway is invokde for a typeGoAway frame
func (s *Session) handleGoAway(hdr header) error {
	code := hdr.Length()
	switch code {
	case goAwayNormal:
		atomic.SwapInt32(&s.remoteGoAway, 1)
	case goAwayProtoErr:
		s.logger.Printf("[ERR] yamux: received protocol error go away")
		return fmt.Errorf("yamux protocol error")
	case goAwayInternalErr:
		s.logger.Printf("[ERR] yamux: received internal error go away")
		return fmt.Errorf("remote yamux internal error")
	default:
		s.logger.Printf("[ERR] yamux: received unexpected go away")
		return fmt.Errorf("unexpected go away received")
	}
	return nil
}

// incomingStream is used to create a new incoming stream
func (s *Session) incomingStream(id uint32) error {
	// Reject immediately if we are doing a go away
	if atomic.LoadInt32(&s.localGoAway) == 1 {
		hdr := header(make([]byte, headerSize))
		hdr.encode(typeWindowUpdate, flagRST, id, 0)
		return s.sendNoWait(hdr)
	}

	// Allocate a new stream
	stream := newStream(s, id, streamSYNReceived)

	s.streamLock.Lock()
	defer s.streamLock.Unlock()

	// Check if stream already exists
	if _, ok := s.streams[id]; ok {
		s.logger.Printf("[ERR] yamux: duplicate stream declared")
		if sendErr := s.sendNoWait(s.goAway(goAwayProtoErr)); sendErr != nil {
			s.logger.Printf("[WARN] yamux: failed to send go away: %v", sendErr)
		}
		return ErrDuplicateStream
	}

	// Register the stream
	s.streams[id] = stream

	// Check if we've exceeded the backlog
	select {
	case s.acceptCh <- stream:
		if notify := s.config.AcceptNotify; notify != nil {
			notify()
		}
		return nil
	default:
		// Backlog exceeded! RST the stream
		s.logger.Printf("[WARN] yamux: backlog exceeded, forcing connection reset")
		delete(s.streams, id)
		hdr := header(make([]byte, headerSize))
		hdr.encode(typeWindowUpdate, flagRST, id, 0)
		return s.sendNoWait(hdr)
	}
}

// closeStream is used to close a stream once both sides have
// issued a close. If there was an in-flight SYN and the stream
// was not yet established, then this will give the credit back.
func (s *Session) closeStream(id uint32) {
	s.streamLock.Lock()
	if _, ok := s.inflight[id]; ok {
		select {
		case <-s.synCh:
		default:
			s.logger.Printf("[ERR] yamux: SYN tracking out of sync")
		}
	}
	delete(s.streams, id)
	s.streamLock.Unlock()
}

// establishStream is used to mark a stream that was in the
// SYN Sent state as established.
func (s *Session) establishStream(id uint32) {
	s.streamLock.Lock()
	if _, ok := s.inflight[id]; ok {
		delete(s.inflight, id)
	} else {
		s.logger.Printf("[ERR] yamux: established stream without inflight SYN (no tracking entry)")
	}
	select {
	case <-s.synCh:
	default:
		s.logger.Printf("[ERR] yamux: established stream without inflight SYN (didn't have semaphore)")
	}
	s.streamLock.Unlock()
}
