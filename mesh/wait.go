package mesh

import "context"

// WaitPeers waits until the node has at least count peers (as Peers
// counts them) and returns them, sorted by id. A node learns of its peers
// after Join returns (mDNS takes a moment, links a moment more), so a
// program that sends as soon as it has joined calls WaitPeers first:
//
//	node, err := mesh.Join("my-cluster")
//	peers, err := node.WaitPeers(ctx, 1) // another node is linked
//	err = node.Broadcast(ctx, []byte("hello"))
//
// It returns at once when the node has count peers already (always for
// a count of zero or less), and it may be called before Start: it then
// waits for the peers Start finds. It returns ctx's error when ctx ends
// first, and an error wrapping net.ErrClosed when the node is closed or
// closes first. The answer is a snapshot: a peer in it may go down as
// the caller reads it (Send to it then fails with ErrUnknownPeer).
func (n *Node) WaitPeers(ctx context.Context, count int) ([]Peer, error) {
	// Subscribe before looking, so that no peer comes up unseen between
	// the look and the subscription.
	sub, cancel := context.WithCancel(ctx)
	defer cancel()
	events := n.Events(sub)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n.mu.Lock()
		closed := n.closed
		n.mu.Unlock()
		if closed {
			return nil, errClosed
		}
		if peers := n.Peers(); len(peers) >= count {
			return peers, nil
		}
		// Any event may follow a change of peers: even when events were
		// dropped for a slow reader, the newest is delivered, and Peers
		// is read again after it.
		select {
		case _, ok := <-events:
			if !ok && ctx.Err() == nil {
				return nil, errClosed
			}
		case <-ctx.Done():
		case <-n.closing:
		}
	}
}
