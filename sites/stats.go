package sites

import "time"

// Stats are a Bus's figures, for monitoring (Bus.Stats): counters, which
// only grow while the Bus lives, and the state of its connection now.
type Stats struct {
	// Connected reports whether the bus has a connection to NATS now.
	Connected bool
	// URL is the server connected to, its credentials hidden (see
	// ConnectedURL); "" while not connected.
	URL string
	// Reconnects counts the connections made again (nats.go's count):
	// after one was lost, to the same server or another, and after a
	// first try that failed.
	Reconnects uint64
	// MessagesSent and BytesSent count what the bus published, and
	// MessagesReceived and BytesReceived what NATS delivered to it (its
	// own site's messages included): nats.go's counts of payloads, as
	// sealed, without NATS's own protocol.
	MessagesSent, BytesSent         uint64
	MessagesReceived, BytesReceived uint64
	// Dropped counts the messages NATS delivered that were dropped
	// unread: what waited to be read (the registry's, or the mesh's
	// messages between sites) was at its bound.
	Dropped uint64
	// Outages counts the times NATS went out of reach (a connection
	// lost, no server answering, credentials refused): once per outage,
	// as OnChange is first told of it. Down is how long the bus has been
	// without NATS in all, the current outage included.
	Outages uint64
	Down    time.Duration
}

// Stats returns the bus's figures now. It is cheap: it takes no round
// trip to the server.
func (b *Bus) Stats() Stats {
	now := time.Now()
	b.mu.Lock()
	nc := b.nc
	s := Stats{Connected: b.cur != nil, Outages: b.outages.count, Down: b.outages.total(now)}
	b.mu.Unlock()
	s.URL = b.ConnectedURL()
	if nc != nil {
		ns := nc.Stats()
		s.Reconnects = ns.Reconnects
		s.MessagesSent, s.BytesSent = ns.OutMsgs, ns.OutBytes
		s.MessagesReceived, s.BytesReceived = ns.InMsgs, ns.InBytes
	}
	s.Dropped = b.in.droppedCount() + b.msgs.droppedCount()
	return s
}

// outages are the outages of a Bus so far. Bus.mu guards them.
type outages struct {
	count uint64
	since time.Time     // when the current one began; zero while connected
	past  time.Duration // the time of those over
}

// begin notes that NATS is out of reach from now: a new outage unless
// one goes on.
func (o *outages) begin(now time.Time) {
	if o.since.IsZero() {
		o.count++
		o.since = now
	}
}

// end notes that NATS is back.
func (o *outages) end(now time.Time) {
	if !o.since.IsZero() {
		o.past += now.Sub(o.since)
		o.since = time.Time{}
	}
}

// total is the time of all outages, the current one's so far included.
func (o *outages) total(now time.Time) time.Duration {
	if o.since.IsZero() {
		return o.past
	}
	return o.past + now.Sub(o.since)
}
