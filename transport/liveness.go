package transport

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tallship-go/tallship/internal/lag"
)

// liveness declares a link's peer dead when nothing at all has arrived from
// it for KeepAliveInterval + WriteTimeout, and makes sure that this side
// is never silent that long: once it has written nothing for
// KeepAliveInterval, it writes a beat (sessionConn.beat), a 12-byte frame
// the peer's yamux reads and drops. Each side beats for itself, when it
// is quiet: an idle link carries one beat each way per interval, a link
// busy one way beats only the other way, a link busy both ways never.
//
// Beats replaced pings (a ping and its answer per interval, the dialer's
// side pinging): the same two frames per interval on an idle link, but a
// ping took a channel, two timers, a goroutine on the peer for its answer
// and four hand-offs to the two send loops, about 35 µs of CPU per frame
// on this machine; a beat is one write of 12 bytes, made under the
// connection's write turn taken only if free (TryLock: when yamux writes,
// there is traffic already), and one read at the peer. At 100 nodes in
// one process, 9,900 link sides beat twice a second.
//
// It replaces yamux's keepalive, which closes the session as soon as one
// ping goes unanswered for WriteTimeout, however busy the link: on a
// loaded machine a ping queued behind data, or a pong behind a starved
// goroutine, then brings down a link that carries traffic all the while,
// and every link dropped that way is work that loads the machine more. It
// also runs on a timer instead of a goroutine per link.
//
// Bytes the kernel has received but the session has not read yet count as
// traffic too: a process too busy to read is not a sign of a silent peer.
//
// It also closes a link whose connection takes nothing more: a write to
// it (sessionConn) blocked for (1 + lag.MaxStretch) × WriteTimeout, plus
// the lag below, means a peer that stopped reading or a network that
// stopped carrying, whether or not the peer still sends. While the
// connection still carries, slowly (the kernel resends what the network
// lost, or the peer acknowledged data within that bound), and the peer is
// heard, the write may block lossPatience times as long: a lossy network,
// not a dead one (a frame waiting for its turn meanwhile gets yamux's
// ConnectionWriteTimeout, as long). The connection is a thin stream
// (thinStream), so a beat the network drops is resent at a steady pace.
// On a machine running late a peer slow to read is mostly lateness (in
// one process of a hundred nodes, writes to a starved peer blocked for
// WriteTimeout by hundreds): the silent peer, the one that is gone, is
// found by its silence.
//
// A silent peer is not declared dead on this link's word alone when
// others can be asked: once it has been silent for KeepAliveInterval +
// WriteTimeout/2, onSilent (Config.OnSilent) is told, and again halfway
// from there to the bound if nobody vouched by then (on a lossy network a
// question or its answer may be lost, and resent too late), and the mesh
// asks other peers whether they hear it. One that does vouches for it
// (Vouch, which counts as hearing from it): a lossy link whose TCP backs
// off its retransmissions is then not a dead peer. Nobody vouching, the link
// closes at the bound below, with ErrSilent as its reason (Link.Err).
//
// The bound on a silent peer stays what the Config documents: a live
// peer beats every KeepAliveInterval while it has nothing else to write,
// so it is heard within that interval plus the network's delay, and a
// dead one is declared so KeepAliveInterval + WriteTimeout after the last
// thing it sent. On a machine too busy to run things when they fall due, the
// lateness this process sees (internal/lag, at most maxLagLimits × the limit)
// is added: its own pings and reads, and a peer on the same machine, are
// that late too.
type liveness struct {
	sess     *yamux.Session
	conn     net.Conn // under the session, for pendingBytes
	log      *slog.Logger
	interval time.Duration // this side beats after writing nothing for this long
	limit    time.Duration // silence after which the peer is dead
	suspect  time.Duration // silence after which onSilent is told
	// relaxed: the link beats every relax instead, and its peer is silent
	// after 3 × relax (Link.SetRelaxed).
	relaxed atomic.Bool
	relax   time.Duration
	beats   atomic.Int64 // beats written (for tests)

	// onSilent, when set, is told once per silence when the peer has
	// been silent for suspect: the caller may ask others whether they
	// hear the peer, and vouch for it (touch) before the limit. It runs
	// on the check's goroutine and must not block.
	onSilent  func()
	suspected atomic.Int64 // the time heard that onSilent was told about
	rounds    atomic.Int32 // how often it was told about it (at most 2)
	why       atomic.Value // error: why the check closed the session

	// Of the connection under the session (sessionConn): when the write
	// under way started (0: none), when the last one ended, and the beat.
	writing, wrote *atomic.Int64
	beat           func() error
	writeLimit     time.Duration // how long a write may block
	// sending tells what the kernel says of the connection's sending
	// (sendState). While a write is under way the check samples it
	// (carrying): sampled is the write's start, acked the bytes the peer
	// had acknowledged at the last sample, progressed when that last grew.
	// The tick alone uses them. lossy counts the checks that let a
	// blocked write go on past writeLimit.
	sending    func() (acked uint64, resending, ok bool)
	sampled    int64
	acked      uint64
	progressed time.Duration
	lossy      atomic.Int64

	each func() // runs at every check (the link's streams' shrink)

	last    atomic.Int64 // monotonic time of the last read, see now
	vouched atomic.Int64 // monotonic time of the last vouch (Link.Vouch)

	mu      sync.Mutex
	timer   *time.Timer
	due     time.Duration // when timer fires, on now's clock
	stopped bool
}

