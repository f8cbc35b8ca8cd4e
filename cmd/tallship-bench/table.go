package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// row is one line of the table: the samples of one measure over the runs,
// and, where one applies, the raw-TCP reference measured in the same runs.
type row struct {
	name    string
	unit    string    // how samples are printed: see format
	samples []float64 // one per run
	raw     []float64 // raw-TCP reference, one per run, or nil
	// higher: a higher figure is better (rates); else lower is (times).
	higher bool
	target string
	// check says whether the target is met, from the row's figures; nil
	// when the row has no target.
	check func(r *row) bool
	note  string
	// failed holds the runs that did not finish (a mesh that did not form
	// in its time): they count as runs, and a row with one misses its
	// target whatever its samples.
	failed []error
	err    error // the measure failed as a whole; printed instead of figures
}

// median of the samples.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// tail is the bad end of the samples: the 99th percentile of a time, the
// 1st of a rate.
func (r *row) tail() float64 {
	if r.higher {
		return percentile(r.samples, 1)
	}
	return percentile(r.samples, 99)
}

// ratio is the median over runs of sample/raw, for rows with a reference.
func (r *row) ratio() float64 {
	if len(r.raw) == 0 || len(r.raw) != len(r.samples) {
		return math.NaN()
	}
	rs := make([]float64, len(r.raw))
	for i := range r.raw {
		rs[i] = r.samples[i] / r.raw[i]
	}
	return median(rs)
}

// format prints v in the row's unit.
func format(v float64, unit string) string {
	if math.IsNaN(v) {
		return "-"
	}
	switch unit {
	case "ms":
		switch {
		case v < 1:
			return fmt.Sprintf("%.2f ms", v)
		case v < 100:
			return fmt.Sprintf("%.1f ms", v)
		}
		return fmt.Sprintf("%.0f ms", v)
	case "µs":
		return fmt.Sprintf("%.1f µs", v)
	case "MB/s":
		return fmt.Sprintf("%.0f MB/s", v)
	case "/s":
		switch {
		case v >= 1e6:
			return fmt.Sprintf("%.2f M/s", v/1e6)
		case v >= 1e3:
			return fmt.Sprintf("%.1f k/s", v/1e3)
		}
		return fmt.Sprintf("%.2f /s", v)
	case "KiB":
		return fmt.Sprintf("%.1f KiB", v)
	case "%":
		return fmt.Sprintf("%.1f%%", v)
	case "":
		if v == math.Trunc(v) {
			return fmt.Sprintf("%g", v)
		}
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

// printTable writes the table in Markdown, its columns aligned.
func printTable(w io.Writer, rows []*row) {
	cells := [][]string{{"measure", "runs", "median", "p99 (rates: p1)", "raw TCP", "vs raw", "target", "met"}}
	for _, r := range rows {
		name := r.name
		if r.note != "" {
			name += " (" + r.note + ")"
		}
		runs := fmt.Sprint(len(r.samples) + len(r.failed))
		if r.err != nil {
			cells = append(cells, []string{name, runs, "failed: " + oneLine(r.err.Error()), "", "", "", r.target, "-"})
			continue
		}
		if len(r.failed) > 0 && len(r.samples) == 0 {
			met := ""
			if r.check != nil {
				met = "no"
			}
			cells = append(cells, []string{name, runs, "every run failed: " + oneLine(r.failed[0].Error()), "", "", "", r.target, met})
			continue
		}
		if len(r.failed) > 0 {
			name += fmt.Sprintf(" (%d of %s runs failed: %s)", len(r.failed), runs, oneLine(r.failed[0].Error()))
		}
		rawCol, ratioCol := "", ""
		if len(r.raw) > 0 {
			rawCol = format(median(r.raw), r.unit)
			ratioCol = fmt.Sprintf("%.0f%%", 100*r.ratio())
		}
		met := ""
		if r.check != nil && len(r.samples) > 0 {
			met = "no"
			if len(r.failed) == 0 && r.check(r) {
				met = "yes"
			}
		}
		cells = append(cells, []string{name, runs,
			format(median(r.samples), r.unit), format(r.tail(), r.unit), rawCol, ratioCol, r.target, met})
	}
	widths := make([]int, len(cells[0]))
	for _, line := range cells {
		for i, c := range line {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	pad := func(s string, n int) string { return s + strings.Repeat(" ", n-utf8.RuneCountInString(s)) }
	for i, line := range cells {
		var b strings.Builder
		for j, c := range line {
			b.WriteString("| " + pad(c, widths[j]) + " ")
		}
		fmt.Fprintln(w, b.String()+"|")
		if i == 0 {
			b.Reset()
			for _, n := range widths {
				b.WriteString("| " + strings.Repeat("-", n) + " ")
			}
			fmt.Fprintln(w, b.String()+"|")
		}
	}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if utf8.RuneCountInString(s) > 80 {
		s = string([]rune(s)[:77]) + "..."
	}
	return s
}
