package registry

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFormation forms a full mesh of 100 registries over pipes, with
// the default timers, every pair linked at a random time within 2 s, and
// reports the CPU it took and what it allocated: the registry's share of
// a mesh's formation, without the transport's. FORMATION_CPUPROFILE=FILE
// profiles the formation alone (not the nodes' start or close). Each call
// forms one mesh, whatever b.N (ns/op is its time shared over b.N): it
// takes seconds, and the CI's -benchtime=100x would make it minutes.
//
//	go test -run - -bench Formation -benchtime 1x ./registry
func BenchmarkFormation(b *testing.B) {
	const n = 100
	b.StopTimer()
	defaults := func(c *Config) { c.Heartbeat, c.Lifetime = 0, 0 }
	ns := make([]*node, n)
	for i := range ns {
		ns[i] = newNode(b, fmt.Sprintf("n%03d", i), defaults)
		ns[i].register(b, "x@1.0.0", 100+i, nil)
	}
	starts := linkSchedule(n, 2*time.Second, 1)
	tally := &frameTally{}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuNow()
	if f := os.Getenv("FORMATION_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		pprof.StartCPUProfile(out)
	}
	b.StartTimer()
	begin := time.Now()
	linkAll(b, ns, starts, tally)
	whole := func() bool {
		for _, nd := range ns {
			full := locked(nd, func(r *Registry) bool {
				if len(r.relayDue) > 0 || r.stateDue {
					return false
				}
				for _, o := range r.owners {
					if len(o.peers) != n-1 || len(o.records) != 1 {
						return false
					}
				}
				return len(r.owners) == n
			})
			if !full {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(time.Minute)
	for !whole() {
		if time.Now().After(deadline) {
			b.Fatal("no full mesh within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	pprof.StopCPUProfile()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric((cpuNow() - cpu0).Seconds(), "cpu-s")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/(1<<20), "MiB-alloc")
	b.ReportMetric(time.Since(begin).Seconds(), "s-formed")
	links := float64(len(starts))
	for t := range tally.frames {
		b.Logf("type %d: %.1f frames, %.1f KiB a link", t, float64(tally.frames[t].Load())/links, float64(tally.bytes[t].Load())/links/1024)
	}
	for _, nd := range ns {
		nd.Close()
	}
}

// cpuNow is the CPU time this process has used.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
