//go:build race

package examples

// raceEnabled: the tests build the examples with the race detector too.
const raceEnabled = true
