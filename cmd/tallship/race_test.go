//go:build race

package main

// raceEnabled: the tests build the CLI with the race detector too.
const raceEnabled = true
