// Package leakcheck checks in tests that every goroutine a test started has
// ended.
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

// Goroutines fails t if, once its cleanups have run, more goroutines run
// than before it started (waiting up to 5 s for them to end). Call it
// first in a test, so that its check runs after every other cleanup.
func Goroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(5 * time.Millisecond) // polling against the deadline
		}
	})
}
