package registry

import (
	"context"
	"fmt"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// Registered: a record became visible on this node (registered, or its
	// owner became reachable again).
	Registered EventKind = iota + 1
	// Updated: a visible record's metadata changed.
	Updated
	// Freed: a record stopped being visible on this node (freed by its
	// owner, its owner left, became unreachable or stopped renewing).
	Freed
	// Synced: the initial sync from Event.Peer has been applied. Only
	// Config.OnEvent receives it.
	Synced
	// Overflowed: the Watch channel's consumer fell Config.WatchBuffer
	// events behind; this is the channel's last event before it is closed.
	Overflowed
	// IDConflict: another node on the bus (ServeBus), of Event.Site, has
	// this node's id (Event.Peer); the two see nothing of each other
	// there. Once per registry; only Config.OnEvent receives it.
	IDConflict
	// RemoteUp: a node of another site (Event.Peer, of Event.Site, its
	// run Event.Inc) is a member here: its Beats come over the bus
	// (ServeBus), its records show, and this node does not reach it over
	// its links. Event.Observer says it only observes. Only
	// Config.OnEvent receives it.
	RemoteUp
	// RemoteDown: that node (Event.Peer, run Event.Inc) is a member here
	// no longer: it left (Event.Err nil), or it sent no new Beat for its
	// lifetime, or it restarted (the RemoteUp of its new run follows), or
	// this node reaches it over its links now (Event.Err says which; a
	// change of the links is noticed within a Heartbeat). Only
	// Config.OnEvent receives it.
	RemoteDown
)

