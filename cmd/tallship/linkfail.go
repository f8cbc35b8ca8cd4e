package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/tallship-go/tallship/mesh"
)

// failureLog prints a node's failed links (mesh.LinkFailed) and NATS out
// of reach (mesh.NATSDown) on stderr, one line each, whatever
// --log-level says: a wrong secret, cluster, address or NATS server
// names itself. The node publishes each once per change of its
// reason, so a peer retried with backoff is one line. It keeps them for
// ls and query, which fail when they linked with no node and links
// failed.
type failureLog struct {
	w      io.Writer
	prefix string // "tallship ls: "
	done   chan struct{}

	mu     sync.Mutex
	linked bool // a peer came up
	failed []mesh.Event
}

// startFailureLog reads events until they end (the node closes, or the
// command's ctx ends) and prints the failed links among them on w.
func startFailureLog(w io.Writer, cmd string, events <-chan mesh.Event) *failureLog {
	f := &failureLog{w: w, prefix: "tallship " + cmd + ": ", done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for ev := range events {
			switch ev.Kind {
			case mesh.PeerUp:
				f.mu.Lock()
				f.linked = true
				f.mu.Unlock()
			case mesh.LinkFailed:
				f.mu.Lock()
				f.failed = append(f.failed, ev)
				f.mu.Unlock()
				fmt.Fprintln(f.w, f.prefix+failureLine(ev))
			case mesh.NATSDown: // once per outage: its sites are cut off
				fmt.Fprintln(f.w, f.prefix+failureLine(ev))
			}
		}
	}()
	return f
}

// wait waits until the log has read its last event; the node must be
// closed, or the ctx its events were taken with ended.
func (f *failureLog) wait() {
	if f != nil {
		<-f.done
	}
}

// unlinked returns an error naming the failures when the node linked with
// no peer and links failed; nil otherwise.
func (f *failureLog) unlinked() error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.linked || len(f.failed) == 0 {
		return nil
	}
	var lines []string
	for _, ev := range f.failed {
		lines = append(lines, failureLine(ev))
	}
	return errors.New("linked with no node: " + strings.Join(lines, "; "))
}

// failureLine is a LinkFailed event as one line: the reason first, then
// the error, and the peer's id when the node knew it.
func failureLine(ev mesh.Event) string {
	s := "link failed"
	if ev.Err != nil {
		s = ev.Err.Error()
	}
	if ev.Peer != "" && !strings.Contains(s, strconv.Quote(ev.Peer)) {
		s += " (peer " + strconv.Quote(ev.Peer) + ")"
	}
	return strings.Join(strings.Fields(s), " ")
}
