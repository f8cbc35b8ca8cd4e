package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/lag"
	"github.com/tallship-go/tallship/internal/wire"
	"github.com/tallship-go/tallship/transport"
)

// target is a peer this node wants a link with: one that discovery or
// peer exchange reported, or one kept by Connect.
type target struct {
	id    string // empty until learned, for an address-only target
	addrs []netip.AddrPort
	kept  bool
	// host is the "host:port" Connect was given for a kept peer: it is
	// looked up again before each redial (see redialAddrs).
	host string
	// announced: a discoverer reports the peer present (until Lost); it
	// is retried, with backoff, as long as that holds.
	announced bool
	dialing   bool // a dial goroutine runs for it
	// yield ends the dial attempt under way, if any (see yieldLocked).
	yield context.CancelFunc
	// silent: no address answered the last attempt; the next one starts
	// without a turn of the dial pacer (see turn).
	silent bool
}

// Connect links to the node at addr, waits for the link's handshake and
// keeps the peer: when its link drops, the node redials it with backoff
// until Disconnect. addr is "host:port" as discovery.Static takes it: host
// an IP address or a host name, port a number or a service name. A name
// is looked up with Config.Resolver, at Connect and again before each
// redial, and all of its addresses are tried, IPv4 first, the next one
// starting when one fails or has not answered within 250 ms. It returns
// the peer's description, or an error: one wrapping discovery.ErrBadAddr,
// naming addr, when addr is not host:port; one naming addr and wrapping
// the resolver's *net.DNSError when the name does not resolve; else the
// dial's (a refusal wraps transport's sentinels; ctx's error when ctx
// ends first).
func (n *Node) Connect(ctx context.Context, addr string) (Peer, error) {
	n.mu.Lock()
	if !n.runningLocked() {
		n.mu.Unlock()
		return Peer{}, errClosedOrNotStarted(n)
	}
	n.mu.Unlock()
	addrs, err := discovery.Resolve(ctx, n.cfg.Resolver, addr)
	if err != nil {
		return Peer{}, fmt.Errorf("mesh: connect: %w", err)
	}
	l, _, err := n.dialAny(ctx, addrs, "", nil)
	if l == nil {
		return Peer{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.targetLocked(l.peer)
	t.kept = true
	t.host = addr
	t.addrs = mergeAddrs(addrs, t.addrs)
	p := n.peers[l.peer]
	if p == nil {
		// The link went down already; the kept peer is redialed.
		n.startDialLocked(t, n.cfg.DialBackoff)
		return Peer{ID: l.peer, Addrs: l.tl.Remote().Addrs, Kept: true}, nil
	}
	return n.peerInfo(p), nil
}

// Disconnect stops keeping the peer with id and closes its links, saying
// goodbye: the peer first gets what Send queued for it, and each link
// closes once the peer has read it, or when ctx ends (what is left may
// then be lost; a line at Warn says so). Discovery may link the two nodes
// again later. It returns an error wrapping ErrUnknownPeer when the node
// neither keeps nor has a link to that peer, and ctx.Err() when ctx ended
// before the goodbye was read (the links are closed all the same).
func (n *Node) Disconnect(ctx context.Context, id string) error {
	n.mu.Lock()
	t := n.targets[id]
	p := n.peers[id]
	if t == nil && p == nil {
		n.mu.Unlock()
		return unknownPeer(id)
	}
	delete(n.targets, id)
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	p.leave()
	select {
	case <-p.writerDone:
	case <-ctx.Done():
	}
	n.mu.Lock()
	var links []*link
	if p.active != nil {
		links = append(links, p.active)
	} else if n.peers[id] == p {
		n.peerDownLocked(p, nil, false) // its link was being made again
	}
	links = append(links, p.retiring...)
	n.mu.Unlock()
	if isClosed(p.writerDone) {
		for _, l := range links {
			l.finishOut() // see Node.close
		}
	}
	for _, l := range links {
		if ctx.Err() == nil {
			l.drain(ctx, n, false)
		}
		l.tl.Close()
	}
	return ctx.Err()
}

func errClosedOrNotStarted(n *Node) error {
	if n.closed {
		return errClosed
	}
	return errNotRunning
}

// targetLocked returns the target for id, making it; n.mu is held.
func (n *Node) targetLocked(id string) *target {
	t := n.targets[id]
	if t == nil {
		t = &target{id: id}
		n.targets[id] = t
	}
	return t
}

// dial dials one address and takes the link into the mesh.
func (n *Node) dial(ctx context.Context, ap netip.AddrPort) (*link, error) {
	tl, err := n.handshake(ctx, ap, nil)
	if err != nil {
		return nil, err
	}
	l := n.addLink(tl)
	if l == nil {
		return nil, errClosed
	}
	return l, nil
}

// handshake dials one address and runs the handshake, until ctx or the
// node ends; the connection takes at most HandshakeTimeout, and so does
// the handshake. connected, when not nil, is called once the address
// answered, before the handshake; an error of it ends the attempt.
func (n *Node) handshake(ctx context.Context, ap netip.AddrPort, connected func() error) (*transport.Link, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()
	tl, err := n.connect(ctx, ap, connected)
	if err != nil {
		n.noteRefusal(err)
		n.log.Debug("dial failed", "addr", ap.String(), "err", err)
		return nil, fmt.Errorf("mesh: %w", err)
	}
	return tl, nil
}

func (n *Node) connect(ctx context.Context, ap netip.AddrPort, connected func() error) (*transport.Link, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, lag.Stretch(n.cfg.HandshakeTimeout))
	conn, err := d.DialContext(dctx, "tcp", ap.String())
	cancel()
	if err != nil {
		return nil, err
	}
	if connected != nil {
		if err := connected(); err != nil {
			conn.Close()
			return nil, err
		}
	}
	var admitted *transport.Hello
	verify := func(h transport.Hello) error {
		if err := n.admit(h, ap); err != nil {
			return err
		}
		admitted = &h
		return nil
	}
	tl, err := transport.Client(ctx, conn, n.hello(n.dialSeq.Add(1)), n.tcfg, verify)
	if err != nil {
		if admitted != nil {
			n.unclaim(admitted.ID, admitted.Incarnation)
		}
		n.handshakeFailed(err)
		conn.Close()
		return nil, fmt.Errorf("link to %s: %w", ap, err)
	}
	return tl, nil
}

// dialStagger is how long a dial waits for an address to answer before
// it tries the next one too (RFC 8305's Connection Attempt Delay), on a
// machine that runs on time (see internal/lag).
const dialStagger = 250 * time.Millisecond

// dialAny dials addrs in order, starting the next one when the previous
// fails or dialStagger has passed without a connection, and takes the
// first link whose peer is want (any when want is empty) into the mesh,
// then any that succeed later (the duplicate rule settles them). Once an
// address has answered, no other is tried unless its handshake fails: a
// handshake that is slow (a busy peer) is not one more reason to start
// another. Each connection and each handshake takes at most
// HandshakeTimeout; all of it ends when ctx does or the node closes.
// With tn, a turn of the dial pacer, the dial gives the turn back if no
// address has answered within dialStagger, takes it again (waiting a
// quarter of HandshakeTimeout at most; else the attempt ends with
// errNoTurn) once one has, and ends it with the outcome. It returns nil
// when none linked, and whether no address answered with a connection
// timed out (a peer that may be gone), with the error that says most:
// that of an address that answered (a refusal), else the first
// address's, ctx's when it ended, errClosed when the node closed. The
// error is nil when the only links made were to other peers than want.
func (n *Node) dialAny(ctx context.Context, addrs []netip.AddrPort, want string, tn *turn) (l *link, unanswered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A handshake that timed out is the sign of a machine or a peer
	// buried in work; a connection that timed out, of a peer that may be
	// gone.
	hsTimedOut, connTimedOut, anyAnswered := false, false, false
	defer func() { tn.end(l != nil, hsTimedOut) }()
	// One channel for both reports of an attempt keeps them in order.
	type report struct {
		ap        netip.AddrPort
		connected bool // the address answered; the handshake runs
		answered  bool // with the end of an attempt: it had answered
		tl        *transport.Link
		err       error
	}
	reports := make(chan report, 2*len(addrs))
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		close(reports)
		// A late success is a duplicate link: take it in as well, so that
		// both ends apply the same rule to it (its peer may keep it).
		for r := range reports {
			if r.tl != nil {
				n.addLink(r.tl)
			}
		}
	}()
	next, pending, answered := 0, 0, 0
	errAnswered := false // err is that of an address that answered
	// errAP is the address err is of.
	var errAP netip.AddrPort
	// An address that answered is known at once through connected, before
	// its report is read: on a machine running late, the report may come
	// after the stagger although the address answered at once, and a
	// second handshake to the same peer would only add to the load.
	var connected atomic.Int32
	stagger := time.NewTimer(0)
	defer stagger.Stop()
	var graceC <-chan time.Time // gives tn back (see turn)
	if tn.holds() {
		grace := time.NewTimer(lag.Stretch(dialStagger))
		defer grace.Stop()
		graceC = grace.C
	}
	for next < len(addrs) || pending > 0 {
		select {
		case <-graceC:
			if connected.Load() == 0 && answered == 0 {
				tn.giveBack()
			}
		case <-stagger.C:
			if next == len(addrs) || connected.Load() > 0 {
				continue
			}
			ap := addrs[next]
			next++
			pending++
			wg.Go(func() {
				answered := false
				tl, err := n.handshake(ctx, ap, func() error {
					answered = true
					connected.Add(1)
					reports <- report{ap: ap, connected: true}
					wait := time.NewTimer(lag.Stretch(n.cfg.HandshakeTimeout / 4))
					defer wait.Stop()
					if !tn.take(ctx.Done(), wait.C) {
						return errNoTurn
					}
					return nil
				})
				if answered {
					connected.Add(-1)
				}
				reports <- report{ap: ap, answered: answered, tl: tl, err: err}
			})
			stagger.Reset(lag.Stretch(dialStagger))
		case r := <-reports:
			if r.connected {
				answered++
				stagger.Stop()
				continue
			}
			pending--
			if r.answered {
				answered--
				anyAnswered = true
			}
			if r.err != nil {
				var ne net.Error
				if errors.As(r.err, &ne) && ne.Timeout() {
					if r.answered {
						hsTimedOut = true
					} else {
						connTimedOut = true
					}
				}
				if err == nil || (r.answered && !errAnswered) {
					err, errAnswered, errAP = r.err, r.answered, r.ap
				}
				if answered == 0 {
					stagger.Reset(0) // no need to wait: try the next now
				}
				continue
			}
			if want != "" && r.tl.Peer() != want {
				n.log.Info("address now belongs to another node", "addr", r.ap.String(), "peer", r.tl.Peer(), "want", want)
			}
			n.linkMade(r.ap)
			made := n.addLink(r.tl)
			if made == nil {
				return nil, false, errClosed
			}
			if want == "" || made.peer == want {
				return made, false, nil
			}
			stagger.Reset(0)
		case <-ctx.Done():
			if n.ctx.Err() != nil {
				return nil, false, errClosed
			}
			return nil, false, fmt.Errorf("mesh: %w", ctx.Err())
		case <-n.closing:
			return nil, false, errClosed
		}
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, errNoTurn) {
		n.linkFailed(errAP, true, errAnswered, want, err)
	}
	return nil, connTimedOut && !anyAnswered, err
}

