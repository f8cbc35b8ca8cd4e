package mesh

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
)

// TestDialsArePaced: a node that discovers many peers at once dials at
// most MaxDials of them at a time, and still tries every one. The peers
// here accept and never answer, so each dial lasts its HandshakeTimeout.
func TestDialsArePaced(t *testing.T) {
	leakcheck.Goroutines(t)
	const peers, maxDials = 10, 3
	type try struct {
		peer int
		at   time.Time
	}
	tried := make(chan try, 100)
	var wg sync.WaitGroup
	var addrs []string
	var lns []net.Listener
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	})
	for i := range peers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				tried <- try{i, time.Now()}
				wg.Go(func() {
					io.Copy(io.Discard, c) // until the dialer gives up
					c.Close()
				})
			}
		})
	}
	cfg := testConfig("pacer")
	cfg.MaxDials = maxDials
	cfg.HandshakeTimeout = 300 * time.Millisecond
	cfg.Discovery = []discovery.Discoverer{&discovery.Static{Addrs: addrs}}
	start(t, "paced", cfg)
	seen := map[int]bool{}
	var first time.Time
	early := 0 // dials that began before the first could have ended
	deadline := time.After(10 * time.Second)
	for len(seen) < peers {
		select {
		case tr := <-tried:
			seen[tr.peer] = true
			if first.IsZero() {
				first = tr.at
			}
			if tr.at.Sub(first) < cfg.HandshakeTimeout*3/4 {
				early++
			}
		case <-deadline:
			t.Fatalf("%d of %d peers dialed in 10 s", len(seen), peers)
		}
	}
	if early > maxDials {
		t.Errorf("%d dials began within the first dial's handshake timeout, want at most MaxDials = %d", early, maxDials)
	}
}

// TestDialPacerAdapts: the pacer starts at 8 dials at once, allows one
// more per dial that links (up to the maximum) and halves on a timeout
// (down to 2); a refusal changes nothing.
func TestDialPacerAdapts(t *testing.T) {
	p := newDialPacer(32, 2*time.Second)
	p.late = func() time.Duration { return 0 }
	stop := make(chan struct{})
	take := func() (n int) {
		for p.active < p.limit && p.acquire(stop, nil) {
			n++
		}
		return n
	}
	if n := take(); n != startDials {
		t.Fatalf("%d turns at the start, want %d", n, startDials)
	}
	for range 4 {
		p.release(true, false, 0)
	}
	if p.limit != startDials+4 {
		t.Errorf("after 4 links: limit %d, want %d", p.limit, startDials+4)
	}
	p.release(false, false, 0)
	if p.limit != startDials+4 {
		t.Errorf("a refusal moved the limit to %d", p.limit)
	}
	p.release(false, true, 0)
	if p.limit != (startDials+4)/2 {
		t.Errorf("after a timeout: limit %d, want %d", p.limit, (startDials+4)/2)
	}
	for range 2 {
		p.release(false, true, 0)
	}
	if p.limit != minDials {
		t.Errorf("after timeouts: limit %d, want the floor %d", p.limit, minDials)
	}
	// A turn waits while the limit is reached, and comes when one frees.
	for p.active > 0 {
		p.release(false, false, 0)
	}
	take()
	got := make(chan bool)
	go func() { got <- p.acquire(stop, nil) }()
	select {
	case <-got:
		t.Fatal("a turn past the limit was given")
	case <-time.After(20 * time.Millisecond):
	}
	p.release(true, false, 0)
	if !<-got {
		t.Fatal("no turn once one freed")
	}
	// With no turn free, a stopped wait gives up.
	take()
	close(stop)
	if p.acquire(stop, nil) {
		t.Fatal("a stopped wait got a turn past the limit")
	}
}

