package mesh

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/tallship-go/tallship/transport"
)

const maxProtocol = 200

// OpenStream opens a stream to the peer with id, for the peer's listener
// of protocol. The stream is a net.Conn whose RemoteAddr names the peer.
// Its Close ends reads and writes here at once, as a net.Conn's does; the
// peer still reads everything written before it, then io.EOF. For a
// half-close, the stream has CloseWrite, as a *net.TCPConn has: reads go
// on until the peer closes its side too.
// It returns an error wrapping ErrRemotePeer, naming the id and its
// site, for a member of another site (Remotes: streams are LAN-only),
// ErrUnknownPeer when no link to the peer is up, ErrBadProtocol for an
// empty or over-long protocol name.
func (n *Node) OpenStream(ctx context.Context, id, protocol string) (net.Conn, error) {
	if err := checkProtocol(protocol); err != nil {
		return nil, err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errClosed
	}
	p := n.peers[id]
	var l *link
	if p != nil {
		l = p.active
	}
	rs := n.remotes
	n.mu.Unlock()
	if l == nil && p == nil && rs != nil {
		if site, ok := rs.siteOf(id); ok {
			return nil, fmt.Errorf("%w: %q is of site %q, reached over NATS", ErrRemotePeer, id, site)
		}
	}
	if l == nil {
		return nil, unknownPeer(id)
	}
	s, err := l.tl.OpenStream(ctx, userPrefix+protocol)
	if err != nil {
		return nil, fmt.Errorf("mesh: open stream to %q: %w", id, err)
	}
	return s, nil
}

func checkProtocol(p string) error {
	if p == "" || len(p) > maxProtocol {
		return fmt.Errorf("%w: %q (1 to %d bytes)", ErrBadProtocol, p, maxProtocol)
	}
	return nil
}

// Listen returns a listener for the streams peers open with protocol. Its
// Accept yields them, so http.Serve works over the mesh; its Addr names
// this node. Close it to stop accepting; streams of a protocol nobody
// listens to are refused. It returns ErrProtocolInUse when the protocol
// already has a listener.
func (n *Node) Listen(protocol string) (net.Listener, error) {
	if err := checkProtocol(protocol); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errClosed
	}
	if _, ok := n.listeners[protocol]; ok {
		return nil, fmt.Errorf("%w: %q", ErrProtocolInUse, protocol)
	}
	l := &listener{n: n, protocol: protocol, ch: make(chan net.Conn, 64), done: make(chan struct{})}
	n.listeners[protocol] = l
	return l, nil
}

// deliverStream hands a peer's stream to the listener of its protocol, or
// refuses it.
func (n *Node) deliverStream(protocol string, s *transport.Stream) {
	n.mu.Lock()
	l := n.listeners[protocol]
	n.mu.Unlock()
	if l == nil {
		n.log.Debug("stream for a protocol nobody listens to", "peer", s.Link().Peer(), "protocol", protocol)
		s.Close()
		return
	}
	select {
	case l.ch <- s:
	case <-l.done:
		s.Close()
	default:
		n.log.Warn("stream backlog full; refusing stream", "peer", s.Link().Peer(), "protocol", protocol)
		s.Close()
	}
}

type listener struct {
	n        *Node
	protocol string
	ch       chan net.Conn
	done     chan struct{}
	once     sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("mesh: listener %q: %w", l.protocol, net.ErrClosed)
	}
}

func (l *listener) Close() error {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	l.closeLocked()
	return nil
}

// closeLocked closes the listener; Node.mu is held.
func (l *listener) closeLocked() {
	l.once.Do(func() {
		close(l.done)
		if l.n.listeners[l.protocol] == l {
			delete(l.n.listeners, l.protocol)
		}
		for {
			select {
			case c := <-l.ch:
				c.Close()
			default:
				return
			}
		}
	})
}

func (l *listener) Addr() net.Addr { return transport.PeerAddr{ID: l.n.id} }
