//go:build race

package mesh

// raceEnabled: the race detector slows a program five to ten times.
const raceEnabled = true
