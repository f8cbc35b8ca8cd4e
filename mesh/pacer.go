package mesh

import (
	"sync"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
)

// dialPacer bounds the dials a node runs at once to the peers it
// discovers, adapting the bound as TCP's congestion window does (additive
// increase, multiplicative decrease): each dial that links quickly raises
// it by one, up to Config.MaxDials; each that timed out, or was slow,
// halves it, down to minDials (a refusal or a dead address says nothing
// of the load). A node meeting a mesh that answers fast soon dials many
// peers at once; one whose dials time out (a machine, or a mesh, buried
// in handshakes) backs off before it buries them deeper.
//
// A timeout is a late sign: by then the handshakes in flight have waited
// HandshakeTimeout, and most of them fail too. The early sign is the
// process running late (internal/lag): on a machine that runs what falls
// due a quarter of HandshakeTimeout late, every dial that ends counts as
// timed out, linked or not. That is what keeps a hundred nodes started
// at once on two cores (or one machine's share of a LAN's load) from
// feeding on themselves: handshakes given up are work done for nothing,
// and their retries more.
type dialPacer struct {
	mu       sync.Mutex
	limit    int // dials allowed at once now
	max      int
	active   int
	wake     chan struct{}        // closed and replaced when a turn frees
	late     func() time.Duration // how late the process runs (lag.Current)
	overload time.Duration        // lateness that counts as a timeout
}

const (
	minDials   = 2
	startDials = 8
)

func newDialPacer(max int, handshakeTimeout time.Duration) *dialPacer {
	return &dialPacer{limit: min(startDials, max), max: max, wake: make(chan struct{}),
		late: lag.Current, overload: handshakeTimeout / 4}
}

// acquire waits for a turn; it returns false when stop is closed first.
func (p *dialPacer) acquire(stop <-chan struct{}) bool {
	for {
		p.mu.Lock()
		if p.active < p.limit {
			p.active++
			p.mu.Unlock()
			return true
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-wake:
		case <-stop:
			return false
		}
	}
}

// release ends a turn: linked says whether the dial made a link,
// timedOut whether an attempt of it timed out, took how long it took. A
// dial that took a quarter of HandshakeTimeout counts as timed out, and
// one that linked raises the bound only if it took less than a sixteenth
// (125 ms by default; a handshake on a LAN takes a few): a dial that links
// slowly says the machine, or the peer, is as busy as it should be. When
// a link raised the bound whatever it took, a hundred nodes forming a
// mesh on two cores each soon dialed 32 at once, and one handshake in
// three was given up and made again, or made a duplicate link.
func (p *dialPacer) release(linked, timedOut bool, took time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active--
	switch {
	case timedOut || took >= p.overload || p.late() >= p.overload:
		p.limit = max(min(minDials, p.max), p.limit/2)
	case linked && took < p.overload/4:
		p.limit = min(p.max, p.limit+1)
	}
	close(p.wake)
	p.wake = make(chan struct{})
}
