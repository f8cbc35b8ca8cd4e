package mesh

import (
	"context"
	"errors"
	"fmt"

	"github.com/tallship-go/tallship/internal/wire"
)

// Message is a message received from a peer.
type Message struct {
	// From is the sender's id.
	From string
	// Data is the message; it belongs to the receiver.
	Data []byte
}

// Send queues msg for the peer with id to: a linked peer, or a member of
// another site (Remotes), which it reaches over NATS. It returns once the
// message is queued (waiting for room when the peer's queue, with what it
// has not yet acknowledged, holds Config.SendQueueBytes), not when it has
// arrived. Messages to one peer arrive once, in the order they were
// sent, across any links lost and made again while the peer lives, and
// over NATS across lost messages and connections lost and made again
// while the member lives; when the peer goes down first, its PeerDown
// event (RemoteDown for a member of another site) counts the messages it
// did not acknowledge (Event.Undelivered). Members of this node's own
// site are reached over their links only (the LAN is the fast path);
// NATS carries only what crosses sites. It returns an error wrapping
// ErrUnknownPeer, naming the id, when the node knows no such peer (never
// linked nor heard over NATS, or down); ErrTooLarge for a message over
// Config.MaxMessageSize; ctx's error when ctx ends first. msg may be
// reused once Send returns.
//
// A Send that finds a linked peer idle (nothing queued, the last message
// out more than a few microseconds ago) writes the message itself rather
// than hand it to the peer's writer goroutine, when the link's window has
// room for it: a request or an answer then goes out sooner. It never waits
// for the peer to read.
func (n *Node) Send(ctx context.Context, to string, msg []byte) error {
	return n.SendMany(ctx, []string{to}, msg)
}

// SendMany queues msg for each peer in to, linked or of another site.
// The message is framed once and the same bytes are queued for every
// peer; those of one other site are published once on NATS for all of
// them when the message is at the head of their queues, as it is unless
// one is behind (see docs/sites.md). Peers that are known get the message even
// when others are not; the error then names every unknown id.
func (n *Node) SendMany(ctx context.Context, to []string, msg []byte) error {
	frame, err := n.frame(msg)
	if err != nil {
		return err
	}
	ps := make([]*peer, 0, len(to))
	var others []string
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return errClosed
	}
	for _, id := range to {
		if p := n.peers[id]; p != nil {
			ps = append(ps, p)
		} else {
			others = append(others, id)
		}
	}
	rs := n.remotes
	n.mu.Unlock()
	var members []*remote
	if len(others) > 0 && rs != nil {
		members, others = rs.lookup(others)
	}
	var unknown []error
	for _, id := range others {
		unknown = append(unknown, unknownPeer(id))
	}
	gone, err := n.enqueue(ctx, ps, members, frame)
	if err != nil {
		return err
	}
	return errors.Join(append(unknown, gone...)...)
}

// ErrNoPeers: Broadcast found no peer to queue the message for.
var ErrNoPeers = errors.New("mesh: no peers to send to")

// Broadcast queues msg for every peer and every member of another site
// (Remotes), framed once, with Send's delivery to each: for the members
// of another site it is published once on NATS for all of them, those
// that are behind (their queues hold older messages) aside. A slow peer does not hold back the others: each has its own
// queue. A nil error means at least one peer has the message queued;
// peers that go down meanwhile are skipped. With no peer to queue it for
// (none linked or heard yet, or every one gone) it returns ErrNoPeers
// and the message goes nowhere: a program that must reach the others
// calls WaitPeers first, one that may be alone (a chat) treats
// ErrNoPeers as "nobody heard it". It returns ErrTooLarge for a message
// over Config.MaxMessageSize, ctx's error when ctx ends first, and an
// error wrapping net.ErrClosed on a closed node. msg may be reused once
// Broadcast returns.
func (n *Node) Broadcast(ctx context.Context, msg []byte) error {
	frame, err := n.frame(msg)
	if err != nil {
		return err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return errClosed
	}
	ps := make([]*peer, 0, len(n.peers))
	for _, p := range n.peers {
		if !p.observer {
			ps = append(ps, p)
		}
	}
	var members []*remote
	if n.remotes != nil {
		members = n.remotes.members(func(id string) bool { return n.peers[id] != nil })
	}
	n.mu.Unlock()
	gone, err := n.enqueue(ctx, ps, members, frame)
	if err != nil {
		return err
	}
	if len(gone) == len(ps)+len(members) {
		return ErrNoPeers
	}
	return nil
}

func (n *Node) frame(msg []byte) ([]byte, error) {
	if len(msg) > n.cfg.MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(msg), n.cfg.MaxMessageSize)
	}
	return wire.Frame(wire.Message, msg), nil
}

// enqueue queues frame for each linked peer ps and member of another
// site members. A peer that went down meanwhile is skipped and reported
// in gone.
func (n *Node) enqueue(ctx context.Context, ps []*peer, members []*remote, frame []byte) (gone []error, err error) {
	for _, p := range ps {
		if err := p.enqueue(ctx, frame, n.cfg.SendQueueBytes, len(ps) == 1 && len(members) == 0); err != nil {
			if !errors.Is(err, ErrUnknownPeer) {
				return gone, err
			}
			gone = append(gone, err)
			continue
		}
		n.stats.sent(frame)
	}
	if len(members) == 0 {
		return gone, nil
	}
	more, err := members[0].set.enqueue(ctx, members, frame)
	return append(gone, more...), err
}

// Receive returns the next message from any peer, linked or of another
// site (Message.From names it), waiting for one. It
// returns ctx's error when ctx ends first, and an error wrapping
// net.ErrClosed once the node has closed.
func (n *Node) Receive(ctx context.Context) (Message, error) {
	select {
	case m := <-n.recv:
		return m, nil
	case <-ctx.Done():
		return Message{}, ctx.Err()
	case <-n.closing:
		select {
		case m := <-n.recv:
			return m, nil
		default:
			return Message{}, errClosed
		}
	}
}
