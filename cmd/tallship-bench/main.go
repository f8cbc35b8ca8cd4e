// Command tallship-bench measures tallship against the targets of the
// specification's Performance table and prints one table: each measure's
// median and tail over repeated runs, its target, and, where one applies,
// the same work over raw TCP on loopback measured in the same run.
//
//	go run ./cmd/tallship-bench             full run (10–15 minutes)
//	go run ./cmd/tallship-bench -quick      short run
//	go run ./cmd/tallship-bench -runs 20    more runs per measure
//	go run ./cmd/tallship-bench -only link  run one group of measures
//	go run ./cmd/tallship-bench -only scale formation and a 100-node mesh (at most 10 minutes)
//	go run ./cmd/tallship-bench -only delivery  delivery at 10% frame loss, silent and killed peers (about 4 minutes)
//	go run ./cmd/tallship-bench -only sites     the registry across sites through NATS (under a minute)
//
// Other flags: -form (the node counts of the formation measure, by
// default 10, 50, 100 and 200; a run of N nodes that has not formed in
// 60 s, or 0.6 s a node beyond 100, counts as failed; N nodes run in one
// process unless its open-file limit is below the N(N−1) their links
// take, and then in as few processes as fit it), -cpuprofile,
// -idleprofile, -memprofile. TALLSHIP_BENCH_LOG=debug (or info, warn) sends the
// nodes' logs to stderr.
//
// It re-executes itself in a private network namespace (a new user
// namespace too when not root), so that its mDNS traffic never leaves the
// machine; without one it runs only the measures that use loopback alone.
// Nodes run with the default Config (mDNS discovery, default timers),
// except the link measures, which link two nodes on 127.0.0.1 with
// Connect.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-helper" {
		if err := runHelper(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "tallship-bench helper:", err)
			os.Exit(1)
		}
		return
	}
	enterNamespace()
	os.Exit(run(os.Args[1:]))
}

// cpuProfile is -cpuprofile: the form helpers profile their runs too
// (formSplit).
var cpuProfile string

// defaultForm is the node counts of the formation measure unless -form
// names others.
const defaultForm = "10,50,100,200"

// options of a run.
type options struct {
	runs  int
	quick bool
	only  string
	form  []int // node counts of the formation measure
}

