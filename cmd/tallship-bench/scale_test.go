package main

import "testing"

// The formation line's peer-down reasons count errors of one kind as one,
// most frequent first.
func TestReasons(t *testing.T) {
	counts := map[string]int{}
	for _, e := range []string{
		"link lost: transport: peer silent",
		"link lost: transport: peer silent",
		"transport: peer silent: 9bc36bda-747a-4583-ad13-323525aa655b found it silent, and the peers it asked too",
		"transport: peer silent: e3bfc57d-3a7e-476f-8ea1-909d89bdfbf0 found it silent, and the peers it asked too",
		"transport: peer silent: e3bfc57d-3a7e-476f-8ea1-909d89bdfbf0 found it silent, and the peers it asked too",
		"link lost: mesh: dial tcp 127.0.0.1:42873: i/o timeout\nmesh: dial tcp [::1]:42873: i/o timeout",
	} {
		counts[generic(e)]++
	}
	want := " (3 transport: peer silent: ID found it silent, and the peers it asked too; 2 link lost: transport: peer silent; …)"
	if got := reasons(counts, 2); got != want {
		t.Errorf("reasons = %q\nwant       %q", got, want)
	}
	if got := reasons(nil, 3); got != "" {
		t.Errorf("reasons of none = %q", got)
	}
	if got := generic("link lost: mesh: dial tcp 127.0.0.1:42873: i/o timeout\nmore"); got != "link lost: mesh: dial tcp ADDR: i/o timeout" {
		t.Errorf("generic = %q", got)
	}
}

// A formation runs in one process when the open-file limit allows it, and
// else in the fewest whose shares fit.
func TestProcessesWithin(t *testing.T) {
	for _, c := range []struct {
		n     int
		files uint64
		want  int
	}{
		{100, 20000, 1},   // 100 nodes take about 12,500
		{200, 20000, 3},   // 88 a process at most
		{200, 1 << 20, 1}, // a limit raised (root)
		{200, 1024, 200},  // one node a process, at worst
		{50, filesFor(50), 1},
	} {
		if got := processesWithin(c.n, c.files); got != c.want {
			t.Errorf("processesWithin(%d, %d) = %d, want %d", c.n, c.files, got, c.want)
		}
		if procs := processesWithin(c.n, c.files); procs > 1 {
			per := (c.n + procs - 1) / procs
			if need := uint64(per*(c.n-1) + 16*per + 1024); need > c.files && c.files > 1024+uint64(c.n+15) {
				t.Errorf("%d nodes in %d processes: %d a process take %d files, over %d", c.n, procs, per, need, c.files)
			}
		}
	}
}
