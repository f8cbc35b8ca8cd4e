package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/mesh"
)

// memProfile, when set, names the file the heap profile of the idle links
// is written to; their goroutines go to the same name + ".goroutines".
var memProfile string

// measureIdleLinks links `links` pairs of nodes, lets each side send one
// message (so that both message streams exist, as in any mesh of three
// nodes or more, where peer exchange uses them), waits for the links to go
// idle and reports the heap, stack and goroutines they added, per side.
func measureIdleLinks(heap, stack, gor *row, links int) {
	fail := func(err error) { heap.err, stack.err, gor.err = err, err, err }
	cfg := mesh.Config{Listen: "127.0.0.1:0", Discovery: mesh.NoDiscovery, Logger: quiet}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes := make([]*mesh.Node, 0, 2*links)
	defer func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(func() { n.Close() })
		}
		wg.Wait()
	}()
	for i := range 2 * links {
		n, err := cfg.Join(ctx, fmt.Sprintf("idle-%d", i/2))
		if err != nil {
			fail(err)
			return
		}
		nodes = append(nodes, n)
	}
	before := settled()
	for i := 0; i < len(nodes); i += 2 {
		if _, err := nodes[i].Connect(ctx, nodes[i+1].Addrs()[0].String()); err != nil {
			fail(err)
			return
		}
	}
	msg := make([]byte, 64)
	for i := 0; i < len(nodes); i += 2 {
		a, b := nodes[i], nodes[i+1]
		for len(b.Peers()) == 0 {
			if ctx.Err() != nil {
				fail(errors.New("pairs did not link"))
				return
			}
			time.Sleep(time.Millisecond)
		}
		if err := a.Send(ctx, b.ID(), msg); err != nil {
			fail(err)
			return
		}
		if err := b.Send(ctx, a.ID(), msg); err != nil {
			fail(err)
			return
		}
		if _, err := a.Receive(ctx); err != nil {
			fail(err)
			return
		}
		if _, err := b.Receive(ctx); err != nil {
			fail(err)
			return
		}
	}
	time.Sleep(time.Second) // registry sync, first heartbeats
	after := settled()
	if memProfile != "" {
		writeProfile("heap", memProfile)
		writeProfile("goroutine", memProfile+".goroutines")
	}
	h, s, g := after.perSide(before, 2*links)
	heap.samples = append(heap.samples, h)
	stack.samples = append(stack.samples, s)
	gor.samples = append(gor.samples, g)
}

// writeProfile writes the named pprof profile to file (goroutines as
// text, with their stacks counted); a failure is said on stderr.
func writeProfile(name, file string) {
	debug := 0
	if name == "goroutine" {
		debug = 1
	}
	f, err := os.Create(file)
	if err == nil {
		err = errors.Join(pprof.Lookup(name).WriteTo(f, debug), f.Close())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tallship-bench:", err)
	}
}

// memory is what the process holds once its garbage is collected.
type memory struct {
	heap, stack uint64 // live heap (HeapAlloc after a GC) and stacks in use, bytes
	goroutines  int
}

// settled waits for work in flight to end and reads what the process
// holds once its garbage is collected (twice, so that what finalizers
// freed goes too). It reads again every half second while the goroutines
// or the heap still fall, for at most half a minute: the nodes of an
// earlier run may still be closing, and their timers hold memory for
// seconds after their goroutines end (a 100-node mesh: 217 MB a second
// after Close, 26 MB four seconds later); what they free would otherwise
// come off the next figure.
func settled() memory {
	read := func() memory {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return memory{heap: m.HeapAlloc, stack: m.StackInuse, goroutines: runtime.NumGoroutine()}
	}
	time.Sleep(500 * time.Millisecond)
	m := read()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		next := read()
		falling := next.goroutines < m.goroutines || next.heap < m.heap-m.heap/100
		m = next
		if !falling {
			break
		}
	}
	return m
}

// perSide is what m holds beyond before, shared over sides link sides:
// heap and stack in KiB, and goroutines.
func (m memory) perSide(before memory, sides int) (heap, stack, goroutines float64) {
	per := func(now, then uint64) float64 { return (float64(now) - float64(then)) / float64(sides) }
	return per(m.heap, before.heap) / 1024, per(m.stack, before.stack) / 1024, per(uint64(m.goroutines), uint64(before.goroutines))
}

// idleWatch counts, over windows of an idle mesh, the mDNS packets sent
// (all UDP leaving a socket in the namespace, counted by an nftables rule,
// and those heard by a passive multicast listener) and the process's CPU
// time.
type idleWatch struct {
	nft      bool
	heard    atomic.Int64
	listener *net.UDPConn
	wg       sync.WaitGroup
}