func (k EventKind) String() string {
	switch k {
	case Registered:
		return "registered"
	case Updated:
		return "updated"
	case Freed:
		return "freed"
	case Synced:
		return "synced"
	case Overflowed:
		return "overflowed"
	case IDConflict:
		return "id-conflict"
	case RemoteUp:
		return "remote-up"
	case RemoteDown:
		return "remote-down"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a change as this node sees it.
type Event struct {
	Kind EventKind
	// Record is the record registered, updated or freed (for Freed, its
	// last known content). The receiver owns it.
	Record Record
	// Peer is the peer whose initial sync completed (Synced), or the id
	// in conflict (IDConflict).
	Peer string
	// Site is the site the node of this node's id was heard in
	// (IDConflict), or the remote node's (RemoteUp, RemoteDown).
	Site string
	// Inc is the remote node's run (RemoteUp, RemoteDown).
	Inc uint64
	// Observer says the remote node only observes (RemoteUp, RemoteDown).
	Observer bool
	// Err says why a remote node is a member no longer (RemoteDown): nil
	// when it left.
	Err error
	// Time is when this node applied the change (for the Registered
	// events a Watch starts with, when Watch was called): a consumer that
	// reads events late, or beside others, can still order and time them.
	Time time.Time
}

// watcher is one Watch call. Its channel is small (watchChan): the
// events it has no room for wait in backlog, in order, and a goroutine
// (pump) hands them on while there are any. A channel as large as
// Config.WatchBuffer, made at once, held about 200 KB per Watch for as
// long as it lived, used or not: in an idle 100-node mesh with one Watch
// a node, 2 KiB of every link side's heap.
type watcher struct {
	q       Query
	ctx     context.Context
	ch      chan Event
	limit   int         // events pending at which the watcher overflows
	backlog []Event     // what ch had no room for, in order
	pumping bool        // a pump runs for the backlog
	ended   bool        // the watch ended while a pump ran: it closes ch
	stop    func() bool // stops the context.AfterFunc
	closed  bool
}

// watchChan is the room of a Watch channel; the events beyond it wait in
// the watcher's backlog.
const watchChan = 16

// Watch returns a channel that first receives a Registered event for every
// record matching query at the time of the call, then every Registered,
// Updated and Freed event of matching records, each once and in the order
// this node applies them. The channel is closed when ctx ends or the
// registry closes; events not yet received then are dropped.
//
// Delivery never blocks the registry: Config.WatchBuffer events are
// held beyond the initial ones; a consumer that falls that far behind
// receives a final Overflowed event and the channel is closed (call Watch
// again to resume; the new channel starts with the current records).
//
// Errors: ErrBadQuery, ErrClosed.
func (r *Registry) Watch(ctx context.Context, query string) (<-chan Event, error) {
	q, err := ParseQuery(query)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	current := r.match(&q)
	w := &watcher{q: q, ctx: ctx, ch: make(chan Event, watchChan), limit: len(current) + r.cfg.WatchBuffer}
	now := time.Now()
	for _, rec := range current {
		r.deliver(w, Event{Kind: Registered, Record: rec, Time: now})
	}
	r.watchers[w] = struct{}{}
	r.wg.Add(1)
	w.stop = context.AfterFunc(ctx, func() {
		defer r.wg.Done()
		r.mu.Lock()
		r.closeWatcher(w)
		r.mu.Unlock()
	})
	return w.ch, nil
}

// deliver puts e on w's channel, or in its backlog behind the events
// waiting there, starting a pump. r.mu is held.
func (r *Registry) deliver(w *watcher, e Event) {
	if len(w.backlog) == 0 && len(w.ch) < cap(w.ch) {
		w.ch <- e
		return
	}
	w.backlog = append(w.backlog, e)
	if !w.pumping {
		w.pumping = true
		r.wg.Add(1)
		go r.pump(w)
	}
}

// pump hands w's backlog on to its channel, in order, until none is
// left; it drops the rest when w's context ends or the registry closes.
// It closes the channel when the watch ended meanwhile.
func (r *Registry) pump(w *watcher) {
	defer r.wg.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(w.backlog) > 0 {
		e := w.backlog[0]
		r.mu.Unlock()
		sent := false
		select {
		case w.ch <- e:
			sent = true
		case <-w.ctx.Done():
		case <-r.done:
		}
		r.mu.Lock()
		if !sent {
			break
		}
		w.backlog[0] = Event{}
		w.backlog = w.backlog[1:]
	}
	w.backlog, w.pumping = nil, false
	if w.ended {
		close(w.ch)
	}
}

// closeWatcher ends w once: its channel closes, after the backlog when a
// pump runs (see pump). r.mu is held.
func (r *Registry) closeWatcher(w *watcher) {
	if w.closed {
		return
	}
	w.closed = true
	delete(r.watchers, w)
	if w.pumping {
		w.ended = true
		return
	}
	close(w.ch)
}

// emit reports a record event to the watchers, OnEvent and waiting
// Lookups. r.mu is held.
func (r *Registry) emit(kind EventKind, e *entry) {
	now := time.Now()
	for w := range r.watchers {
		if !w.q.matches(e) {
			continue
		}
		if len(w.ch)+len(w.backlog) >= w.limit-1 {
			r.deliver(w, Event{Kind: Overflowed, Time: now})
			if w.stop() {
				r.wg.Done()
			}
			r.closeWatcher(w)
			r.log.Warn("registry: watcher overflowed, channel closed", "query", w.q.String())
			continue
		}
		r.deliver(w, Event{Kind: kind, Record: e.record(), Time: now})
	}
	if r.cfg.OnEvent != nil {
		r.queueEvent(Event{Kind: kind, Record: e.record(), Time: now})
	}
	if r.changed != nil && kind != Freed {
		close(r.changed)
		r.changed = nil
	}
}

// queueEvent queues ev for Config.OnEvent.
func (r *Registry) queueEvent(ev Event) {
	if r.cfg.OnEvent == nil {
		return
	}
	r.evmu.Lock()
	r.events = append(r.events, ev)
	r.evmu.Unlock()
	select {
	case r.evwake <- struct{}{}:
	default:
	}
}

// dispatchLoop calls Config.OnEvent for each queued event, in order, until
// Close; it delivers what is queued before it stops.
func (r *Registry) dispatchLoop() {
	defer r.wg.Done()
	var batch []Event
	for {
		r.evmu.Lock()
		batch, r.events = r.events, batch[:0]
		r.evmu.Unlock()
		for i, ev := range batch {
			r.cfg.OnEvent(ev)
			batch[i] = Event{}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-r.evwake:
		case <-r.evstop:
			r.evmu.Lock()
			n := len(r.events)
			r.evmu.Unlock()
			if n == 0 {
				return
			}
		}
	}
}