func run(args []string) int {
	fs := flag.NewFlagSet("tallship-bench", flag.ContinueOnError)
	var o options
	fs.BoolVar(&o.quick, "quick", false, "short run: fewer runs, shorter windows")
	fs.IntVar(&o.runs, "runs", 0, "runs per measure (default 10, 3 with -quick)")
	fs.StringVar(&o.only, "only", "", "run only the measures whose group name contains this (link, memory, formation, mesh, scale, delivery, sites)")
	fs.StringVar(&memProfile, "memprofile", "", "write a heap profile of the idle links to this file (and of the idle 100-node mesh to this file + .mesh)")
	form := fs.String("form", defaultForm, "node counts for the formation measure, comma-separated")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	idleprofile := fs.String("idleprofile", "", "write a CPU profile of the idle 100-node mesh's windows (scale group) to this file; not with -cpuprofile")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuprofile != "" && *idleprofile != "" {
		fmt.Fprintln(os.Stderr, "tallship-bench: -cpuprofile and -idleprofile: one profile at a time")
		return 2
	}
	cpuProfile = *cpuprofile
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var err error
	if o.form, err = parseForm(*form); err != nil {
		fmt.Fprintln(os.Stderr, "tallship-bench: -form:", err)
		return 2
	}
	if o.runs <= 0 {
		o.runs = 10
		if o.quick {
			o.runs = 3
		}
	}
	inNS := netns.Inside()
	fmt.Println(machine())
	fmt.Printf("runs: %d%s; network: %s\n", o.runs, map[bool]string{true: " (quick)"}[o.quick], nsStatus())
	want := func(group string) bool { return o.only == "" || strings.Contains(group, o.only) }
	most := 0
	if want("formation") || want("scale") {
		most = slices.Max(append(slices.Clone(o.form), 100))
	} else if want("mesh") {
		most = 20
	}
	if most > 0 {
		if files, err := raiseFileLimit(most); err != nil {
			fmt.Printf("open files: %v\n", err)
		} else {
			fmt.Printf("open files: limit %d (%d nodes in one process take about %d)\n", files, most, filesFor(most))
		}
	}
	fmt.Printf("load average at start: %s\n\n", loadavg())
	start := time.Now()

	tag := uuid.NewString()[:8]
	// The rows, in the order of the specification's table.
	var formRows, meshRows, linkRows, memRows, idleRows, scaleRows, deliveryRows, siteRows []*row
	var msgs, pp *row // the 64 B message rows, of the link group and the delivery group
	dur := func(full, quick time.Duration) time.Duration {
		if o.quick {
			return quick
		}
		return full
	}
	noNS := func(r *row) *row {
		r.err = fmt.Errorf("needs a private network namespace (%s)", nsStatus())
		return r
	}

	// The scale group holds the formation rows too.
	if want("formation") || want("scale") {
		targets := map[int]float64{10: 300, 50: 2000, 100: 3000, 200: 10000}
		for _, n := range o.form {
			r := &row{name: fmt.Sprintf("N=%d nodes started together → full mesh (mDNS)", n), unit: "ms"}
			if t, ok := targets[n]; ok {
				r.target = "≤ " + format(t, "ms") + ", every run"
				r.check = func(r *row) bool { return r.tail() <= t }
			}
			if inNS {
				measureFormation(r, tag, n, formationRuns(n, o.runs))
			} else {
				noNS(r)
			}
			formRows = append(formRows, r)
		}
	}

	if want("mesh") {
		const n = 20
		join := &row{name: "new node → linked to all of a 20-node mesh", unit: "ms", target: "p50 ≤ 100 ms, p99 ≤ 500 ms",
			check: func(r *row) bool { return median(r.samples) <= 100 && r.tail() <= 500 }}
		register := &row{name: "register → visible on all (N=20)", unit: "ms", target: "p99 ≤ 10 ms",
			check: func(r *row) bool { return r.tail() <= 10 }}
		leave := &row{name: "graceful leave → gone everywhere", unit: "ms", target: "≤ 50 ms",
			check: func(r *row) bool { return r.tail() <= 50 }}
		kill := &row{name: "kill -9 → node and services gone everywhere", unit: "ms", target: "≤ 300 ms",
			check: func(r *row) bool { return r.tail() <= 300 }}
		cut := &row{name: "silent peer, link cut (nft drop) → gone everywhere", unit: "ms", target: "≤ 1.5 s",
			check: func(r *row) bool { return r.tail() <= 1500 }}
		freeze := &row{name: "silent peer, host frozen (SIGSTOP) → gone everywhere", unit: "ms", target: "≤ 1.5 s",
			check: func(r *row) bool { return r.tail() <= 1500 }}
		busy := &row{name: fmt.Sprintf("false peer-downs, %d CPU burners, 20 idle nodes", runtime.NumCPU()), unit: "", target: "0",
			check: func(r *row) bool { return percentile(r.samples, 100) == 0 }}
		const maxSent = 0.2
		sent := &row{name: "mDNS packets sent /s per node, idle 20-node mesh", unit: "/s", target: meanTarget(maxSent)}
		burstQM := &row{name: "1000-query burst (QM, from 5353) → answers per record, N=20", unit: "", target: "≤ 10",
			check: func(r *row) bool { return percentile(r.samples, 100) <= 10 }}
		burstLegacy := &row{name: "1000-query burst (legacy querier) → answers per record, N=20", unit: "", target: "≤ 10",
			check: func(r *row) bool { return percentile(r.samples, 100) <= 10 }}
		heard := &row{name: "mDNS multicast heard /s per node, idle 20-node mesh", unit: "/s"}
		cpu := &row{name: "CPU of an idle 20-node mesh", unit: "%", note: "of one core, whole process"}
		all := []*row{join, register, leave, kill, cut, freeze, busy, sent, heard, cpu, burstQM, burstLegacy}
		if inNS {
			cluster := "mesh-" + tag
			cutLAN, err := newCutLAN()
			if err != nil {
				cut.err = fmt.Errorf("the cut's LAN: %w", err)
			}
			onMesh(all, cluster, n, 60*time.Second, func(g *group) {
				measureIdleMesh(sent, heard, cpu, n, maxSent, 5*time.Second, dur(30*time.Second, 5*time.Second), map[bool]int{false: 3, true: 2}[o.quick], "")
				measureBurst(burstQM, burstLegacy, n)
				for range map[bool]int{false: 2, true: 1}[o.quick] {
					measureBusy(busy, g, dur(5*time.Second, 3*time.Second))
				}
				measureChurn(join, register, leave, g, cluster, 2*o.runs)
				measureKill(kill, g, cluster, o.runs)
				measureCut(cut, g, cutLAN, cluster, max(2, o.runs/2))
				measureFreeze(freeze, g, cluster, max(2, o.runs/2))
			})
			if cutLAN != nil {
				cutLAN.close()
			}
		} else {
			for _, r := range all {
				noNS(r)
			}
		}
		meshRows, idleRows = []*row{join, register, leave, kill, cut, freeze, busy}, []*row{sent, heard, cpu, burstQM, burstLegacy}
	}

	if want("scale") {
		const n = 100
		join := &row{name: "new node → linked to all of a 100-node mesh", unit: "ms", target: "p50 ≤ 200 ms",
			check: func(r *row) bool { return median(r.samples) <= 200 }}
		register := &row{name: "register → visible on all (N=100)", unit: "ms", target: "p99 ≤ 20 ms",
			check: func(r *row) bool { return r.tail() <= 20 }}
		leave := &row{name: "graceful leave → gone everywhere (N=100)", unit: "ms", target: "≤ 50 ms",
			check: func(r *row) bool { return r.tail() <= 50 }}
		kill := &row{name: "kill -9 → node and services gone everywhere (N=100)", unit: "ms", target: "(N=20: ≤ 300 ms)"}
		cpu := &row{name: "CPU of an idle 100-node mesh", unit: "%", note: "of one core, whole process", target: "≤ 10%",
			check: func(r *row) bool { return r.tail() <= 10 }}
		const maxSent = 0.5
		sent := &row{name: "mDNS packets sent /s per node, idle 100-node mesh", unit: "/s", target: meanTarget(maxSent)}
		heard := &row{name: "mDNS multicast heard /s per node, idle 100-node mesh", unit: "/s"}
		heap := &row{name: "heap per link side, idle 100-node mesh", unit: "KiB", target: "≤ 32 KiB",
			note:  fmt.Sprintf("live heap after GC less the process's before the mesh, over its %d link sides", n*(n-1)),
			check: func(r *row) bool { return median(r.samples) <= 32 }}
		gor := &row{name: "goroutines per link side, idle 100-node mesh", unit: "", target: "≤ 5",
			check: func(r *row) bool { return median(r.samples) <= 5 }}
		scaleRows = []*row{join, register, leave, kill, cpu, sent, heard, heap, gor}
		if inNS {
			cluster := "scale-" + tag
			before := settled()
			// Twice a formation run's time: these rows measure a mesh
			// that has formed, however long that took.
			onMesh(scaleRows, cluster, n, 2*formLimit(n), func(g *group) {
				measureIdleMesh(sent, heard, cpu, n, maxSent, 10*time.Second, dur(20*time.Second, 5*time.Second), map[bool]int{false: 3, true: 2}[o.quick], *idleprofile)
				measureMeshMemory(heap, gor, before, n)
				measureChurn(join, register, leave, g, cluster, max(2, o.runs/2))
				measureKill(kill, g, cluster, max(2, o.runs/4))
			})
		} else {
			for _, r := range scaleRows {
				noNS(r)
			}
		}
	}

	if want("link") {
		tp32 := &row{name: "one stream's throughput, 32 KiB writes", unit: "MB/s", higher: true, target: "≥ 80% of raw TCP",
			check: func(r *row) bool { return r.ratio() >= 0.80 }}
		tp1m := &row{name: "one stream's throughput, 1 MiB writes", unit: "MB/s", higher: true, target: "≥ 95% of raw TCP",
			check: func(r *row) bool { return r.ratio() >= 0.95 }}
		tpSec := &row{name: "one stream's throughput, 32 KiB writes, cluster secret", unit: "MB/s", higher: true, target: ""}
		msgs = &row{name: "64 B messages one way (Send → Receive)", unit: "/s", higher: true, target: "≥ 100% of raw TCP",
			check: func(r *row) bool { return r.ratio() >= 1 }}
		pp = &row{name: "64 B ping-pong, messages (Send/Receive)", unit: "/s", higher: true, target: "≥ 50% of raw TCP",
			check: func(r *row) bool { return r.ratio() >= 0.5 }}
		ppStream := &row{name: "64 B ping-pong, one stream", unit: "/s", higher: true, target: "≥ 45% of raw TCP",
			check: func(r *row) bool { return r.ratio() >= 0.45 }}
		d := dur(time.Second, 300*time.Millisecond)
		measureThroughput(tp32, o.runs, 32<<10, d, "")
		measureThroughput(tp1m, o.runs, 1<<20, d, "")
		measureThroughput(tpSec, o.runs, 32<<10, d, "bench-secret")
		measureMessages(msgs, o.runs, int(dur(200_000, 50_000)))
		measurePingPong(pp, o.runs, int(dur(20_000, 5_000)))
		measureStreamPingPong(ppStream, o.runs, int(dur(20_000, 5_000)))
		linkRows = []*row{tp32, tp1m, tpSec, msgs, pp, ppStream}
	}

	// The delivery group (issue 18) prints a table of its own after the
	// main one; its two message rows are the link group's when that ran.
	if want("delivery") {
		const n = 20
		freeze := &row{name: "silent peer, host frozen (SIGSTOP) → gone everywhere (N=20)", unit: "ms", target: "≤ 1.5 s",
			check: func(r *row) bool { return r.tail() <= 1500 }}
		cut := &row{name: "silent peer, link cut (nft drop) → gone everywhere (N=20)", unit: "ms", target: "≤ 1.5 s",
			check: func(r *row) bool { return r.tail() <= 1500 }}
		kill := &row{name: "kill -9 → gone everywhere (N=20)", unit: "ms", target: "≤ 300 ms",
			check: func(r *row) bool { return r.tail() <= 300 }}
		window := dur(60*time.Second, 15*time.Second)
		zero := func(r *row) bool { return percentile(r.samples, 100) == 0 }
		downs := &row{name: fmt.Sprintf("false peer-downs at %d%% frame loss for %.0f s, with traffic", lossPercent, window.Seconds()), unit: "", target: "0", check: zero}
		lost := &row{name: "same run: messages lost (Send accepted, never received)", unit: "", target: "0", check: zero}
		dup := &row{name: "same run: messages received twice", unit: "", target: "0", check: zero}
		order := &row{name: "same run: messages received out of order", unit: "", target: "0", check: zero}
		if inNS {
			cutLAN, err := newCutLAN()
			if err != nil {
				cut.err = fmt.Errorf("the cut's LAN: %w", err)
			}
			onMesh([]*row{freeze, cut, kill}, "delivery-"+tag, n, 60*time.Second, func(g *group) {
				measureFreeze(freeze, g, "delivery-"+tag, max(2, o.runs/2))
				measureCut(cut, g, cutLAN, "delivery-"+tag, max(2, o.runs/2))
				measureKill(kill, g, "delivery-"+tag, o.runs)
			})
			if cutLAN != nil {
				cutLAN.close()
			}
			measureLoss(downs, lost, dup, order, "loss-"+tag, window)
		} else {
			for _, r := range []*row{freeze, cut, kill, downs, lost, dup, order} {
				noNS(r)
			}
		}
		if msgs == nil {
			msgs = &row{name: "64 B messages one way (Send → Receive)", unit: "/s", higher: true, target: "≥ 100% of raw TCP",
				check: func(r *row) bool { return r.ratio() >= 1 }}
			pp = &row{name: "64 B ping-pong, messages (Send/Receive)", unit: "/s", higher: true, target: "≥ 50% of raw TCP",
				check: func(r *row) bool { return r.ratio() >= 0.5 }}
			measurePingPong(pp, o.runs, int(dur(20_000, 5_000)))
			measureMessages(msgs, o.runs, int(dur(200_000, 50_000)))
		}
		deliveryRows = []*row{freeze, cut, kill, downs, lost, dup, order, pp, msgs}
	}

	// The sites group (issue 21) prints a table of its own too. It uses
	// loopback alone.
	if want("sites") {
		siteRows = sitesRows(o.runs, o.quick)
	}

	if want("memory") {
		heap := &row{name: "heap per idle link, per side (100 links)", unit: "KiB", target: "≤ 32 KiB",
			check: func(r *row) bool { return median(r.samples) <= 32 }}
		stack := &row{name: "stack per idle link, per side (100 links)", unit: "KiB"}
		gor := &row{name: "goroutines per idle link, per side (100 links)", unit: "", target: "≤ 5",
			check: func(r *row) bool { return median(r.samples) <= 5 }}
		measureIdleLinks(heap, stack, gor, 100)
		memRows = []*row{heap, stack, gor}
	}

	var rows []*row
	if len(meshRows) > 0 {
		rows = append(rows, meshRows[0])
	}
	rows = append(rows, formRows...)
	if len(meshRows) > 0 {
		rows = append(rows, meshRows[1:]...)
	}
	rows = append(rows, linkRows...)
	rows = append(rows, memRows...)
	rows = append(rows, idleRows...)
	rows = append(rows, scaleRows...)

	if len(rows) > 0 {
		printTable(os.Stdout, rows)
	}
	if len(deliveryRows) > 0 {
		if len(rows) > 0 {
			fmt.Println()
		}
		fmt.Println("Delivery (issue 18):")
		fmt.Println()
		printTable(os.Stdout, deliveryRows)
	}
	if len(siteRows) > 0 {
		if len(rows) > 0 || len(deliveryRows) > 0 {
			fmt.Println()
		}
		fmt.Println("Sites through NATS (issue 21):")
		fmt.Println()
		printTable(os.Stdout, siteRows)
	}
	fmt.Printf("\ntook %v; load average at end: %s\n", time.Since(start).Round(time.Second), loadavg())
	return 0
}

// parseForm reads -form: node counts, comma-separated, each at least 2.
func parseForm(s string) ([]int, error) {
	var counts []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err != nil || n < 2 {
			return nil, fmt.Errorf("bad node count %q", f)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// machine describes the machine and toolchain.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("machine: %d CPUs (%s), %s %s/%s", runtime.NumCPU(), model, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func nsStatus() string {
	if !netns.Inside() {
		return fmt.Sprintf("no private namespace: %v", nsErr)
	}
	if out, err := exec.Command("nft", "--version").Output(); err == nil {
		return "private namespace (loopback only; " + string(bytes.TrimSpace(out)) + ")"
	}
	return "private namespace (loopback only; no nft: the link-cut and packet-count measures fail)"
}