// errNoTurn ends a dial attempt whose address answered after the dial
// gave its turn back, when no turn freed soon (see turn): the dial loop
// tries again, with a turn from the start.
var errNoTurn = errors.New("no dial turn free")

// startDialLocked starts t's dial goroutine after delay unless one runs;
// n.mu is held.
func (n *Node) startDialLocked(t *target, delay time.Duration) {
	if t.dialing || n.closed {
		return
	}
	t.dialing = true
	if t.id == "" {
		for _, ap := range t.addrs {
			n.addrDialing[ap]++
		}
	}
	n.wg.Add(1)
	go n.dialLoop(t, delay)
}

// dialLoop dials t until it has a link: a kept target forever, with
// backoff, and so an announced one, and one the registry reaches through
// other nodes' links (it lives: see redialLocked), while that holds;
// another Config.DialAttempts times.
func (n *Node) dialLoop(t *target, delay time.Duration) {
	defer n.wg.Done()
	backoff := n.cfg.DialBackoff
	for attempt := 0; ; attempt++ {
		if delay > 0 {
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-n.closing:
				timer.Stop()
				n.endDial(t)
				return
			}
		}
		// Wait for a turn (Config.MaxDials), then look again: the peer
		// may have dialed this node meanwhile. A peer that did not
		// answer last time is dialed without one, MaxDials of those at
		// once (see turn).
		tn := &turn{p: n.dials, fallback: t.id != "" && t.id < n.id}
		n.mu.Lock()
		silent := t.silent
		n.mu.Unlock()
		var ok bool
		if silent {
			ok = n.dials.acquireSilent(n.closing)
		} else {
			ok = tn.take(n.closing, nil)
		}
		if !ok {
			n.endDial(t)
			return
		}
		leave := func() {
			tn.giveBack()
			if silent {
				n.dials.releaseSilent()
			}
		}
		n.mu.Lock()
		_, linked := n.peers[t.id]
		current := n.targets[t.id] == t || t.id == ""
		incoming := t.id != "" && n.inbound[t.id] > 0
		addrs := slices.Clone(t.addrs)
		host := t.host
		n.mu.Unlock()
		if (linked && t.id != "") || !current {
			leave()
			n.endDial(t)
			return
		}
		if incoming {
			// The peer is dialing this node, its handshake under way:
			// a dial now would make a duplicate link to retire. Look
			// again after a while (a handshake ends within
			// HandshakeTimeout).
			leave()
			n.deferred.Add(1)
			delay = n.cfg.DialBackoff
			continue
		}
		if host != "" {
			addrs = n.redialAddrs(host, addrs)
		}
		ctx, yield := context.WithCancel(n.ctx)
		n.mu.Lock()
		t.yield = yield
		n.mu.Unlock()
		l, unanswered, err := n.dialAny(ctx, addrs, t.id, tn)
		leave()
		yielded := ctx.Err() != nil && n.ctx.Err() == nil
		n.mu.Lock()
		t.yield = nil
		t.silent = unanswered
		n.mu.Unlock()
		yield()
		if l != nil {
			n.endDial(t)
			return
		}
		if yielded || errors.Is(err, errNoTurn) {
			// The peer's own dial is under way (yieldLocked): look
			// again once it may have ended, as for a peer dialing in
			// before this dial began. Or the peer answered late and no
			// turn was free: dial again, with a turn. Not an attempt
			// that failed.
			n.deferred.Add(1)
			attempt--
			delay = n.cfg.DialBackoff
			continue
		}
		n.mu.Lock()
		// A peer that the registry reaches through others lives: only
		// the way from this node to it failed (see redialLocked).
		persist := t.kept || t.announced || n.reachableLocked(t.id)
		n.mu.Unlock()
		// A twin refused (this node or the peer holds another run of
		// its id) stays refused while that run lives: only a kept or
		// announced peer, or one reached through others, is tried
		// again.
		twin := errors.Is(err, transport.ErrDuplicateID)
		if !persist && (twin || attempt+1 >= n.cfg.DialAttempts) {
			n.endDial(t)
			return
		}
		delay = backoff
		backoff = min(2*backoff, n.cfg.DialBackoffMax)
	}
}

