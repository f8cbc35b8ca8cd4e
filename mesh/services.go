package mesh

import (
	"context"
	"fmt"
	"net"

	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/transport"
)

// The registry's types, for callers that use only this package.
type (
	// Service describes a service instance to register.
	Service = registry.Service
	// Record is a registered service instance as every node sees it.
	Record = registry.Record
	// ServiceEvent is a change of a record, from Watch.
	ServiceEvent = registry.Event
	// ServiceListener is a listener on an assigned port whose service is
	// registered while it is open.
	ServiceListener = registry.Listener
)

const protoRegistry = "t/reg"

// startRegistry makes the node's registry; n.mu is held, addrs are known.
func (n *Node) startRegistryLocked() error {
	var host string
	if len(n.addrs) > 0 {
		host = n.addrs[0].Addr().String()
	}
	rc := n.cfg.registry(n.id, host, n.log, n.registryEvent)
	if n.cfg.TLS != nil {
		// Ids are proven: every owner signs what it says of itself, so
		// that no node can pass records off as another's through relays.
		id, err := newCertIdentity(n.cfg.TLS)
		if err != nil {
			return err
		}
		rc.Identity = id
	}
	r, err := registry.New(rc)
	if err != nil {
		return err
	}
	n.reg = r
	return nil
}

// registryEvent publishes a peer's initial registry sync, and a node of
// this node's id heard over NATS, and takes the comings and goings of
// the members of other sites; records are seen through Watch.
func (n *Node) registryEvent(e registry.Event) {
	if e.Kind == registry.RemoteUp || e.Kind == registry.RemoteDown {
		n.remoteEvent(e)
		return
	}
	if e.Kind == registry.IDConflict {
		n.events.publish(Event{Kind: IDConflict, Err: idConflict(fmt.Errorf("a node of site %q on NATS has this node's id %q", e.Site, e.Peer))})
		return
	}
	if e.Kind != registry.Synced {
		return
	}
	// Once per peer: a link made again (recover.go) syncs again, silently.
	n.mu.Lock()
	p := n.peers[e.Peer]
	first := p != nil && !p.synced
	observer := p != nil && p.observer
	if first {
		p.synced = true
	}
	n.mu.Unlock()
	if first {
		n.events.publish(Event{Kind: PeerSynced, Peer: e.Peer, Observer: observer})
	}
}

// serveRegistry runs the registry's replication over one stream of a link.
// It ends when the link does or the registry closes; not when the node
// starts closing, so that the registry's goodbye still goes out.
//
// A registry stream that fails while the link lives takes the link with
// it, whatever the reason: a peer that breaks the registry's protocol or
// limits or falls too far behind (the registry has logged why), a stream
// cut mid-frame or reset, a write to it that failed. A link without its
// registry stream would show the peer up with none of its changes from
// then on, and nobody would relay them: the peer's State still names
// this node, and the transport holds it in this node's adjacency. The
// mesh makes the link again, and the new one syncs. A stream the peer
// ended cleanly (Serve's nil) is its registry closing, or its end of a
// failure like these: its links follow.
func (n *Node) serveRegistry(l *link, s *transport.Stream) {
	defer n.wg.Done()
	err := n.reg.Serve(context.Background(), l.peer, s)
	if err == nil || n.ctx.Err() != nil {
		return
	}
	n.log.Debug("registry stream ended; closing the link", "peer", l.peer, "err", err)
	l.tl.Close()
}

// openRegistry opens the registry stream of a link this node dialed.
func (n *Node) openRegistry(l *link) {
	defer n.wg.Done()
	ctx, cancel := context.WithTimeout(n.ctx, lag.Stretch(n.cfg.HandshakeTimeout))
	s, err := l.tl.OpenStream(ctx, protoRegistry)
	cancel()
	if err != nil && n.ctx.Err() == nil {
		// Without it the peer would look linked with no records: the
		// link goes, and the peer is redialed as for any lost link.
		n.log.Debug("cannot open registry stream; closing the link", "peer", l.peer, "err", err)
		l.tl.Close()
		return
	}
	if err != nil {
		return // the node is closing
	}
	n.wg.Add(1)
	n.serveRegistry(l, s)
}

// Register registers a service owned by this node; its Host defaults to
// this node's first address. See registry.Registry.Register.
func (n *Node) Register(s Service) (Record, error) {
	r, err := n.registry()
	if err != nil {
		return Record{}, err
	}
	return r.Register(s)
}

// Update replaces the metadata of a record this node owns.
func (n *Node) Update(id string, meta map[string]string) (Record, error) {
	r, err := n.registry()
	if err != nil {
		return Record{}, err
	}
	return r.Update(id, meta)
}

// Free frees a record this node owns; a record of another node is refused
// with registry.ErrNotOwner and stays everywhere.
func (n *Node) Free(id string) error {
	r, err := n.registry()
	if err != nil {
		return err
	}
	return r.Free(id)
}

// Services returns the records matching query ("web", "web@^1.2", …) as
// this node sees them now.
func (n *Node) Services(query string) ([]Record, error) {
	r, err := n.registry()
	if err != nil {
		return nil, err
	}
	return r.Services(query)
}

// Lookup waits until at least one record matches query and returns the
// matches.
func (n *Node) Lookup(ctx context.Context, query string) ([]Record, error) {
	r, err := n.registry()
	if err != nil {
		return nil, err
	}
	return r.Lookup(ctx, query)
}

// Watch delivers the matching records now registered, then every change
// (Registered, Updated, Freed), each once and in order, until ctx ends or
// the node closes; a consumer that falls Config.WatchBuffer events behind
// gets a final Overflowed event and the channel closes. Watch is the one
// way to follow services; Events reports peers and the node's own life.
func (n *Node) Watch(ctx context.Context, query string) (<-chan ServiceEvent, error) {
	r, err := n.registry()
	if err != nil {
		return nil, err
	}
	return r.Watch(ctx, query)
}

// ListenService listens on addr (as for net.Listen; ":0" or empty: a free
// port on every address) and registers s with the port it got; closing the
// listener frees the record. s.Port must be zero; s.Host defaults to
// Config.ServiceHost, else the node's first address. See
// registry.Registry.Listen.
func (n *Node) ListenService(ctx context.Context, s Service, addr string) (*ServiceListener, error) {
	r, err := n.registry()
	if err != nil {
		return nil, err
	}
	return r.Listen(ctx, s, addr)
}

// DialService dials a live instance matching query, spreading the load,
// waiting for one to exist until ctx ends.
func (n *Node) DialService(ctx context.Context, query string) (net.Conn, error) {
	r, err := n.registry()
	if err != nil {
		return nil, err
	}
	return r.Dial(ctx, query)
}

func (n *Node) registry() (*registry.Registry, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return nil, errClosed
	case n.reg == nil:
		return nil, errNotRunning
	}
	return n.reg, nil
}
