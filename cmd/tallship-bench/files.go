package main

import (
	"fmt"
	"syscall"
)

// filesFor is about how many descriptors n nodes take in one process once
// they form a whole mesh: each link takes one at both of its ends, here
// both in this process, so n(n−1) for the links, and a few more for each
// node's listener, mDNS sockets and links being made. A machine running
// one node of such a mesh takes about n − 1.
func filesFor(n int) uint64 { return uint64(n*(n-1) + 16*n + 1024) }

// raiseFileLimit raises the process's open-file limit to what n nodes
// take (filesFor), the hard limit too when this process may (root, up to
// the kernel's fs.nr_open). It returns the soft limit in force after, and
// an error when that stays below what n take: a process out of
// descriptors fails its accepts and dials, and the mesh cannot form.
func raiseFileLimit(n int) (uint64, error) {
	need := filesFor(n)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= need {
		return lim.Cur, nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	if err == nil {
		return need, nil
	}
	// Up to the hard limit, at least.
	if lim.Cur < lim.Max {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim.Max, Max: lim.Max}) == nil {
			lim.Cur = lim.Max
		}
	}
	return lim.Cur, fmt.Errorf("open files limited to %d, and %d nodes in one process take about %d (setrlimit: %v)", lim.Cur, n, need, err)
}