// yieldLocked ends this node's dial to peer id, if one is under way,
// when the peer's own dial to this node has passed admission: of the two
// links they would make, both ends keep the one the lower id dialed, and
// id is the lower. A busy node's dials wait for a turn (Config.MaxDials)
// and take long, so that the fallback dial of the higher id (after
// FallbackDelay) and the lower id's own dial often ran at once: a
// duplicate link, made whole, registry sync and all, to be retired (one
// link in four while 100 nodes on two cores formed a mesh). The dial
// loop goes on: it finds the peer linked, or dials again if that
// handshake failed. n.mu is held.
func (n *Node) yieldLocked(id string) {
	if t := n.targets[id]; t != nil && t.yield != nil && id < n.id {
		t.yield()
	}
}

// redialAddrs returns the addresses to redial a kept peer at, Connect's
// host:port given: host's addresses now, then the others known (the
// peer's own, and host's at Connect). A look-up that fails, or takes
// longer than HandshakeTimeout, leaves the known ones.
func (n *Node) redialAddrs(host string, known []netip.AddrPort) []netip.AddrPort {
	ctx, cancel := context.WithTimeout(n.ctx, lag.Stretch(n.cfg.HandshakeTimeout))
	defer cancel()
	addrs, err := discovery.Resolve(ctx, n.cfg.Resolver, host)
	if err != nil {
		n.log.Debug("resolve failed", "addr", host, "err", err)
		return known
	}
	return mergeAddrs(addrs, known)
}