func startIdleWatch() (*idleWatch, error) {
	w := &idleWatch{}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, err
	}
	w.listener, err = net.ListenMulticastUDP("udp4", lo, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
	if err != nil {
		return nil, fmt.Errorf("passive mDNS listener: %w", err)
	}
	w.wg.Go(func() {
		buf := make([]byte, 9000)
		for {
			if _, _, err := w.listener.ReadFromUDP(buf); err != nil {
				return
			}
			w.heard.Add(1)
		}
	})
	w.nft = nftRun("add table inet tsbench_udp\n"+
		"add chain inet tsbench_udp out { type filter hook output priority 0; policy accept; }\n"+
		"add rule inet tsbench_udp out meta l4proto udp counter\n") == nil
	return w, nil
}

func (w *idleWatch) stop() {
	w.listener.Close()
	w.wg.Wait()
	if w.nft {
		nftRun("delete table inet tsbench_udp\n")
	}
}

// sent reads the nftables counter of UDP packets sent.
func (w *idleWatch) sent() int64 {
	if !w.nft {
		return -1
	}
	out, err := exec.Command("nft", "list", "chain", "inet", "tsbench_udp", "out").CombinedOutput()
	if err != nil {
		return -1
	}
	m := regexp.MustCompile(`counter packets (\d+)`).FindSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meanTarget is the target of a row of mDNS packets sent: at most
// perSecond packets a second per node, on average over the whole watch.
func meanTarget(perSecond float64) string {
	return "≤ " + strconv.FormatFloat(perSecond, 'g', -1, 64) + " /s (mean)"
}

// measureIdleMesh counts mDNS packets and CPU over windows of an idle
// mesh of n nodes. The sent row meets its target, meanTarget(maxSent),
// when the mean over the whole watch is at most maxSent. A CPU profile of
// the windows goes to profile when it is not empty.
func measureIdleMesh(sent, heard, cpu *row, n int, maxSent float64, settle, window time.Duration, windows int, profile string) {
	w, err := startIdleWatch()
	if err != nil {
		sent.err, heard.err, cpu.err = err, err, err
		return
	}
	defer w.stop()
	time.Sleep(settle)
	sAll, hAll, tAll := w.sent(), w.heard.Load(), time.Now()
	if profile != "" {
		if stop := startCPUProfile(profile); stop != nil {
			defer stop()
		}
	}
	for range windows {
		s0, h0, c0, t0 := w.sent(), w.heard.Load(), cpuTime(), time.Now()
		time.Sleep(window)
		s1, h1, c1, t1 := w.sent(), w.heard.Load(), cpuTime(), time.Now()
		secs := t1.Sub(t0).Seconds()
		if s0 >= 0 && s1 >= 0 {
			sent.samples = append(sent.samples, float64(s1-s0)/secs/float64(n))
		}
		heard.samples = append(heard.samples, float64(h1-h0)/secs/float64(n))
		cpu.samples = append(cpu.samples, 100*float64(c1-c0)/float64(t1.Sub(t0)))
	}
	// Nodes query in step (they started together), so the packets come in
	// bursts: the mean over the whole watch is what the target bounds.
	secs := time.Since(tAll).Seconds()
	if s := w.sent(); s >= 0 && sAll >= 0 {
		mean := float64(s-sAll) / secs / float64(n)
		sent.note = fmt.Sprintf("per %v window; mean %.2f /s over %.0f s", window, mean, secs)
		sent.check = func(*row) bool { return mean <= maxSent }
	}
	heard.note = fmt.Sprintf("passive listener, per %v window; mean %.2f /s", window, float64(w.heard.Load()-hAll)/secs/float64(n))
	if !w.nft {
		sent.err = errors.New("nft unavailable: cannot count unicast answers")
	}
}

// nftRun runs an nftables script.
func nftRun(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// measureBusy runs one CPU burner per core for d while the mesh g idles,
// and counts the peer-down events its nodes report meanwhile (and for a
// second after). Every one is a false alarm.
func measureBusy(r *row, g *group, d time.Duration) {
	marks := g.marks()
	var burners []*child
	for range runtime.NumCPU() {
		c, err := startHelper("burn", "-for", d.String())
		if err != nil {
			r.err = err
			break
		}
		burners = append(burners, c)
	}
	for _, c := range burners {
		c.wait()
	}
	time.Sleep(time.Second)
	down := 0
	for i, b := range g.nodes {
		down += b.count(marks[i], isDown)
	}
	if r.err == nil {
		r.samples = append(r.samples, float64(down))
	}
}

// startCPUProfile starts a CPU profile to file and returns what stops it,
// nil when it could not start (said on stderr).
func startCPUProfile(file string) (stop func()) {
	f, err := os.Create(file)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tallship-bench:", err)
		return nil
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "tallship-bench:", err)
		}
	}
}
