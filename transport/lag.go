package transport

import (
	"sync"
	"time"
)

// lagGauge estimates how late this process runs what falls due: the most
// a liveness check started after its time, over the last one to two
// lagWindows. On a quiet machine that is well under a millisecond; on one
// whose cores are all taken (by this process or others) it can reach
// seconds, and a peer's answers, which this process must read and the
// peer's own pings, wait as long. liveness adds it to the silence it
// allows, so that a busy machine does not declare live peers dead: every
// link dropped that way is more work for a machine already behind.
type lagGauge struct {
	mu        sync.Mutex
	window    time.Duration // start of the current window, on now's clock
	cur, prev time.Duration // the most seen in the current and the last window
}

const lagWindow = time.Second

// lag is the process's gauge: all links run on the same scheduler.
var lag lagGauge

// observe records that something due at due ran at at.
func (g *lagGauge) observe(due, at time.Duration) {
	late := max(at-due, 0)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.roll(at)
	g.cur = max(g.cur, late)
}

// get returns the lag as of at.
func (g *lagGauge) get(at time.Duration) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.roll(at)
	return max(g.cur, g.prev)
}

// roll starts a new window when the current one is over; g.mu is held.
func (g *lagGauge) roll(at time.Duration) {
	switch {
	case at < g.window+lagWindow:
	case at < g.window+2*lagWindow:
		g.window, g.prev, g.cur = g.window+lagWindow, g.cur, 0
	default:
		g.window, g.prev, g.cur = at, 0, 0
	}
}