func (n *Node) endDial(t *target) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t.dialing = false
	if t.id == "" {
		for _, ap := range t.addrs {
			if n.addrDialing[ap]--; n.addrDialing[ap] <= 0 {
				delete(n.addrDialing, ap)
			}
		}
		return
	}
	if !t.kept && !t.announced && n.targets[t.id] == t {
		delete(n.targets, t.id)
	}
}

// discovered takes a discoverer's report. It never blocks.
func (n *Node) discovered(e discovery.Event) {
	switch {
	case e.Err != nil:
		n.log.Debug("discovery error", "source", e.Source, "err", e.Err)
		n.events.publish(Event{Kind: DiscoveryError, Err: e.Err})
	case e.Kind == discovery.Found:
		n.consider(e.Peer.ID, e.Peer.Addrs, e.Peer.ID != "")
	case e.Kind == discovery.Lost:
		n.mu.Lock()
		if t := n.targets[e.Peer.ID]; t != nil {
			t.announced = false
			if !t.kept && !t.dialing {
				delete(n.targets, t.id)
			}
		}
		n.mu.Unlock()
	}
}

// learnMembers takes a member list a peer sent, under one lock: in a
// forming mesh each list names nearly every node.
func (n *Node) learnMembers(ms []wire.Member) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range ms {
		n.considerLocked(m.ID, m.Addrs, false)
	}
}

