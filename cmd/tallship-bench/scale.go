package main

import (
	"cmp"
	"fmt"
	"maps"
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
// long each took to form the full mesh over mDNS. A run that has not
// formed within formLimit(n) is a failed run of the row, with how far it
// got. Each run prints a line: when shares of the link ends were up, the
// peer-downs meanwhile (links lost and redone) and the process's CPU.
func measureFormation(r *row, tag string, n, runs int) {
	limit := formLimit(n)
	for i := range runs {
		c0 := cpuTime()
		g, t0, err := startMesh(fmt.Sprintf("form%d-%s-%d", n, tag, i), n, mdnsConfig())
		if err != nil {
			r.err = err
			return
		}
		end, err := g.waitFull(g.nodes, n-1, limit)
		if err != nil {
			end = time.Now()
			r.failed = append(r.failed, err)
		} else {
			r.samples = append(r.samples, ms(end.Sub(t0)))
		}
		cores := float64(cpuTime()-c0) / float64(end.Sub(t0))
		downs, why := 0, map[string]int{}
		for _, b := range g.nodes {
			downs += b.count(0, func(e entry) bool {
				if !isDown(e) {
					return false
				}
				reason := "goodbye"
				if e.Err != nil {
					reason = generic(e.Err.Error())
				}
				why[reason]++
				return true
			})
		}
		shares := []float64{0.5, 0.9, 0.99}
		var ups []string
		for i, at := range g.linkEndsUp(t0, shares...) {
			took := "never"
			if at >= 0 {
				took = roundTime(at)
			}
			ups = append(ups, fmt.Sprintf("%.0f%% %s", 100*shares[i], took))
		}
		outcome := "full mesh in " + roundTime(end.Sub(t0))
		if err != nil {
			outcome = "no full mesh: " + err.Error()
		}
		fmt.Printf("formation N=%d, run %d of %d: %s; link ends up: %s; %d peer-downs%s; CPU %.2f cores\n",
			n, i+1, runs, outcome, strings.Join(ups, ", "), downs, reasons(why, 3), cores)
		g.closeAll()
		time.Sleep(200 * time.Millisecond)
	}
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
