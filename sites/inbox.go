package sites

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
)

// inboxBytes bounds the bytes of the registry's messages received and
// not yet read, and messageInboxBytes those of the mesh's messages, each
// message counted with its subject and an overhead (cost; vars for the
// tests): beyond it, a message is dropped (logged), and the
// registry's gap repair, or the sender's resend of what was not
// acknowledged, sends it again. NATS bounds a channel subscription by
// messages alone, which at its max_payload is gigabytes.
var (
	inboxBytes        = 32 << 20
	messageInboxBytes = 32 << 20
)

// msgOverhead is what a message costs the inbox beyond its payload and
// subject: the nats.Msg, its headers' map, its slot. Counting payloads
// alone let empty messages, which anyone allowed on a subject can
// publish, pile up without bound while the node reads slowly.
const msgOverhead = 256

// cost is what m counts against an inbox's limit.
func cost(m *nats.Msg) int { return len(m.Data) + len(m.Subject) + len(m.Reply) + msgOverhead }

// inbox is what NATS delivered to the node and the registry (or the
// mesh) has not read yet, bounded in bytes.
type inbox struct {
	limit *int // inboxBytes or messageInboxBytes
	mu    sync.Mutex
	q     []*nats.Msg
	head  int
	bytes int
	ready chan struct{} // a message came (capacity 1)
	// dropped counts the messages push refused.
	dropped uint64
}

func newInbox(limit *int) *inbox { return &inbox{limit: limit, ready: make(chan struct{}, 1)} }

// push queues m, or reports false when it would exceed the inbox's limit.
func (in *inbox) push(m *nats.Msg) bool {
	in.mu.Lock()
	c := cost(m)
	if in.bytes+c > *in.limit {
		in.dropped++
		in.mu.Unlock()
		return false
	}
	in.bytes += c
	in.q = append(in.q, m)
	in.mu.Unlock()
	select {
	case in.ready <- struct{}{}:
	default:
	}
	return true
}

// droppedCount returns how many messages push refused.
func (in *inbox) droppedCount() uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.dropped
}

// pop returns the oldest message, waiting for one until ctx or done ends
// (nil then).
func (in *inbox) pop(ctx context.Context, done <-chan struct{}) *nats.Msg {
	for {
		in.mu.Lock()
		if in.head < len(in.q) {
			m := in.q[in.head]
			in.q[in.head] = nil
			in.head++
			if in.head == len(in.q) {
				// Emptied: a queue grown by a burst is let go.
				if cap(in.q) > 4096 {
					in.q = nil
				} else {
					in.q = in.q[:0]
				}
				in.head = 0
			}
			in.bytes -= cost(m)
			in.mu.Unlock()
			return m
		}
		in.mu.Unlock()
		select {
		case <-in.ready:
		case <-ctx.Done():
			return nil
		case <-done:
			return nil
		}
	}
}
