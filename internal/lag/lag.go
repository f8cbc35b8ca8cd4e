// Package lag estimates how late this process runs what falls due.
//
// On a quiet machine that is well under a millisecond; on one whose cores
// are all taken (by this process or others) it can reach seconds, and
// everything this process waits for from its peers (their answers, which
// it must read; a peer on the same machine, which runs as late) waits as
// long. The transport's liveness checks measure it (each notes how late it
// ran) and allow for it, so that a busy machine does not declare live
// peers dead; handshakes allow for it; the mesh dials fewer peers at once
// while it is high. Every link dropped or handshake given up on a machine
// that is behind is more work for a machine already behind.
package lag

import (
	"sync"
	"time"
)

// epoch anchors Now on the monotonic clock.
var epoch = time.Now()

// Now is the time on the gauges' clock: since the process started, on
// the monotonic clock.
func Now() time.Duration { return time.Since(epoch) }

// Process is the process's gauge: everything runs on the same scheduler.
var Process Gauge

// Current is how late the process runs now.
func Current() time.Duration { return Process.Get(Now()) }

// Gauge is the most something ran after its time, over the last one to
// two Windows. The zero Gauge is ready to use.
type Gauge struct {
	mu        sync.Mutex
	window    time.Duration // start of the current window, on Now's clock
	cur, prev time.Duration // the most seen in the current and the last window
}

// Window is how long a lateness seen counts: one to two Windows.
const Window = time.Second

// Observe records that something due at due ran at at.
func (g *Gauge) Observe(due, at time.Duration) {
	late := max(at-due, 0)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.roll(at)
	g.cur = max(g.cur, late)
}

// Get returns the lag as of at.
func (g *Gauge) Get(at time.Duration) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.roll(at)
	return max(g.cur, g.prev)
}

// roll starts a new window when the current one is over; g.mu is held.
func (g *Gauge) roll(at time.Duration) {
	switch {
	case at < g.window+Window:
	case at < g.window+2*Window:
		g.window, g.prev, g.cur = g.window+Window, g.cur, 0
	default:
		g.window, g.prev, g.cur = at, 0, 0
	}
}

// MaxStretch bounds what Stretch adds, in multiples of the wait: a peer
// that never answers is still given up on a machine behind by seconds.
const MaxStretch = 3

// Stretch returns the wait d plus how late the process runs now, at most
// MaxStretch × d more: what a wait for a peer should allow, as the peer's
// answer (read by this process, and written by a peer on the same
// machine) is that late too.
func Stretch(d time.Duration) time.Duration { return d + min(Current(), MaxStretch*d) }
