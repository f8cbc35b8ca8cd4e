package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// StreamChunk is the size of stream-send's writes.
const StreamChunk = 16 << 10

// patternSeed seeds the bytes stream-send writes.
var patternSeed = [32]byte{'t', 's', 'n', 'o', 'd', 'e'}

// pattern returns the endless, deterministic byte pattern stream-send
// writes: pseudo-random, so a chunk missing, repeated or out of place
// changes its SHA-256.
func pattern() io.Reader { return rand.NewChaCha8(patternSeed) }

// PatternSum returns the hex SHA-256 of the first n bytes stream-send
// writes: what a stream-read event reports when they all arrived, in
// order.
func PatternSum(n int64) string {
	h := sha256.New()
	io.CopyN(h, pattern(), n) // ChaCha8 never fails
	return hex.EncodeToString(h.Sum(nil))
}

// streams runs the stream commands (stream-listen, stream-send). Their
// goroutines belong to wg and end with ctx.
type streams struct {
	ctx  context.Context
	node *mesh.Node
	out  *printer
	wg   *sync.WaitGroup
}

// listen accepts the streams peers open with protocol and reads each to
// its end in a goroutine of its own, which then prints stream-read.
func (s *streams) listen(protocol string) error {
	ln, err := s.node.Listen(protocol)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(s.ctx, func() { ln.Close() })
	s.wg.Go(func() {
		defer stop()
		defer ln.Close()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.read(protocol, c) })
		}
	})
	return nil
}

func (s *streams) read(protocol string, c net.Conn) {
	defer s.abortOnDone(c)()
	defer c.Close()
	h := sha256.New()
	n, err := io.Copy(h, c)
	s.print("stream-read", c, protocol, n, h, err)
}

// send opens a stream to peer for protocol, then, in a goroutine, writes
// n bytes of the pattern to it, StreamChunk at a time and one write every
// every (0: as fast as it goes), closes it and prints stream-sent. It
// returns once the stream is open.
func (s *streams) send(peer, protocol string, n int64, every time.Duration) error {
	ctx, cancel := context.WithTimeout(s.ctx, commandTimeout)
	c, err := s.node.OpenStream(ctx, peer, protocol)
	cancel()
	if err != nil {
		return err
	}
	s.wg.Go(func() {
		defer s.abortOnDone(c)()
		h := sha256.New()
		written, err := s.write(c, h, n, every)
		if cerr := c.Close(); err == nil {
			err = cerr
		}
		s.print("stream-sent", c, protocol, written, h, err)
	})
	return nil
}

// write writes n bytes of the pattern to c and h, as send says.
func (s *streams) write(c net.Conn, h hash.Hash, n int64, every time.Duration) (written int64, err error) {
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	src := io.LimitReader(pattern(), n)
	buf := make([]byte, StreamChunk)
	for {
		k, _ := io.ReadFull(src, buf) // short only at the end
		if k == 0 {
			return written, nil
		}
		if _, err := c.Write(buf[:k]); err != nil {
			return written, err
		}
		h.Write(buf[:k])
		written += int64(k)
		if tick != nil {
			select {
			case <-tick:
			case <-s.ctx.Done():
				return written, s.ctx.Err()
			}
		}
	}
}

// abortOnDone ends c's blocked reads and writes when the node stops (a
// stream's Close leaves its reads waiting for the peer's close); call the
// function it returns once done with c.
func (s *streams) abortOnDone(c net.Conn) (stop func() bool) {
	return context.AfterFunc(s.ctx, func() { c.SetDeadline(time.Now()) })
}

func (s *streams) print(ev string, c net.Conn, protocol string, n int64, h hash.Hash, err error) {
	e := Event{Ev: ev, Peer: c.RemoteAddr().String(), Data: protocol, Bytes: n, Sum: hex.EncodeToString(h.Sum(nil))}
	if err != nil {
		e.Err = err.Error()
	}
	s.out.print(e)
}

// parseStreamSend parses stream-send's arguments: PEER NAME BYTES [EVERY].
func parseStreamSend(args []string) (peer, protocol string, n int64, every time.Duration, err error) {
	if len(args) < 3 || len(args) > 4 {
		return "", "", 0, 0, errors.New("stream-send PEER NAME BYTES [EVERY]")
	}
	if n, err = strconv.ParseInt(args[2], 10, 64); err != nil || n < 0 {
		return "", "", 0, 0, fmt.Errorf("stream-send: bytes %q: want a count", args[2])
	}
	if len(args) == 4 {
		if every, err = time.ParseDuration(args[3]); err != nil || every < 0 {
			return "", "", 0, 0, fmt.Errorf("stream-send: every %q: want a duration", args[3])
		}
	}
	return args[0], args[1], n, every, nil
}
