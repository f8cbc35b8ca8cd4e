package discovery

import "sync/atomic"

// packetCounts counts an MDNS's packets over all its Runs.
type packetCounts struct {
	sent     atomic.Uint64
	received atomic.Uint64
}

// Packets returns how many mDNS packets m has sent and received, over all
// its Runs so far: every query, answer, announcement, probe and goodbye
// sent, and every packet read from its sockets (its own multicast looped
// back included, and packets it then ignored). It is safe to call while
// Run runs.
func (m *MDNS) Packets() (sent, received uint64) {
	return m.packets.sent.Load(), m.packets.received.Load()
}
