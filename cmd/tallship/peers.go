package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// A node knows only its own links. So that a dashboard can draw every link
// of the cluster, the long-running commands (join, ui) answer streams of
// the mesh protocol peersProtocol with their peer list: one JSON line
// (peerReport) at once, then a new one whenever a link of theirs comes up
// or goes down, until the stream closes.

const (
	peersProtocol = "tallship-peers"
	// maxReportBytes bounds one report line read from a peer.
	maxReportBytes = 1 << 20
	// maxReportPeers bounds the peers taken from one report.
	maxReportPeers = 4096
)

// peerReport is what a node says about itself on a peersProtocol stream.
type peerReport struct {
	ID string `json:"id"`
	// Observer: the node only watches (tallship ui); dashboards leave it
	// out of the picture.
	Observer bool     `json:"observer,omitempty"`
	Addrs    []string `json:"addrs"`
	// UpMS is how long the node has been up, in milliseconds, when it
	// wrote the report.
	UpMS  int64        `json:"up_ms"`
	Peers []memberJSON `json:"peers"`
}

// peerResponder answers peersProtocol streams for a node.
type peerResponder struct {
	n        *mesh.Node
	started  time.Time
	observer bool
	ln       net.Listener
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// startPeerResponder answers the peersProtocol streams of n's peers until
// Close. started is when the node started; observer marks a node that
// only watches.
func startPeerResponder(n *mesh.Node, started time.Time, observer bool) (*peerResponder, error) {
	ln, err := n.Listen(peersProtocol)
	if err != nil {
		return nil, err
	}
	r := &peerResponder{n: n, started: started, observer: observer, ln: ln}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// Close stops answering, ends the streams being answered and returns once
// their goroutines have ended. It is idempotent.
func (r *peerResponder) Close() {
	r.cancel()
	r.ln.Close()
	r.wg.Wait()
}

func (r *peerResponder) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return // closed: by Close or with the node
		}
		r.wg.Add(1)
		go r.answer(c)
	}
}

// answer writes the node's report on c now and after each change of its
// links, until c or the responder closes.
func (r *peerResponder) answer(c net.Conn) {
	defer r.wg.Done()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	// Subscribe before the first report, so that no change is missed.
	events := r.n.Events(ctx)
	r.wg.Add(1)
	go func() { // the asker never writes: a read ends when the stream does
		defer r.wg.Done()
		var b [1]byte
		c.Read(b[:])
		cancel()
	}()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		<-ctx.Done()
		c.Close()
	}()
	for {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := writeJSON(c, r.report()); err != nil {
			return
		}
		if !nextLinkChange(events) {
			return
		}
	}
}

// nextLinkChange waits for a peer-up or peer-down event and reports
// whether one came before the events ended.
func nextLinkChange(events <-chan mesh.Event) bool {
	for ev := range events {
		if ev.Kind == mesh.PeerUp || ev.Kind == mesh.PeerDown {
			return true
		}
	}
	return false
}

func (r *peerResponder) report() peerReport {
	rep := peerReport{
		ID:       r.n.ID(),
		Observer: r.observer,
		Addrs:    addrStrings(r.n.Addrs()),
		UpMS:     time.Since(r.started).Milliseconds(),
		Peers:    []memberJSON{},
	}
	for _, p := range r.n.Peers() {
		rep.Peers = append(rep.Peers, memberOf(p))
	}
	return rep
}

// readPeerReports opens a peersProtocol stream to peer and calls got with
// each report it reads, until the stream or ctx ends. It returns the
// error that ended it; a peer that does not answer the protocol closes the
// stream at once (io.EOF before any report).
func readPeerReports(ctx context.Context, n *mesh.Node, peer string, got func(peerReport)) error {
	c, err := n.OpenStream(ctx, peer, peersProtocol)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), maxReportBytes)
	for sc.Scan() {
		var rep peerReport
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			return err
		}
		if rep.ID != peer {
			return errors.New("peer report names another node")
		}
		if len(rep.Peers) > maxReportPeers {
			rep.Peers = rep.Peers[:maxReportPeers]
		}
		got(rep)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return ctx.Err()
}
