package mesh

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/tallship-go/tallship/registry"
	"github.com/tallship-go/tallship/sites"
)

// DefaultSite is the site of a node that joins NATS (Config.NATS) and
// names none.
const DefaultSite = "default"

// NATSConfig joins a node to a NATS system as well as to its LAN mesh
// (Config.NATS), so that several LAN meshes of one cluster, its sites,
// share one registry: the records of every site show in Services,
// Lookup, Watch and DialService, with their site (Record.Site). The LAN
// stays the fast path: nodes of one site still talk over their links,
// and NATS carries only what crosses sites. See docs/sites.md.
type NATSConfig struct {
	// URLs are NATS servers of one system ("nats://host:4222",
	// "tls://host:4222"): a server, a cluster, a leaf node. Nil means
	// none: the node does not use NATS, and the other fields do nothing.
	URLs []string
	// CredsFile is a NATS credentials file (user JWT and NKey seed).
	// Empty means none.
	CredsFile string
	// User and Password, or Token, are NATS credentials. Empty means
	// none.
	User, Password string
	Token          string
	// TLS configures TLS to the NATS servers (roots, a client
	// certificate); it is not Config.TLS, which is the links'. Nil means
	// TLS only where a URL says tls:// or a server requires it, against
	// the system's roots.
	TLS *tls.Config
	// Secret, when set, keys the subjects and seals every payload on
	// NATS as Config.Secret does, for a cluster with TLS identities
	// (Config.TLS), which sign what crosses NATS but do not encrypt it:
	// without a secret any NATS user allowed on its subjects reads every
	// record. Every node of the cluster must give the same one. Empty
	// means Config.Secret (none with TLS identities).
	Secret string
}

// Site returns the node's site (Config.Site, or DefaultSite when it
// joins NATS without one): empty for a node that names none and does
// not join NATS.
func (n *Node) Site() string { return n.cfg.Site }

// Remotes returns the members of other sites that this node hears over
// NATS (Config.NATS), sorted by site and id: each marked Remote, with its
// Site; not those that only observe (Config.Observer). They are not
// peers (Peers does not list them, and OpenStream to one returns
// ErrRemotePeer: streams are LAN-only), but Send, SendMany and
// Broadcast reach them over NATS, with the same guarantees as over
// links (see Send). Their comings and goings are RemoteUp and RemoteDown
// events. Empty without NATS, or while it is out of reach (members of
// other sites then go after their Lifetime).
func (n *Node) Remotes() []Peer {
	if rs := n.remoteSet(); rs != nil {
		return rs.list()
	}
	return nil
}

// remoteSet returns the node's messaging with the members of other
// sites: nil without NATS.
func (n *Node) remoteSet() *remoteSet {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.remotes
}

// remoteEvent takes the registry's word that a member of another site
// came or went.
func (n *Node) remoteEvent(e registry.Event) {
	if rs := n.remoteSet(); rs != nil {
		rs.registryEvent(e)
	}
}

// drainRemotes waits, on Shutdown, until the members of other sites have
// acknowledged what Send queued for them, or ctx ends.
func (n *Node) drainRemotes(ctx context.Context) {
	if rs := n.remoteSet(); rs != nil {
		rs.drain(ctx)
	}
}

// closeSites closes the connection to NATS, which ends the goroutines of
// the registry and the messages across sites, and stops what is left.
func (n *Node) closeSites(b *sites.Bus) {
	b.Close()
	if rs := n.remoteSet(); rs != nil {
		rs.close()
	}
}

// peerSite returns the site of peer id: this node's, unless the peer is
// heard over NATS as of another site (sites linked by hand).
func (n *Node) peerSite(id string) string {
	if n.reg == nil || n.cfg.NATS.URLs == nil {
		return n.cfg.Site
	}
	return n.reg.SiteOf(id)
}

// NATSConnected reports whether the node has a connection to NATS now
// (false without Config.NATS).
func (n *Node) NATSConnected() bool {
	n.mu.Lock()
	b := n.bus
	n.mu.Unlock()
	return b != nil && b.Connected()
}

// dialSites connects to NATS when Config.NATS names servers (nil, nil
// when it does not). A server that cannot be reached is no error: the
// bus connects in the background.
func (n *Node) dialSites(ctx context.Context) (*sites.Bus, error) {
	c := n.cfg.NATS
	if len(c.URLs) == 0 {
		return nil, nil
	}
	b, err := sites.Dial(ctx, sites.Config{
		URLs:             c.URLs,
		CredsFile:        c.CredsFile,
		User:             c.User,
		Password:         c.Password,
		Token:            c.Token,
		TLS:              c.TLS,
		Cluster:          n.cluster,
		Secret:           cmp.Or(c.Secret, n.cfg.Secret),
		Site:             n.cfg.Site,
		Node:             n.id,
		ReconnectWait:    n.cfg.DialBackoff,
		ReconnectWaitMax: n.cfg.DialBackoffMax,
		PingInterval:     natsPings * n.cfg.KeepAliveInterval,
		OnChange: func(up bool, err error) {
			if up {
				n.events.publish(Event{Kind: NATSUp})
			} else {
				n.events.publish(Event{Kind: NATSDown, Err: err})
			}
		},
		Logger: n.log,
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	n.mu.Lock()
	n.remotes = newRemoteSet(n, b)
	n.mu.Unlock()
	return b, nil
}

// natsPings is how many keepalive intervals NATS's pings are apart: a
// NATS server is one connection for the whole site's traffic across
// sites, and its own clients' pings are what tell it a node has gone.
const natsPings = 4

// runSites runs the messages across sites, and the registry over each
// connection to NATS in turn, until the node closes. A run ends with its connection (NATS
// connects again by itself) or the registry; not when the node starts
// closing, so that the registry's leaving Beat still goes out.
func (n *Node) runSites(b *sites.Bus) {
	defer n.wg.Done()
	n.remoteSet().start(n.reg.Incarnation())
	for {
		s, err := b.Next(n.ctx)
		if err != nil {
			return
		}
		err = n.reg.ServeBus(context.Background(), s)
		switch {
		case errors.Is(err, registry.ErrClosed):
			return
		case errors.Is(err, registry.ErrConfig):
			// The servers' messages are too small for the records: no
			// other connection will do better.
			n.log.Error("NATS cannot carry this cluster's records; sites are not joined", "err", err)
			return
		case errors.Is(err, sites.ErrDisconnected), err == nil:
		default:
			n.log.Debug("registry across sites ended", "err", err)
		}
	}
}
