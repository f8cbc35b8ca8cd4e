package mesh

import (
	"slices"
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
	mu     sync.Mutex
	limit  int // dials allowed at once now
	max    int
	active int
	// waiting: the dials that wait for a turn, first come first; a turn
	// that frees goes to the first (grant). Every waiting dial was woken
	// when one freed, and all but one waited again: with a node waiting
	// to dial each of 199 peers, a fiftieth of a forming mesh's work.
	// fallbacks: the dials to lower ids, which dial this node themselves
	// (see considerLocked), wait behind all others: given turns in the
	// order they came, they ran while those peers' own dials came in,
	// and twice as many handshakes were ended half made (yieldLocked).
	waiting   []chan struct{}
	fallbacks []chan struct{}
	late      func() time.Duration // how late the process runs (lag.Current)
	overload  time.Duration        // lateness that counts as a timeout

	// silent bounds the dials, max at once, to peers that did not answer
	// the last one (see turn): they take no turn, and cost no work, but
	// each sends its SYNs, and when half of a LAN's machines vanish at
	// once each node has that many.
	silent chan struct{}
}

const (
	minDials   = 2
	startDials = 8
)

func newDialPacer(max int, handshakeTimeout time.Duration) *dialPacer {
	return &dialPacer{limit: min(startDials, max), max: max,
		late: lag.Current, overload: handshakeTimeout / 4, silent: make(chan struct{}, max)}
}

// acquireSilent waits for a place among the dials to peers that did not
// answer; it returns false when stop is closed first.
func (p *dialPacer) acquireSilent(stop <-chan struct{}) bool {
	select {
	case p.silent <- struct{}{}:
		return true
	case <-stop:
		return false
	}
}

// releaseSilent ends what acquireSilent began.
func (p *dialPacer) releaseSilent() { <-p.silent }

// acquire waits for a turn; it returns false when stop is closed, or
// expire fires (nil: never), first.
func (p *dialPacer) acquire(stop <-chan struct{}, expire <-chan time.Time) bool {
	return p.acquireAs(false, stop, expire)
}

// acquireAs is acquire for a dial that is a fallback (see
// dialPacer.fallbacks), or not.
func (p *dialPacer) acquireAs(fallback bool, stop <-chan struct{}, expire <-chan time.Time) bool {
	p.mu.Lock()
	if p.active < p.limit && len(p.waiting)+len(p.fallbacks) == 0 {
		p.active++
		p.mu.Unlock()
		return true
	}
	q := &p.waiting
	if fallback {
		q = &p.fallbacks
	}
	granted := make(chan struct{}, 1)
	*q = append(*q, granted)
	p.mu.Unlock()
	select {
	case <-granted:
		return true
	case <-stop:
	case <-expire:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(*q, granted); i >= 0 {
		*q = slices.Delete(*q, i, i+1)
	} else {
		// Granted as it gave up: the turn goes to the next.
		p.active--
		p.grant()
	}
	return false
}

// grant gives the turns that are free to the dials that wait, first
// come first, fallbacks last. p.mu is held.
func (p *dialPacer) grant() {
	for p.active < p.limit {
		q := &p.waiting
		if len(*q) == 0 {
			q = &p.fallbacks
		}
		if len(*q) == 0 {
			return
		}
		p.active++
		(*q)[0] <- struct{}{}
		*q = slices.Delete(*q, 0, 1)
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
	p.grant()
}

// giveBack ends a turn that says nothing of the load: a dial put off, or
// one whose peer has not answered (see turn).
func (p *dialPacer) giveBack() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active--
	p.grant()
}

// turn is one dial's place among those the pacer allows at once. What
// the pacer bounds is the work of handshakes, and a connection that
// answers on a LAN answers within a millisecond: a dial holds its turn
// from its start only while an address answers within dialStagger. When
// none has, the dial gives the turn back and waits for its connection
// without one, and takes a turn again, if one frees soon, once the
// connection is made. A peer that does not answer (gone without a
// goodbye, or beyond a partition, while discovery's records of it have
// not run out: two minutes by default) waits at no one's expense (its
// next dials take no turn; MaxDials of them run at once, on their own:
// see dialPacer.silent): when its dials held their turns until they
// timed out, the fifty peers of the far side of a partitioned mesh kept
// every turn of every node, and a link lost within a side was not made
// again for a minute.
type turn struct {
	p        *dialPacer
	fallback bool // a dial to a lower id (see dialPacer.fallbacks)
	mu       sync.Mutex
	held     bool
	since    time.Time // when it was taken
}

// take takes the turn unless it is held, waiting as acquire does.
func (t *turn) take(stop <-chan struct{}, expire <-chan time.Time) bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.held {
		return true
	}
	if !t.p.acquireAs(t.fallback, stop, expire) {
		return false
	}
	t.held, t.since = true, time.Now()
	return true
}

// holds reports whether the turn is held.
func (t *turn) holds() bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.held
}

// giveBack gives the turn back, if held, leaving the bound as it is.
func (t *turn) giveBack() {
	t.let(func(p *dialPacer, _ time.Duration) { p.giveBack() })
}

// end gives the turn back, if held, with the dial's outcome (see
// release), timed from when the turn was taken.
func (t *turn) end(linked, timedOut bool) {
	t.let(func(p *dialPacer, took time.Duration) { p.release(linked, timedOut, took) })
}

// let ends the turn, if held, with done, given how long it was held.
func (t *turn) let(done func(p *dialPacer, took time.Duration)) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.held {
		t.held = false
		done(t.p, time.Since(t.since))
	}
}
