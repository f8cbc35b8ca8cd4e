package lag

import (
	"testing"
	"time"
)

func TestLagGauge(t *testing.T) {
	var g Gauge
	g.Observe(0, 10*time.Millisecond)
	g.Observe(500*time.Millisecond, 503*time.Millisecond)
	if got := g.Get(600 * time.Millisecond); got != 10*time.Millisecond {
		t.Fatalf("lag in the first window: %v, want 10ms", got)
	}
	g.Observe(1100*time.Millisecond, 1105*time.Millisecond)
	if got := g.Get(1500 * time.Millisecond); got != 10*time.Millisecond {
		t.Fatalf("lag in the second window: %v, want the first's 10ms", got)
	}
	if got := g.Get(2100 * time.Millisecond); got != 5*time.Millisecond {
		t.Fatalf("lag in the third window: %v, want the second's 5ms", got)
	}
	if got := g.Get(5 * time.Second); got != 0 {
		t.Fatalf("lag after quiet windows: %v, want 0", got)
	}
	g.Observe(6*time.Second, 5*time.Second) // early: no lag
	if got := g.Get(6 * time.Second); got != 0 {
		t.Fatalf("lag after an early run: %v, want 0", got)
	}
}

func TestStretch(t *testing.T) {
	at := Now()
	Process.Observe(at-300*time.Millisecond, at)
	if got := Stretch(time.Second); got < 1300*time.Millisecond || got > 4*time.Second {
		t.Fatalf("Stretch(1s) while 300 ms late: %v, want 1.3 s to 4 s", got)
	}
	Process.Observe(at-time.Hour, at)
	if got := Stretch(time.Second); got != 4*time.Second {
		t.Fatalf("Stretch(1s) while an hour late: %v, want 4s (MaxStretch more)", got)
	}
}