// maxLagLimits bounds what the lag adds to the silence allowed, in
// multiples of it: a dead peer is still found on a machine that is behind
// by seconds.
const maxLagLimits = 3

// now is the time on the lag gauge's clock.
func now() time.Duration { return lag.Now() }

func newLiveness(cfg Config, conn net.Conn, log *slog.Logger) *liveness {
	lv := &liveness{conn: conn, log: log, interval: cfg.KeepAliveInterval, limit: cfg.KeepAliveInterval + cfg.WriteTimeout,
		suspect: cfg.KeepAliveInterval + cfg.WriteTimeout/2, relax: cfg.RelaxedInterval, writeLimit: cfg.writeLimit()}
	sending := sendStateOf
	lv.sending = func() (uint64, bool, bool) { return sending(conn) }
	lv.touch()
	return lv
}

// sendStateOf is how a new link's check asks the kernel about its
// connection's sending; a test may stand in for a lossy network.
var sendStateOf = sendState

// carrying samples the connection while a write that started at w is
// under way, and reports whether it still carries, slowly: the kernel is
// resending what the network lost, or the peer acknowledged more data
// within the last writeLimit. A peer that stopped reading (a zero window)
// acknowledges nothing and is not resent to; nor is a connection the
// kernel cannot tell of. It runs on the tick.
func (lv *liveness) carrying(w int64, at, writeLimit time.Duration) bool {
	acked, resending, ok := lv.sending()
	if !ok {
		return false
	}
	switch {
	case w != lv.sampled:
		// A new write: what was acknowledged before it started is not
		// progress of its own.
		lv.sampled, lv.acked, lv.progressed = w, acked, time.Duration(w)
	case acked > lv.acked:
		lv.acked, lv.progressed = acked, at
	}
	return resending || at-lv.progressed < writeLimit
}

// params are the beat interval, the silence limit and the silence at
// which onSilent is told, of the link's mode (see Link.SetRelaxed).
func (lv *liveness) params() (interval, limit, suspect time.Duration) {
	if lv.relaxed.Load() {
		return lv.relax, 3 * lv.relax, 2 * lv.relax
	}
	return lv.interval, lv.limit, lv.suspect
}

// setRelaxed switches the link's mode. Into the strict mode, the peer
// (which may have beaten at the relaxed interval until now) is given one
// strict limit from now, and the check runs within the strict interval.
func (lv *liveness) setRelaxed(on bool) {
	if lv.relaxed.Swap(on) == on || on {
		return
	}
	lv.vouched.Store(int64(now()))
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.timer != nil && !lv.stopped {
		lv.due = now() + lv.interval
		lv.timer.Reset(lv.interval)
	}
}