// consider starts a dial to a reported peer unless it is this node or is
// linked already (a member list that names a linked peer at other
// addresses than its own is dialed: a twin may be there). Of two nodes that a discoverer reports to each other,
// the lower id dials at once; the higher waits FallbackDelay for the other
// to dial it first. A peer known only from a member list is dialed at
// once: it has not heard of this node (see exchangeLocked). An announced
// peer (one a discoverer reports present) is retried until it is linked
// or lost.
func (n *Node) consider(id string, addrs []netip.AddrPort, announced bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.considerLocked(id, addrs, announced)
}

// considerLocked is consider with n.mu held.
func (n *Node) considerLocked(id string, addrs []netip.AddrPort, announced bool) {
	if id == n.id || len(addrs) == 0 {
		return
	}
	if !n.runningLocked() {
		return
	}
	if id == "" {
		// An address alone (Static, DNS).
		n.dialAddrsLocked(addrs)
		return
	}
	if p := n.peers[id]; p != nil {
		if announced {
			// Linked before discovery saw it (it dialed this node, or a
			// member list named it). That discovery reports it must
			// outlive the link: should the link be lost for good, the
			// peer is dialed again (redialLocked), and discovery, which
			// reports only changes, will not report it again.
			t := n.targetLocked(id)
			t.addrs = mergeAddrs(addrs, t.addrs)
			t.announced = true
			return
		}
		if len(p.addrs) > 0 && !slices.ContainsFunc(addrs, func(a netip.AddrPort) bool { return slices.Contains(p.addrs, a) }) {
			// A member list names a linked peer's id at none of its
			// addresses: another run of the id may live there, held by
			// the member that sent the list. A dial finds out (admit);
			// to the peer's own run it is a duplicate link, retired.
			n.dialAddrsLocked(addrs)
		}
		return
	}
	t := n.targetLocked(id)
	t.addrs = mergeAddrs(addrs, t.addrs)
	t.announced = t.announced || announced
	delay := time.Duration(0)
	if n.id > id && t.announced {
		delay = lag.Stretch(n.cfg.FallbackDelay) // the other's dial is as late as this process
	}
	n.startDialLocked(t, delay)
}

// dialAddrsLocked dials addrs, whoever answers there, unless the node
// there is linked or a dial to one of them runs already; n.mu is held.
func (n *Node) dialAddrsLocked(addrs []netip.AddrPort) {
	for _, ap := range addrs {
		if owner, ok := n.addrOwner[ap]; ok && (owner == n.id || n.peers[owner] != nil) {
			return
		}
		if n.addrDialing[ap] > 0 {
			return
		}
	}
	n.startDialLocked(&target{addrs: addrs}, 0)
}

