package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"syscall"

	"github.com/tallship-go/tallship/transport"
)

// Failed links (LinkFailed). A link that this node could not make, or
// that it refused, is published with its reason, once per change of the
// reason: a dial retried with backoff against a peer with another
// secret is one event, not one per retry. The reason is remembered by
// address: for a dial, the address dialed, forgotten once a link through
// it is made; for a link a peer dialed, the peer's IP address (each of
// its dials comes from another port) and its id when its hello got as far
// as naming it, never forgotten (other nodes at that IP address may link
// meanwhile).

// failureMemory bounds how many addresses' last failures a node keeps;
// beyond it, it forgets them all and reports each failure once more.
const failureMemory = 1024

// maxIDsPerCaller bounds the ids whose failed links from one IP address
// are reported apart (several nodes behind one address); beyond them the
// address's failures are one, whatever id each claims.
const maxIDsPerCaller = 8

// linkFailed publishes LinkFailed for a link with ap that failed with err,
// and logs it (at Warn for a setting that differs between the two nodes,
// at Info for the rest), unless the reason is that last published for ap.
// dialed says this node dialed ap (answered: the address answered, and
// the handshake ran); else ap dialed this node. peer is the peer's id
// when known.
func (n *Node) linkFailed(ap netip.AddrPort, dialed, answered bool, peer string, err error) {
	why, mistake := failureReason(err, dialed, answered, n.cfg.TLS != nil)
	if why == "" {
		return
	}
	key := "to " + ap.String()
	n.failMu.Lock()
	if !dialed {
		ip := ap.Addr().String()
		key = "from " + ip + " " + peer
		if _, ok := n.failures[key]; !ok && peer != "" {
			// A caller that names another id at each try would make a
			// line of each: past a few ids, one address is one caller.
			if n.failIDs == nil || len(n.failIDs) >= failureMemory {
				n.failIDs = make(map[string]int)
			}
			if n.failIDs[ip] >= maxIDsPerCaller {
				key = "from " + ip + " *"
			} else {
				n.failIDs[ip]++
			}
		}
	}
	same := n.failures[key] == why
	if !same {
		if n.failures == nil || len(n.failures) >= failureMemory {
			n.failures = make(map[string]string)
		}
		n.failures[key] = why
	}
	n.failMu.Unlock()
	if same {
		n.log.Debug("link failed again: "+why, "addr", ap.String(), "peer", peer, "err", err)
		return
	}
	level := slog.LevelInfo
	if mistake {
		level = slog.LevelWarn
	}
	n.log.Log(context.Background(), level, "link failed: "+why, "addr", ap.String(), "peer", peer, "err", err)
	n.events.publish(Event{Kind: LinkFailed, Peer: peer, Addrs: []netip.AddrPort{ap}, Err: &linkError{why: why, err: err}})
}

// linkMade forgets the last failure of a dial to ap: its next failure is
// reported whatever its reason.
func (n *Node) linkMade(ap netip.AddrPort) {
	n.failMu.Lock()
	delete(n.failures, "to "+ap.String())
	n.failMu.Unlock()
}

// failureReason says why a link failed with err, in a few words that name
// what to fix ("wrong cluster secret", "unreachable (connection
// refused)"), and whether it is a setting that differs between the two
// nodes. It returns "" for what is no failure to report: the node or the
// caller gave up (closing, a context ended), a dial to this node itself,
// a refusal that IDConflict reports (this node is the run to give its id
// up), and, on a link a peer dialed, a dialer that went away or spoke no
// handshake.
func failureReason(err error, dialed, answered, tls bool) (why string, mistake bool) {
	var twin *transport.TwinError
	var refusal *transport.RefusalError
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, net.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "", false
	case errors.Is(err, transport.ErrSelfLink):
		return "", false
	case errors.As(err, &twin) && twin.Yield, errors.As(err, &refusal) && errors.Is(err, transport.ErrDuplicateID):
		return "", false // IDConflict (noteRefusal)
	case errors.Is(err, transport.ErrAuth):
		if tls {
			return "TLS authentication failed", true
		}
		return "wrong cluster secret", true
	case errors.Is(err, transport.ErrWrongCluster):
		return "wrong cluster", true
	case errors.Is(err, transport.ErrWrongVersion):
		return "wrong protocol version", true
	case errors.Is(err, transport.ErrDuplicateID):
		return "duplicate node id", true
	case errors.Is(err, ErrTooManyPeers):
		return "peer limit reached", false
	case errors.Is(err, transport.ErrRefused):
		return "refused", false
	case errors.Is(err, transport.ErrBadHandshake) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		if !dialed {
			return "", false // the dialer went away
		}
		// A node too busy to handshake (MaxHandshakes), one that gave up
		// on this link, or no tallship node at all.
		return "closed by the peer during the handshake", false
	case errors.Is(err, transport.ErrBadHandshake):
		if !dialed {
			return "", false
		}
		return "bad handshake (not a tallship node?)", false
	case errors.As(err, &ne) && ne.Timeout():
		if dialed && !answered {
			return "unreachable (no answer)", false
		}
		return "handshake timed out", false
	case !dialed:
		return "", false // the dialer went away
	case errors.Is(err, syscall.ECONNREFUSED):
		return "unreachable (connection refused)", false
	case answered && errors.Is(err, syscall.ECONNRESET):
		return "closed by the peer during the handshake", false
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable (no route)", false
	case !answered:
		return "unreachable", false
	}
	return "handshake failed", false
}

// linkError is the Err of a LinkFailed event: the reason in a few words,
// then the error.
type linkError struct {
	why string
	err error
}

func (e *linkError) Error() string { return fmt.Sprintf("link failed: %s: %v", e.why, e.err) }
func (e *linkError) Unwrap() error { return e.err }
