//go:build race

package e2e_test

// raceEnabled: the race detector slows a program five to ten times.
const raceEnabled = true
