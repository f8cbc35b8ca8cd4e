package mesh

import (
	"context"
	"net"

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
	cfg := n.cfg.Registry
	cfg.ID = n.id
	if cfg.Host == "" && len(n.addrs) > 0 {
		cfg.Host = n.addrs[0].Addr().String()
	}
	if cfg.Logger == nil {
		cfg.Logger = n.cfg.Logger
	}
	user := cfg.OnEvent
	cfg.OnEvent = func(e registry.Event) {
		if user != nil {
			user(e)
		}
		n.registryEvent(e)
	}
	r, err := registry.New(cfg)
	if err != nil {
		return err
	}
	n.reg = r
	return nil
}

// registryEvent turns a registry event into a node event.
func (n *Node) registryEvent(e registry.Event) {
	ev := Event{Peer: e.Peer}
	switch e.Kind {
	case registry.Registered:
		ev.Kind = ServiceRegistered
	case registry.Updated:
		ev.Kind = ServiceUpdated
	case registry.Freed:
		ev.Kind = ServiceFreed
	case registry.Synced:
		ev.Kind = PeerSynced
	default:
		return
	}
	if e.Kind != registry.Synced {
		rec := e.Record
		ev.Service = &rec
		ev.Peer = rec.Owner
	}
	n.events.publish(ev)
}

// serveRegistry runs the registry's replication over one stream of a link.
// It ends when the link does or the registry closes; not when the node
// starts closing, so that the registry's goodbye still goes out.
func (n *Node) serveRegistry(l *link, s *transport.Stream) {
	defer n.wg.Done()
	if err := n.reg.ServeAttached(context.Background(), l.peer, s, l.expected); err != nil && n.ctx.Err() == nil {
		n.log.Debug("registry stream ended", "peer", l.peer, "err", err)
	}
}

// openRegistry opens the registry stream of a link this node dialed.
func (n *Node) openRegistry(l *link) {
	defer n.wg.Done()
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.HandshakeTimeout)
	s, err := l.tl.OpenStream(ctx, protoRegistry)
	cancel()
	if err != nil {
		n.log.Debug("cannot open registry stream", "peer", l.peer, "err", err)
		return
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

// Watch delivers the matching records now registered, then every change,
// each once and in order, until ctx ends.
func (n *Node) Watch(ctx context.Context, query string) (<-chan ServiceEvent, error) {
	r, err := n.registry()
	if err != nil {
		return nil, err
	}
	return r.Watch(ctx, query)
}

// ListenService listens on a free TCP port and registers role (name@version)
// with it; closing the listener frees the record.
func (n *Node) ListenService(ctx context.Context, role string, opts ...registry.ListenOption) (*ServiceListener, error) {
	r, err := n.registry()
	if err != nil {
		return nil, err
	}
	return r.Listen(ctx, role, opts...)
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

// Registry returns the node's registry, nil before Start.
func (n *Node) Registry() *registry.Registry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reg
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
