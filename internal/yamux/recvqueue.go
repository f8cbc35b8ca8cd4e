package yamux

import (
	"bufio"
	"io"
	"math/bits"
	"sync"
)

// tallship: a stream's received data waits in a recvQueue of chunks
// instead of a bytes.Buffer.
//
// Upstream, the receive loop copied a data frame's body from the
// connection into the stream's bytes.Buffer holding the stream's receive
// lock: a Read waited for the system calls of the whole body, and the
// buffer, sized by the largest burst, stayed with the stream for its whole
// life. Here a body that is not already in the session's read buffer is
// read into chunks of its own outside the lock, each queued as soon as it
// is full; the lock covers only the queueing and the Read's copy. Chunks
// come from pools and go back when read, so a stream holds buffers only
// while data waits in it.

// Chunks are 1 KiB to 64 KiB; a larger body takes several.
const (
	minChunkShift = 10
	maxChunkShift = 16
	maxChunk      = 1 << maxChunkShift
)

var chunkPools [maxChunkShift - minChunkShift + 1]sync.Pool

// getChunk returns a pooled chunk of at least min(n, maxChunk) bytes.
func getChunk(n int) *[]byte {
	class := 0
	if n > 1<<minChunkShift {
		class = bits.Len(uint(n-1)) - minChunkShift
	}
	class = minInt(class, len(chunkPools)-1)
	if p, ok := chunkPools[class].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 1<<(class+minChunkShift))
	return &b
}

// putChunk gives a chunk from getChunk back.
func putChunk(p *[]byte) {
	chunkPools[bits.Len(uint(cap(*p)))-1-minChunkShift].Put(p)
}

// recvChunk is a chunk of received data; (*p)[r:w] is still to be read.
type recvChunk struct {
	p    *[]byte
	r, w int
}

// recvQueue is a stream's received data not yet read. Its owner locks it
// (Stream.recvLock).
type recvQueue struct {
	chunks []recvChunk // chunks[head:] hold data
	head   int
	len    int // bytes to read
}

// push queues a chunk holding (*p)[:n].
func (q *recvQueue) push(p *[]byte, n int) {
	if len(q.chunks) == cap(q.chunks) && q.head > 0 {
		k := copy(q.chunks, q.chunks[q.head:])
		clear(q.chunks[k:])
		q.chunks, q.head = q.chunks[:k], 0
	}
	q.chunks = append(q.chunks, recvChunk{p: p, w: n})
	q.len += n
}

// readFrom queues n bytes that r holds buffered, so that reading them
// makes no system call: in the last chunk's room if they fit, else in a
// new chunk.
func (q *recvQueue) readFrom(r *bufio.Reader, n int) error {
	if last := len(q.chunks) - 1; last >= q.head {
		c := &q.chunks[last]
		if len(*c.p)-c.w >= n {
			if _, err := io.ReadFull(r, (*c.p)[c.w:c.w+n]); err != nil {
				return err
			}
			c.w += n
			q.len += n
			return nil
		}
	}
	for n > 0 {
		p := getChunk(n)
		k := minInt(n, len(*p))
		if _, err := io.ReadFull(r, (*p)[:k]); err != nil {
			putChunk(p)
			return err
		}
		q.push(p, k)
		n -= k
	}
	return nil
}

// read copies queued data into b, giving back the chunks it empties.
func (q *recvQueue) read(b []byte) int {
	n := 0
	for n < len(b) && q.head < len(q.chunks) {
		c := &q.chunks[q.head]
		k := copy(b[n:], (*c.p)[c.r:c.w])
		c.r += k
		n += k
		if c.r == c.w {
			putChunk(c.p)
			*c = recvChunk{}
			q.head++
		}
	}
	q.len -= n
	if q.head == len(q.chunks) {
		q.chunks, q.head = q.chunks[:0], 0
		if cap(q.chunks) > 16 {
			q.chunks = nil // a burst's queue does not outlive it
		}
	}
	return n
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}
