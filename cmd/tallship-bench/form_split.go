package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"
)

// A mesh of N nodes in one process holds both ends of each of its links,
// N(N−1) open files (filesFor), which the process may not be allowed: a
// machine whose hard limit is 20,000, and that does not let even root
// raise it, fits 100 nodes and not 200. Beyond what fits, the formation
// runs in several processes of this binary (helper mode "form"), each
// with a share of the nodes, on the same cores; a machine running one
// node of such a mesh holds N − 1.

// processesFor returns how many processes a formation of n nodes needs
// under this process's open-file limit (processesWithin), and that limit.
func processesFor(n int) (procs int, files uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1, 0
	}
	return processesWithin(n, lim.Cur), lim.Cur
}

// processesWithin returns the fewest processes that n nodes fit in, each
// allowed files open files.
func processesWithin(n int, files uint64) int {
	if files >= filesFor(n) {
		return 1
	}
	// A process of m nodes holds m(n−1) link ends, and its nodes' own
	// files (see filesFor).
	m := max(1, (int(files)-1024)/(n+15))
	return (n + m - 1) / m
}

// formReport is what a form helper tells, as JSON lines on its stdout:
// first when its nodes have every peer or the limit passed (Full, or
// Least and Missing), then, when asked (a line on its stdin), what its
// run saw.
type formReport struct {
	Full    time.Duration   `json:"full,omitempty"` // when its last node had every peer, from the start
	Least   int             `json:"least"`
	Missing int             `json:"missing"`
	Ups     []time.Duration `json:"ups,omitempty"` // each link end's first up, from the start
	Downs   int             `json:"downs"`
	Made    uint64          `json:"made"`    // links its nodes took in (mesh.Stats.LinksMade)
	Refused uint64          `json:"refused"` // handshakes its nodes refused
	Why     map[string]int  `json:"why,omitempty"`
	CPU     time.Duration   `json:"cpu"`
	Err     string          `json:"err,omitempty"` // a failure to start
}

// formSplit runs a formation of n nodes over procs helper processes, all
// started at one time. With -cpuprofile FILE, each helper profiles its
// run to FILE.<cluster>.<i>.
func formSplit(cluster string, n, procs int, limit time.Duration) (formRun, error) {
	at := time.Now().Add(time.Second) // for the helpers to make their nodes
	type helper struct {
		c       *child
		reports chan formReport
	}
	var hs []helper
	defer func() {
		for _, h := range hs {
			h.c.stdin.Close()
			for range h.reports { // what is left, so that the helper ends
			}
			h.c.cmd.Wait()
		}
	}()
	for i := range procs {
		m := n/procs + map[bool]int{true: 1}[i < n%procs]
		args := []string{"-cluster", cluster, "-nodes", strconv.Itoa(m), "-total", strconv.Itoa(n),
			"-limit", limit.String(), "-at", strconv.FormatInt(at.UnixNano(), 10)}
		if cpuProfile != "" {
			args = append(args, "-cpuprofile", fmt.Sprintf("%s.%s.%d", cpuProfile, cluster, i))
		}
		c, err := startHelper("form", args...)
		if err != nil {
			return formRun{}, err
		}
		h := helper{c: c, reports: make(chan formReport, 2)}
		hs = append(hs, h)
		go func() {
			defer close(h.reports)
			sc := bufio.NewScanner(c.stdout)
			sc.Buffer(nil, 64<<20)
			for sc.Scan() {
				var r formReport
				if json.Unmarshal(sc.Bytes(), &r) != nil {
					r.Err = "unreadable report: " + sc.Text()
				}
				h.reports <- r
			}
		}()
	}
	next := func(h helper) (formReport, error) {
		select {
		case r, ok := <-h.reports:
			switch {
			case !ok:
				return r, errors.New("form helper ended without a report")
			case r.Err != "":
				return r, errors.New(r.Err)
			}
			return r, nil
		case <-time.After(time.Until(at) + limit + time.Minute):
			return formReport{}, errors.New("form helper silent")
		}
	}
	var f formRun
	least, missing := n-1, 0
	for _, h := range hs {
		r, err := next(h)
		if err != nil {
			return formRun{}, err
		}
		f.full = max(f.full, r.Full)
		least, missing = min(least, r.Least), missing+r.Missing
	}
	f.took = f.full
	if missing > 0 {
		f.took = limit
		f.err = fmt.Errorf("%w after %v: least-linked node %d of %d peers, %d of %d nodes short", errTimeout, limit, least, n-1, missing, n)
	}
	for _, h := range hs {
		// Every process is done: each reports what it saw, before any
		// closes its nodes (the deferred close of stdin), whose peers
		// elsewhere would count that as peer-downs.
		if _, err := io.WriteString(h.c.stdin, "report\n"); err != nil {
			return formRun{}, err
		}
	}
	f.why = map[string]int{}
	for _, h := range hs {
		r, err := next(h)
		if err != nil {
			return formRun{}, err
		}
		f.ups = append(f.ups, r.Ups...)
		f.downs += r.Downs
		f.made += r.Made
		f.refused += r.Refused
		for k, v := range r.Why {
			f.why[k] += v
		}
		f.cpu += r.CPU
	}
	return f, nil
}

// helperForm is the "form" helper: it makes -nodes nodes of -cluster,
// starts them at -at (Unix nanoseconds), waits until each has -total − 1
// peers or -limit has passed, and reports (formReport); then, once a line
// comes on its stdin, what its nodes saw; once its stdin closes, it closes
// them.
func helperForm(args []string) error {
	fs := flag.NewFlagSet("form", flag.ContinueOnError)
	cluster := fs.String("cluster", "", "cluster name")
	nodes := fs.Int("nodes", 1, "nodes in this process")
	total := fs.Int("total", 1, "nodes in the mesh")
	limit := fs.Duration("limit", time.Minute, "how long the mesh may take to form")
	atNS := fs.Int64("at", 0, "when to start the nodes, Unix nanoseconds")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) error {
		out.Encode(formReport{Err: err.Error()})
		return err
	}
	g := newGroup()
	defer g.closeAll()
	for range *nodes {
		if _, err := g.add(*cluster, mdnsConfig()); err != nil {
			return fail(err)
		}
	}
	t0 := time.Unix(0, *atNS)
	time.Sleep(time.Until(t0))
	c0 := cpuTime()
	if *profile != "" {
		if stop := startCPUProfile(*profile); stop != nil {
			defer stop()
		}
	}
	if _, err := g.startAll(g.nodes); err != nil {
		return fail(err)
	}
	var r formReport
	end, err := g.waitFull(g.nodes, *total-1, *limit-time.Since(t0))
	if err == nil {
		r.Full = end.Sub(t0)
	} else {
		r.Least, r.Missing = g.short(*total - 1)
	}
	if err := out.Encode(r); err != nil {
		return err
	}
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil { // "report": every process is done
		return err
	}
	r = formReport{Ups: g.firstUps(t0), CPU: cpuTime() - c0}
	r.Downs, r.Why = g.downs()
	r.Made, r.Refused = g.handshakes()
	if err := out.Encode(r); err != nil {
		return err
	}
	io.Copy(io.Discard, in) // until every process has reported
	return nil
}