// exchangeLaterLocked tells a new peer the members this node is linked
// with: at once while they are few (exchangeAtOnce) or when the peer is
// a new run of one it held (restart), else FallbackDelay from now (see
// exchangeLocked); n.mu is held. One timer serves every peer whose list
// waits.
//
// The list waits because it is rarely needed: on a LAN, discovery
// finds every member for every node, and in a mesh forming all at once
// each new link's list named up to every node, N³ entries for N nodes
// (every one sent, parsed and looked up for nothing: at 200 nodes,
// lists of 200 on each of 40,000 link ends). After the wait, the list
// names only the members the peer is not linked to by then, as the
// registry knows (Registry.Unlinked): often none. A node that joined
// through one address (Connect, Static, DNS) learns the others that much
// later; a peer found only in a list is still dialed at once.
func (n *Node) exchangeLaterLocked(p *peer, restart bool) {
	if n.closed {
		return
	}
	if restart {
		// A new run of a peer this node held: what the registry says of
		// the old run's links says nothing of the new one's (and the new
		// run, on a new address, is found by no member but through this
		// list). All of them, at once.
		n.exchangeLocked(p, false)
		return
	}
	if len(n.peers) <= exchangeAtOnce {
		// A short list costs little, and at once it links a small
		// mesh sooner than discovery does (10 nodes in 20 ms, not 120).
		n.exchangeLocked(p, true)
		return
	}
	if n.exchangeDue == nil {
		n.exchangeDue = map[*peer]time.Time{}
	}
	n.exchangeDue[p] = time.Now().Add(lag.Stretch(n.cfg.FallbackDelay))
	n.armExchangesLocked()
}

// exchangeAtOnce is how many peers a node may have for a new peer's
// member list to go at once; with more, it waits (exchangeLaterLocked).
const exchangeAtOnce = 16

// armExchangesLocked starts the exchange timer for the first list due,
// unless it runs; n.mu is held.
func (n *Node) armExchangesLocked() {
	if n.exchangeArmed || len(n.exchangeDue) == 0 {
		return
	}
	first := time.Time{}
	for _, at := range n.exchangeDue {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	n.exchangeArmed = true
	n.wg.Add(1) // (ended by the timer's function, or by its Stop)
	if n.exchangeTimer == nil {
		n.exchangeTimer = time.AfterFunc(time.Until(first), n.exchangesDue)
	} else {
		n.exchangeTimer.Reset(time.Until(first))
	}
}

// exchangesDue sends the member lists that are due, and arms the timer
// for the next.
func (n *Node) exchangesDue() {
	defer n.wg.Done()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.exchangeArmed = false
	if n.closed {
		return
	}
	now := time.Now()
	for p, at := range n.exchangeDue {
		if at.After(now) {
			continue
		}
		delete(n.exchangeDue, p)
		if n.peers[p.id] == p {
			n.exchangeLocked(p, true)
		}
	}
	n.armExchangesLocked()
}

// stopExchangesLocked drops the lists that wait, as the node closes;
// n.mu is held.
func (n *Node) stopExchangesLocked() {
	clear(n.exchangeDue)
	if n.exchangeArmed && n.exchangeTimer.Stop() {
		n.exchangeArmed = false
		n.wg.Done()
	}
}

// exchangeLocked tells a peer the members this node is linked with (with
// filter, those it is not linked to, as far as the registry knows); n.mu
// is held. The peer dials those it is not linked with (at once: they do
// not know it). Of any two members linked with this node, the one that
// linked later has the other in its list unless it is linked to it, so
// the mesh completes. The members are not told of the new peer in turn: in a
// mesh forming all at once that was a frame to every member for every
// new link, N³ frames for N nodes (a fifth to a third of the CPU of 50
// nodes started together), nearly all of them about peers the members
// already knew.
func (n *Node) exchangeLocked(p *peer, filter bool) {
	var ids []string
	for _, o := range n.peers {
		if o != p && !o.observer { // nobody dials an observer
			ids = append(ids, o.id)
		}
	}
	if filter && len(ids) > 0 && n.reg != nil {
		ids = n.reg.Unlinked(p.id, ids)
	}
	if len(ids) == 0 {
		return
	}
	known := make([]wire.Member, 0, len(ids))
	for _, id := range ids {
		o := n.peers[id]
		known = append(known, wire.Member{ID: o.id, Addrs: o.addrs})
	}
	p.push(wire.Frame(wire.Members, wire.AppendMembers(nil, known)))
}
