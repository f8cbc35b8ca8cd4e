package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPrintTableFailedRuns(t *testing.T) {
	within := func(r *row) bool { return r.tail() <= 3000 }
	tests := []struct {
		name string
		row  row
		want []string // cells of the row's line, in order
	}{
		{"every run formed in time",
			row{name: "N=100", unit: "ms", samples: []float64{2000, 2500}, target: "≤ 3000 ms", check: within},
			[]string{"N=100", "2", "2250 ms", "2500 ms", "≤ 3000 ms", "yes"}},
		{"a failed run misses the target whatever the others",
			row{name: "N=100", unit: "ms", samples: []float64{2000}, failed: []error{errors.New("least-linked node 60 of 99 peers")}, target: "≤ 3000 ms", check: within},
			[]string{"N=100 (1 of 2 runs failed: least-linked node 60 of 99 peers)", "2", "2000 ms", "2000 ms", "≤ 3000 ms", "no"}},
		{"every run failed",
			row{name: "N=200", unit: "ms", failed: []error{errors.New("least-linked node 16 of 199 peers")}, target: "≤ 10000 ms", check: within},
			[]string{"N=200", "1", "every run failed: least-linked node 16 of 199 peers", "≤ 10000 ms", "no"}},
		{"a measure that failed as a whole is not judged",
			row{name: "N=100", unit: "ms", err: errors.New("needs a private network namespace"), target: "≤ 3000 ms", check: within},
			[]string{"N=100", "0", "failed: needs a private network namespace", "≤ 3000 ms", "-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			printTable(&b, []*row{&tt.row})
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			if len(lines) != 3 {
				t.Fatalf("table has %d lines, want a header, a rule and the row:\n%s", len(lines), b.String())
			}
			var cells []string
			for _, c := range strings.Split(strings.Trim(lines[2], "|"), "|") {
				if c = strings.TrimSpace(c); c != "" {
					cells = append(cells, c)
				}
			}
			if strings.Join(cells, " | ") != strings.Join(tt.want, " | ") {
				t.Errorf("row reads\n  %s\nwant\n  %s", strings.Join(cells, " | "), strings.Join(tt.want, " | "))
			}
		})
	}
}

// A default run of the scale group must end within 10 minutes, however
// far the mesh is from its targets: the formation runs of 100 nodes and
// more, failing at their limits, leave at least half of that to the rest.
func TestDefaultFormationBounded(t *testing.T) {
	counts, err := parseForm(defaultForm)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{10, 50, 100, 200}; !slices.Equal(counts, want) {
		t.Fatalf("default -form is %v, want %v", counts, want)
	}
	var worst time.Duration
	for _, n := range counts {
		if n >= 100 {
			worst += time.Duration(formationRuns(n, 10)) * formLimit(n)
		}
	}
	if worst > 5*time.Minute {
		t.Errorf("formation runs of 100 nodes and more may take %v, want at most 5m", worst)
	}
}
