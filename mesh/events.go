package mesh

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// PeerUp: a first link to a peer is up.
	PeerUp EventKind = iota + 1
	// PeerDown: a peer is gone: it said goodbye, or its last link was
	// lost and not made again within the silent-peer bound (a link that
	// breaks while the peer lives is made again silently, and nothing
	// Send accepted is lost), or it restarted (a new run of the same id
	// follows with PeerUp). Undelivered counts the messages it did not
	// acknowledge.
	PeerDown
	// DiscoveryError: a discoverer reported a transient error.
	DiscoveryError
	// PeerSynced: a peer's registry has been received after its link came up.
	PeerSynced
	// IDConflict: another live node of the cluster has this node's id:
	// peers refuse this node's links (Err wraps transport.ErrDuplicateID
	// and says which peer), or mDNS found a node that holds the id
	// (Err wraps discovery.ErrIDConflict and names its address; mDNS then
	// stops announcing this node), or a node of another site on NATS
	// publishes as it (Err names its site). Err always wraps
	// ErrIDConflict. The
	// node stays apart from them; a program usually exits with Err.
	IDConflict
	// LinkFailed: a link could not be made: a dial found no node at an
	// address (unreachable: connection refused, no route, no answer), a
	// handshake ran out of time, or one end refused the other (wrong
	// cluster secret or TLS, wrong cluster, wrong protocol version, a
	// second live node with a linked peer's id, the peer limit). Err
	// names the reason in a few words, then wraps the error (errors.Is
	// works with transport's sentinels, and syscall.ECONNREFUSED, …);
	// Addrs holds the address dialed, or the one a peer dialed from;
	// Peer is the peer's id when known. Both ends publish a refusal,
	// except when the peer refused this node because it holds another
	// live run of this node's id: that is IDConflict. A failure is
	// published once per change of its reason (a dial retried with
	// backoff for the same reason is one event); a dial to an address
	// fails anew once a link through it has been made.
	LinkFailed
	// NATSUp: the node is connected to NATS (Config.NATS), at Start or
	// again after NATSDown: the records of the other sites come now.
	NATSUp
	// NATSDown: NATS is out of reach (Err says why: the connection was
	// lost, no server answers, or a server refused this node's
	// credentials). The LAN goes on alone; the records of other sites
	// expire after their owners' Lifetime; the node connects again by
	// itself, and NATSUp follows. Published once per outage (and when
	// its reason changes from out of reach to refused, or back).
	NATSDown
	// RemoteUp: a member of another site (Peer, of Site) is heard over
	// NATS (Config.NATS): Send reaches it, and unless it only observes
	// (Observer) Remotes lists it and Broadcast reaches it.
	RemoteUp
	// RemoteDown: a member of another site is gone: it left (Err nil),
	// or NATS carried no Beat of it for its Lifetime (it died, or it or
	// this node lost NATS), or it restarted (RemoteUp of its new run
	// follows), or this node now reaches it over links (a PeerUp came).
	// Undelivered counts the messages Send accepted for it that it did
	// not acknowledge: they were dropped, and may or may not have
	// arrived.
	RemoteDown
)

func (k EventKind) String() string {
	switch k {
	case PeerUp:
		return "peer-up"
	case PeerDown:
		return "peer-down"
	case DiscoveryError:
		return "discovery-error"
	case PeerSynced:
		return "peer-synced"
	case IDConflict:
		return "id-conflict"
	case LinkFailed:
		return "link-failed"
	case NATSUp:
		return "nats-up"
	case NATSDown:
		return "nats-down"
	case RemoteUp:
		return "remote-up"
	case RemoteDown:
		return "remote-down"
	}
	return "unknown"
}

// Event is one thing that happened to a node.
type Event struct {
	Kind EventKind
	Time time.Time
	// Peer is the peer's id (PeerUp, PeerDown, PeerSynced, IDConflict,
	// RemoteUp, RemoteDown; LinkFailed when known).
	Peer string
	// Site is the site of a member of another site (RemoteUp,
	// RemoteDown).
	Site string
	// Addrs are the peer's advertised addresses (PeerUp), or the address
	// of a link that failed (LinkFailed).
	Addrs []netip.AddrPort
	// Err says why a peer went down, a link failed or NATS is out of
	// reach, or what a discoverer reported; nil when a peer left
	// gracefully.
	Err error
	// Undelivered (PeerDown, RemoteDown) is how many messages Send or
	// Broadcast accepted for the peer that it did not acknowledge: they
	// were dropped, and may or may not have arrived (an acknowledgement
	// lost with the link, or on NATS). Zero when everything arrived.
	Undelivered int
	// Observer (PeerUp, PeerDown, PeerSynced, RemoteUp, RemoteDown) says
	// the peer only observes (its Config.Observer: the CLI's ls, query
	// and ui): not a member.
	Observer bool
}

// hub fans events out to subscribers in order. Publishing never blocks:
// each subscriber has a queue of at most limit events, and a subscriber
// that falls further behind loses the oldest.
type hub struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	limit  int
	closed bool
	wg     *sync.WaitGroup
	// dropped counts the events subscribers lost (Stats.EventsDropped).
	dropped atomic.Uint64
}

type subscriber struct {
	mu    sync.Mutex
	queue []Event
	wake  chan struct{}
	done  chan struct{} // closed when the hub closes
}

func newHub(limit int, wg *sync.WaitGroup) *hub {
	return &hub{subs: make(map[*subscriber]struct{}), limit: limit, wg: wg}
}

func (h *hub) publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.mu.Lock()
		if len(s.queue) >= h.limit {
			s.queue = s.queue[1:]
			h.dropped.Add(1)
		}
		s.queue = append(s.queue, e)
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// subscribe returns a channel of the events published from now on, closed
// when ctx ends or the hub closes.
func (h *hub) subscribe(ctx context.Context) <-chan Event {
	out := make(chan Event)
	s := &subscriber{wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		close(out)
		return out
	}
	h.subs[s] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.wg.Done()
		defer close(out)
		defer func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
		}()
		for {
			s.mu.Lock()
			var e Event
			have := len(s.queue) > 0
			if have {
				e = s.queue[0]
				s.queue = s.queue[1:]
			}
			s.mu.Unlock()
			if !have {
				select {
				case <-s.wake:
					continue
				case <-ctx.Done():
					return
				case <-s.done:
					return
				}
			}
			select {
			case out <- e:
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
		}
	}()
	return out
}

// close ends every subscription.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for s := range h.subs {
		close(s.done)
	}
}