// TestDialPacerBacksOffWhenLate: while the process runs a quarter of
// HandshakeTimeout late, a dial that ends halves the dials allowed at
// once, even one that linked; once it catches up, links raise it again.
func TestDialPacerBacksOffWhenLate(t *testing.T) {
	p := newDialPacer(32, 2*time.Second)
	late := 500 * time.Millisecond
	p.late = func() time.Duration { return late }
	stop := make(chan struct{})
	for range 4 {
		p.acquire(stop, nil)
	}
	p.release(true, false, 0)
	if p.limit != startDials/2 {
		t.Fatalf("a link made while the process ran %v late: limit %d, want %d", late, p.limit, startDials/2)
	}
	late = 10 * time.Millisecond
	p.release(true, false, 0)
	if p.limit != startDials/2+1 {
		t.Fatalf("a link made on time: limit %d, want %d", p.limit, startDials/2+1)
	}
}

// TestDialPacerSlowLinks: a dial that links raises the dials allowed at
// once only if it took under a sixteenth of HandshakeTimeout; one that
// took longer leaves the bound, and one that took a quarter of it halves
// the bound as a timeout does: a busy machine, or peer, links slowly
// long before its handshakes time out.
func TestDialPacerSlowLinks(t *testing.T) {
	p := newDialPacer(32, 2*time.Second)
	p.late = func() time.Duration { return 0 }
	stop := make(chan struct{})
	for range 4 {
		p.acquire(stop, nil)
	}
	p.release(true, false, 50*time.Millisecond)
	if p.limit != startDials+1 {
		t.Fatalf("a link in 50 ms: limit %d, want %d", p.limit, startDials+1)
	}
	p.release(true, false, 300*time.Millisecond)
	if p.limit != startDials+1 {
		t.Fatalf("a link in 300 ms: limit %d, want it left at %d", p.limit, startDials+1)
	}
	p.release(true, false, 600*time.Millisecond)
	if p.limit != (startDials+1)/2 {
		t.Fatalf("a link in 600 ms (over a quarter of the 2 s timeout): limit %d, want %d", p.limit, (startDials+1)/2)
	}
}

// scripted is a discoverer whose reports the test makes: Run hands over
// its report function, which the test calls (a report is taken in
// before the call returns).
type scripted chan func(discovery.Event)

func (s scripted) Run(ctx context.Context, _ discovery.Self, report func(discovery.Event)) error {
	select {
	case s <- report:
	case <-ctx.Done():
	}
	<-ctx.Done()
	return nil
}

// TestAnnouncedAfterLinkRedialed: a peer that linked before discovery
// reported it (here it dialed this node first) and whose link is then lost
// for good is dialed again until the network carries again, although
// discovery, which reports changes only, never reports it again.
func TestAnnouncedAfterLinkRedialed(t *testing.T) {
	leakcheck.Goroutines(t)
	// Every path between a and b crosses a proxy, so that the test can
	// stop the network between them.
	pa, pb := newProxy(t, ""), newProxy(t, "")
	da, db := make(scripted), make(scripted)
	ca, cb := testConfig("a"), testConfig("b")
	ca.Advertise = []netip.AddrPort{netip.MustParseAddrPort(pa.ln.Addr().String())}
	cb.Advertise = []netip.AddrPort{netip.MustParseAddrPort(pb.ln.Addr().String())}
	ca.Discovery, cb.Discovery = []discovery.Discoverer{da}, []discovery.Discoverer{db}
	a, b := start(t, "c", ca), start(t, "c", cb)
	pa.setTarget(a.ln.Addr().String())
	pb.setTarget(b.ln.Addr().String())
	reportA, reportB := <-da, <-db
	ev := a.Events(t.Context())

	// b finds a's address alone (as from discovery.Static) and dials it.
	reportB(discovery.Event{Kind: discovery.Found, Peer: discovery.Peer{Addrs: ca.Advertise}})
	waitFor(t, "a and b linked", 5*time.Second, func() bool { return settled(a, b) })
	nextEvent(t, ev, PeerUp)
	// Then a's discovery sees b, linked already.
	reportA(discovery.Event{Kind: discovery.Found, Peer: discovery.Peer{ID: "b", Addrs: cb.Advertise}})

	// The network between them stops for longer than a link may be made
	// again: a sees b go down.
	pa.stall()
	pb.stall()
	pa.cut()
	pb.cut()
	if e := nextEvent(t, ev, PeerDown); e.Peer != "b" {
		t.Fatalf("PeerDown of %q", e.Peer)
	}
	pa.resume()
	pb.resume()
	if e := nextEvent(t, ev, PeerUp); e.Peer != "b" {
		t.Fatalf("PeerUp of %q", e.Peer)
	}
}