// touch records traffic from the peer. The session's receive loop calls it
// for every read.
func (lv *liveness) touch() { lv.last.Store(int64(now())) }

// start watches sess from now on.
func (lv *liveness) start(sess *yamux.Session) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.sess = sess
	lv.touch()
	if !lv.stopped {
		lv.due = now() + lv.interval
		lv.timer = time.AfterFunc(lv.interval, lv.tick)
	}
}

// stop ends the watch.
func (lv *liveness) stop() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.stopped = true
	if lv.timer != nil {
		lv.timer.Stop()
	}
}

func (lv *liveness) tick() {
	if lv.sess.IsClosed() {
		return
	}
	if lv.each != nil {
		lv.each()
	}
	at := now()
	lv.mu.Lock()
	due := lv.due
	lv.mu.Unlock()
	lag.Process.Observe(due, at)
	interval, base, suspectAt := lv.params()
	lagged := min(lag.Process.Get(at), maxLagLimits*base)
	limit := base + lagged
	heard := max(lv.last.Load(), lv.vouched.Load())
	silence := at - time.Duration(heard)
	if silence >= limit && pendingBytes(lv.conn) > 0 {
		// The peer did send; this process has not read it yet (it is
		// busy). Not a silent peer.
		lv.touch()
		silence = 0
	}
	if silence >= limit {
		lv.log.Debug("keepalive: peer silent; closing the link", "silence", silence.Round(time.Millisecond), "lag", lagged.Round(time.Millisecond))
		lv.why.CompareAndSwap(nil, ErrSilent)
		lv.sess.Close()
		return
	}
	suspect := suspectAt + lagged
	again := suspect + (limit-suspect)/2 // onSilent's second round
	if silence >= suspect && lv.onSilent != nil {
		if lv.suspected.Swap(heard) != heard {
			lv.rounds.Store(0)
		}
		if r := lv.rounds.Load(); r == 0 || r == 1 && silence >= again {
			lv.rounds.Store(r + 1)
			lv.onSilent()
		}
	}
	writeLimit, blocked, carrying := lv.writeLimit+lagged, time.Duration(0), false
	if lv.writing != nil {
		if w := lv.writing.Load(); w != 0 {
			blocked = max(at-time.Duration(w), 0)
			carrying = lv.carrying(w, at, writeLimit)
		}
	}
	lossy := false // the write waits on a lossy network, the peer heard
	if blocked >= writeLimit {
		if blocked < lossPatience*writeLimit && silence < limit && carrying {
			lossy = true
			lv.lossy.Add(1)
		} else {
			lv.log.Debug("link write blocked; closing the link", "blocked", blocked.Round(time.Millisecond), "lag", lagged.Round(time.Millisecond))
			lv.why.CompareAndSwap(nil, ErrWriteBlocked)
			lv.sess.Close()
			return
		}
	}
	// Beat once this side has written nothing for the interval; wake
	// when it will have, or when the peer will have been silent for the
	// limit, or a write blocked for its own.
	quiet := at - time.Duration(lv.wrote.Load())
	beat := quiet >= interval-time.Millisecond
	next := min(interval-quiet, limit-silence)
	if beat {
		next = min(interval, limit-silence)
	}
	switch {
	case lv.onSilent == nil:
	case silence < suspect:
		next = min(next, suspect-silence)
	case silence < again:
		next = min(next, again-silence)
	}
	switch {
	case lossy:
		next = min(next, lv.interval) // look again soon
	case blocked > 0:
		// Sample the connection's progress at the strict interval at
		// least, until the bound.
		next = min(next, lv.interval, writeLimit-blocked)
	}
	next = max(next, time.Millisecond)
	lv.mu.Lock()
	if lv.stopped {
		lv.mu.Unlock()
		return
	}
	lv.due = at + next
	lv.timer.Reset(next)
	lv.mu.Unlock()
	if beat {
		// A beat that fails or blocks is the connection's failure: the
		// session finds it, or the check above does.
		lv.beats.Add(1)
		lv.beat()
	}
}
