package main

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The scale measures (issue 17): formation up to 200 nodes, and a
// 100-node mesh's joins, registers, kills, idle cost and memory. Every
// node runs in this one process with the default Config, as in the
// 20-node mesh measures.

// formationRuns is how many runs the formation measure makes of n nodes
// when runs are asked of each measure: all of them up to 20 nodes, half
// (at least 2) up to 50, and beyond that runs·20/n (at least 1), since a
// run of 100 nodes or more may take its whole formLimit.
func formationRuns(n, runs int) int {
	switch {
	case n <= 20:
		return runs
	case n <= 50:
		return max(2, runs/2)
	}
	return max(1, runs*20/n)
}

// formLimit is how long a formation run of n nodes may take before it
// counts as failed: 60 s, and 0.6 s a node beyond 100 (120 s for 200).
func formLimit(n int) time.Duration {
	return max(60*time.Second, time.Duration(n)*600*time.Millisecond)
}

// measureFormation starts n nodes together, runs times, and records how
// long each run took to form the full mesh (every node with n−1 peers); a
// run not formed within formLimit(n) is a failed run of the row, with how
// far it got. Each run prints a line: when shares of the link ends were
// up, the peer-downs meanwhile (links lost and redone, and why) and the
// CPU the nodes took.
//
// The nodes run in this process when its open-file limit allows them
// (filesFor); else in as few processes of this binary as fit it, on the
// same cores (processesFor), and the row's note says so.
func measureFormation(r *row, tag string, n, runs int) {
	limit := formLimit(n)
	procs, files := processesFor(n)
	if procs > 1 {
		r.note = fmt.Sprintf("in %d processes: one may hold %d open files, and %d nodes in one take about %d", procs, files, n, filesFor(n))
	}
	for i := range runs {
		cluster := fmt.Sprintf("form%d-%s-%d", n, tag, i)
		var f formRun
		var err error
		if procs == 1 {
			f, err = formHere(cluster, n, limit)
		} else {
			f, err = formSplit(cluster, n, procs, limit)
		}
		if err != nil {
			r.err = err
			return
		}
		outcome := "full mesh in " + roundTime(f.full)
		if f.err != nil {
			r.failed = append(r.failed, f.err)
			outcome = "no full mesh: " + f.err.Error()
		} else {
			r.samples = append(r.samples, ms(f.full))
		}
		shares := []float64{0.1, 0.25, 0.5, 0.75, 0.9, 0.99}
		var ups []string
		for i, at := range endsUp(f.ups, n*(n-1), shares...) {
			took := "never"
			if at >= 0 {
				took = roundTime(at)
			}
			ups = append(ups, fmt.Sprintf("%.0f%% %s", 100*shares[i], took))
		}
		where := ""
		if procs > 1 {
			where = fmt.Sprintf(" in %d processes", procs)
		}
		fmt.Printf("formation N=%d%s, run %d of %d: %s; link ends up: %s; link ends made %d for %d; %d handshakes refused; %d peer-downs%s; CPU %.2f cores\n",
			n, where, i+1, runs, outcome, strings.Join(ups, ", "), f.made, n*(n-1), f.refused, f.downs, reasons(f.why, 3), float64(f.cpu)/float64(f.took))
		time.Sleep(200 * time.Millisecond)
	}
}

// formRun is what one formation run found.
type formRun struct {
	err   error           // why the mesh did not form in time; nil when it did
	full  time.Duration   // when it formed, from the start
	took  time.Duration   // from the start to its end (formed, or given up)
	ups   []time.Duration // when each link end was first up, from the start
	downs int             // peer-downs
	made  uint64          // links taken in, by either end (each link counts twice)
	// refused is how many handshakes the nodes refused (all reasons).
	refused uint64
	why     map[string]int // peer-downs by reason (generic)
	cpu     time.Duration  // CPU the nodes' processes took meanwhile
}

// formHere runs a formation of n nodes in this process.
func formHere(cluster string, n int, limit time.Duration) (formRun, error) {
	c0 := cpuTime()
	g, t0, err := startMesh(cluster, n, mdnsConfig())
	if err != nil {
		return formRun{}, err
	}
	defer g.closeAll()
	var f formRun
	end, err := g.waitFull(g.nodes, n-1, limit)
	if err != nil {
		end = time.Now()
		f.err = err
	}
	f.full, f.took = end.Sub(t0), end.Sub(t0)
	if p := os.Getenv("FORM_ALLOCS"); p != "" {
		writeProfile("allocs", p)
	}
	f.cpu = cpuTime() - c0
	f.ups = g.firstUps(t0)
	f.downs, f.why = g.downs()
	f.made, f.refused = g.handshakes()
	return f, nil
}

// reasons lists the most frequent of counted reasons, at most top of
// them, as " (count reason, …)"; nothing when none was counted.
func reasons(counts map[string]int, top int) string {
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		if c := cmp.Compare(counts[b], counts[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	if len(keys) == 0 {
		return ""
	}
	var parts []string
	for _, k := range keys[:min(top, len(keys))] {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	if len(keys) > top {
		parts = append(parts, "…")
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	addrRE = regexp.MustCompile(`\[?[0-9a-f.:]+\]?:[0-9]+`)
)

// generic is the first line of an error's text, its ids and addresses
// replaced by "ID" and "ADDR", so that errors of one kind count as one.
func generic(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return addrRE.ReplaceAllString(uuidRE.ReplaceAllString(s, "ID"), "ADDR")
}

// roundTime prints d to a precision that suits it.
func roundTime(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// measureMeshMemory records what the idle mesh of n nodes holds per link
// side: the live heap (HeapAlloc after a GC) and the goroutines of the
// whole process, less those of before (taken before the mesh was made),
// shared over its n·(n−1) link sides. What the nodes hold apart from
// their links (discovery, registry) counts against the links too.
// With -memprofile FILE, the heap profile goes to FILE.mesh.
func measureMeshMemory(heap, gor *row, before memory, n int) {
	h, _, g := settled().perSide(before, n*(n-1))
	heap.samples = append(heap.samples, h)
	gor.samples = append(gor.samples, g)
	if memProfile != "" {
		writeProfile("heap", memProfile+".mesh")
	}
}
