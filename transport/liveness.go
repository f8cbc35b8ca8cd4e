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
// it for KeepAliveInterval + WriteTimeout, and makes sure an idle but live
// peer never stays silent that long: the dialer's side pings after an
// interval without traffic, and the answer is traffic for it as the ping
// is for the acceptor. The acceptor's side pings only once it has heard
// nothing for half-way between the interval and the limit: on an idle link
// the dialer's pings arrive first, so an idle link carries one ping and
// one answer per interval instead of two of each (at 100 nodes in one
// process, 9,900 link sides); when only the acceptor sends (the dialer
// hears traffic and never pings), its own pings keep the dialer audible.
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
// it (sessionConn) blocked for WriteTimeout, plus the lag below, means a
// peer that stopped reading or a network that stopped carrying, whether
// or not the peer still sends. That is found at the check after the
// write has blocked that long: the write's wait itself is what counts,
// not a frame's wait for its turn behind others, which on a busy machine
// is mostly this process's own lateness (yamux's ConnectionWriteTimeout,
// the backstop for that wait, is set longer: see Config.yamux).
//
// The bound on a silent peer stays what the Config documents: pings go
// out every KeepAliveInterval while the link is quiet, so a live peer
// answers within that interval plus its round trip, and a dead one is
// declared so KeepAliveInterval + WriteTimeout after the last thing it
// sent. On a machine too busy to run things when they fall due, the
// lateness this process sees (internal/lag, at most maxLagLimits × the limit)
// is added: its own pings and reads, and a peer on the same machine, are
// that late too.
type liveness struct {
	sess     *yamux.Session
	conn     net.Conn // under the session, for pendingBytes
	log      *slog.Logger
	interval time.Duration // the dialer pings after this long without traffic
	quiet    time.Duration // this side pings after this long without traffic
	limit    time.Duration // silence after which the peer is dead
	pings    atomic.Int64  // pings sent (for tests)

	writing    *atomic.Int64 // when the connection write under way started (sessionConn), 0: none
	writeLimit time.Duration // how long a write may block

	each func() // runs at every check (the link's streams' shrink)

	last    atomic.Int64 // monotonic time of the last read, see now
	pinging atomic.Bool  // a ping waits for its answer

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

func newLiveness(cfg Config, conn net.Conn, log *slog.Logger, dialer bool) *liveness {
	lv := &liveness{conn: conn, log: log, interval: cfg.KeepAliveInterval, limit: cfg.KeepAliveInterval + cfg.WriteTimeout, writeLimit: cfg.WriteTimeout}
	lv.quiet = lv.interval
	if !dialer {
		lv.quiet += cfg.WriteTimeout / 2
	}
	lv.touch()
	return lv
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
	limit := lv.limit + min(lag.Process.Get(at), maxLagLimits*lv.limit)
	silence := at - time.Duration(lv.last.Load())
	if silence >= limit && pendingBytes(lv.conn) > 0 {
		// The peer did send; this process has not read it yet (it is
		// busy). Not a silent peer.
		lv.touch()
		silence = 0
	}
	if silence >= limit {
		lv.log.Debug("keepalive: peer silent; closing the link", "silence", silence.Round(time.Millisecond), "lag", (limit - lv.limit).Round(time.Millisecond))
		lv.sess.Close()
		return
	}
	writeLimit, blocked := lv.writeLimit+(limit-lv.limit), time.Duration(0)
	if lv.writing != nil {
		if w := lv.writing.Load(); w != 0 {
			blocked = max(at-time.Duration(w), 0)
		}
	}
	if blocked >= writeLimit {
		lv.log.Debug("link write blocked; closing the link", "blocked", blocked.Round(time.Millisecond), "lag", (limit - lv.limit).Round(time.Millisecond))
		lv.sess.Close()
		return
	}
	// Wake when the link will have been quiet long enough to ping, or,
	// once it has, when it will have been silent for the limit.
	ping := silence >= lv.quiet-time.Millisecond
	next := lv.quiet - silence
	if ping {
		next = min(lv.interval, limit-silence)
	}
	if blocked > 0 {
		next = min(next, writeLimit-blocked)
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
	if ping && lv.pinging.CompareAndSwap(false, true) {
		// The answer, or anything else the peer sends, is what counts;
		// Ping's own verdict does not.
		lv.pings.Add(1)
		lv.sess.Ping()
		lv.pinging.Store(false)
	}
}