// exhausted is a listener whose first accepts fail as they do in a process
// out of file descriptors; then it accepts.
type exhausted struct {
	net.Listener
	fails atomic.Int32
}

func (e *exhausted) Accept() (net.Conn, error) {
	if e.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: e.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return e.Listener.Accept()
}

// TestAcceptSurvivesTooManyFiles: a node whose accepts fail for a while
// (too many open files) says so once, at Warn with what to do, counts
// them (Stats), and accepts links again once they pass. It used to stop
// accepting for good.
func TestAcceptSurvivesTooManyFiles(t *testing.T) {
	leakcheck.Goroutines(t)
	warns := &warnLog{}
	ca := testConfig("a")
	ca.Logger = slog.New(warns)
	a := start(t, "c", ca)
	b := start(t, "c", testConfig("b"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ex := &exhausted{Listener: ln}
	ex.fails.Store(6)
	a.wg.Add(1)
	go a.acceptLoop(ex) // a's own loop stays on its own listener
	t.Cleanup(func() { ln.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := b.Connect(ctx, ln.Addr().String()); err != nil {
		t.Fatalf("connect once accepts work again: %v", err)
	}
	var said []string
	for _, m := range warns.all() {
		if strings.Contains(m, "accept failed") {
			said = append(said, m)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], "too many open files") || !strings.Contains(said[0], "ulimit -n") {
		t.Fatalf("warnings of the failed accepts: %q, want one that names the limit", said)
	}
	if got := a.Stats().AcceptsFailed; got != 6 {
		t.Fatalf("Stats().AcceptsFailed = %d, want 6", got)
	}
}

// TestReachablePeerRedialed: a peer known from a member list alone (no
// discoverer reports it) whose link is lost for good is dialed again, for
// as long as the registry reaches it through another node: the two meet
// again once the network between them carries, although no new link
// brings a new member list.
func TestReachablePeerRedialed(t *testing.T) {
	leakcheck.Goroutines(t)
	// a and c advertise proxies: the link between them crosses one, and
	// the test can stop it; b reaches each at its own address.
	pa, pc := newProxy(t, ""), newProxy(t, "")
	ca, cc := testConfig("a"), testConfig("c")
	ca.Advertise = []netip.AddrPort{netip.MustParseAddrPort(pa.ln.Addr().String())}
	cc.Advertise = []netip.AddrPort{netip.MustParseAddrPort(pc.ln.Addr().String())}
	db := make(scripted)
	cb := testConfig("b")
	cb.Discovery = []discovery.Discoverer{db}
	a, b, c := start(t, "k", ca), start(t, "k", cb), start(t, "k", cc)
	pa.setTarget(a.ln.Addr().String())
	pc.setTarget(c.ln.Addr().String())
	ev := a.Events(t.Context())

	// b dials a and c at their own addresses (addresses alone, as from
	// discovery.Static); a and c learn of each other from b's member
	// lists and link through the proxies.
	reportB := <-db
	for _, n := range []*Node{a, c} {
		ap := netip.MustParseAddrPort(n.ln.Addr().String())
		reportB(discovery.Event{Kind: discovery.Found, Peer: discovery.Peer{Addrs: []netip.AddrPort{ap}}})
	}
	waitFor(t, "a full mesh of three", 10*time.Second, func() bool { return settled(a, b, c) })
	waitFor(t, "a reaching c through b too", 10*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.reachableLocked("c")
	})

	// The way between a and c stops for longer than a link may be made
	// again: a sees c go down, and still reaches it through b.
	pa.stall()
	pc.stall()
	pa.cut()
	pc.cut()
	for {
		if e := nextEvent(t, ev, PeerDown); e.Peer == "c" {
			break
		}
	}
	pa.resume()
	pc.resume()
	for {
		if e := nextEvent(t, ev, PeerUp); e.Peer == "c" {
			break
		}
	}
	waitFor(t, "a full mesh of three again", 10*time.Second, func() bool { return settled(a, b, c) })
}

// blackHole returns an address on loopback where no connection is ever
// answered, as at a peer gone without a goodbye or beyond a partition:
// a listener whose accept queue (of one) is full and never accepted
// from, so that the kernel drops every SYN and a dial waits until it
// times out.
func blackHole(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue, then make sure a dial is not answered.
	for filled := false; !filled; {
		c, err := net.DialTimeout("tcp", ap.String(), 100*time.Millisecond)
		if err != nil {
			filled = true
			continue
		}
		t.Cleanup(func() { c.Close() })
	}
	return ap
}

// TestSilentPeersHoldNoDialTurns: peers that do not answer (gone
// without a goodbye, or beyond a partition, while discovery still
// reports them: two minutes by default) do not keep a node from linking
// to one that does. Their dials used to hold their turns (MaxDials)
// until they timed out: after a hundred nodes on two hosts were split
// 50|50, each node's dials to the fifty of the far side held every turn,
// and a link lost within a side was not made again for a minute.
func TestSilentPeersHoldNoDialTurns(t *testing.T) {
	leakcheck.Goroutines(t)
	hole := blackHole(t)
	d := make(scripted)
	cfg := testConfig("a")
	cfg.MaxDials = 2
	cfg.HandshakeTimeout = 10 * time.Second
	cfg.Discovery = []discovery.Discoverer{d}
	a := start(t, "silent", cfg)
	report := <-d
	ev := a.Events(t.Context())
	// Twenty peers that never answer, then one that does: a has the
	// lower id, so it dials each at once.
	for i := range 20 {
		report(discovery.Event{Kind: discovery.Found, Peer: discovery.Peer{ID: fmt.Sprintf("b%02d", i), Addrs: []netip.AddrPort{hole}}})
	}
	live := start(t, "silent", testConfig("z"))
	report(discovery.Event{Kind: discovery.Found, Peer: discovery.Peer{ID: "z", Addrs: live.Addrs()}})
	for {
		select {
		case e := <-ev:
			switch e.Kind {
			case PeerUp:
				if e.Peer == "z" {
					return
				}
			case LinkFailed:
				t.Fatalf("a dial to a silent peer timed out (%v) before the peer that answers was linked: the silent peers' dials held the turns", e.Err)
			}
		case <-time.After(time.Minute):
			t.Fatal("neither linked nor failed in a minute")
		}
	}
}

// TestDialTurn: a dial's turn given back leaves the bound as it was; one
// taken again after it was given back waits for a free turn, and gives
// up when none frees in time; one ended with the dial's outcome moves
// the bound, timed from when it was taken.
func TestDialTurn(t *testing.T) {
	p := newDialPacer(32, 2*time.Second)
	p.late = func() time.Duration { return 0 }
	stop := make(chan struct{})
	tn := &turn{p: p}
	if !tn.take(stop, nil) || !tn.holds() || p.active != 1 {
		t.Fatalf("take: held %v, active %d", tn.holds(), p.active)
	}
	tn.giveBack()
	if tn.holds() || p.active != 0 || p.limit != startDials {
		t.Fatalf("given back: held %v, active %d, limit %d (want %d)", tn.holds(), p.active, p.limit, startDials)
	}
	tn.giveBack() // not held: nothing
	if p.active != 0 {
		t.Fatalf("a second give-back: active %d", p.active)
	}
	// Every other turn taken: taking it again waits, and expires.
	for p.active < p.limit {
		p.acquire(stop, nil)
	}
	expire := make(chan time.Time)
	close(expire)
	if tn.take(stop, expire) {
		t.Fatal("a turn taken past the bound")
	}
	p.giveBack()
	if !tn.take(stop, expire) {
		t.Fatal("no turn while one was free")
	}
	tn.end(true, false)
	if tn.holds() || p.limit != startDials+1 {
		t.Fatalf("ended with a quick link: held %v, limit %d, want %d", tn.holds(), p.limit, startDials+1)
	}
	tn.take(stop, nil)
	tn.end(false, true)
	if p.limit != (startDials+1)/2 {
		t.Fatalf("ended with a timeout: limit %d, want %d", p.limit, (startDials+1)/2)
	}
	tn.end(false, true) // not held: nothing
	if p.limit != (startDials+1)/2 {
		t.Fatalf("ended twice: limit %d", p.limit)
	}
	// Dials to peers that did not answer: the maximum at once, apart
	// from the turns.
	active := p.active
	for range p.max {
		if !p.acquireSilent(stop) {
			t.Fatal("no place for a silent dial below the maximum")
		}
	}
	if p.active != active {
		t.Fatalf("silent dials took %d turns", p.active-active)
	}
	got := make(chan bool)
	go func() { got <- p.acquireSilent(stop) }()
	select {
	case <-got:
		t.Fatal("a silent dial past the maximum was let through")
	case <-time.After(20 * time.Millisecond):
	}
	p.releaseSilent()
	if !<-got {
		t.Fatal("no place for a silent dial once one freed")
	}
	close(stop)
	if p.acquireSilent(stop) {
		t.Fatal("a stopped wait got a place past the maximum")
	}
}

// TestDialPacerTurnsInOrder: a turn that frees goes to the dial that has
// waited longest, and to it alone, fallbacks last; a dial that gives up
// waiting takes no turn, even one granted as it gave up.
func TestDialPacerTurnsInOrder(t *testing.T) {
	p := newDialPacer(minDials, 2*time.Second)
	p.late = func() time.Duration { return 0 }
	stop := make(chan struct{})
	for range minDials {
		if !p.acquire(stop, nil) {
			t.Fatal("no turn free at the start")
		}
	}
	const waiters = 5
	got := make(chan int, waiters)
	for i := range waiters {
		go func() {
			if p.acquire(stop, nil) {
				got <- i
			}
		}()
		// (Each in turn: the next starts once this one waits.)
		waitFor(t, "a dial waiting", 5*time.Second, func() bool { return p.waitingDials() == i+1 })
	}
	for want := range waiters {
		p.giveBack()
		if i := <-got; i != want {
			t.Fatalf("turn %d went to the dial that came %d-th", want, i)
		}
		select {
		case i := <-got:
			t.Fatalf("one freed turn woke dial %d too", i)
		default:
		}
	}
	// A fallback dial (to a lower id, which dials this node itself)
	// waits behind a dial that came after it.
	order := make(chan string, 2)
	go func() {
		if p.acquireAs(true, stop, nil) {
			order <- "fallback"
		}
	}()
	waitFor(t, "a fallback waiting", 5*time.Second, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.fallbacks) == 1 })
	go func() {
		if p.acquire(stop, nil) {
			order <- "dial"
		}
	}()
	waitFor(t, "a dial waiting", 5*time.Second, func() bool { return p.waitingDials() == 1 })
	p.giveBack()
	if first := <-order; first != "dial" {
		t.Fatalf("a freed turn went to the %s first", first)
	}
	p.giveBack()
	<-order
	// A dial that gives up: its place goes, and the turns stay counted.
	expire := make(chan time.Time)
	gaveUp := make(chan bool)
	go func() { gaveUp <- p.acquire(stop, expire) }()
	waitFor(t, "a dial waiting", 5*time.Second, func() bool { return p.waitingDials() == 1 })
	close(expire)
	if <-gaveUp {
		t.Fatal("a dial that gave up took a turn")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiting) != 0 || p.active != p.limit {
		t.Fatalf("after a dial gave up: %d waiting, %d turns taken of %d", len(p.waiting), p.active, p.limit)
	}
}

// waitingDials returns how many dials wait for a turn.
func (p *dialPacer) waitingDials() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting)
}
