package transport

import (
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/loopback"
)

func TestPendingBytes(t *testing.T) {
	c, s := loopback.Pair(t)
	if n := pendingBytes(s); n != 0 {
		t.Fatalf("pending = %d before any write", n)
	}
	c.Write(make([]byte, 100))
	deadline := time.Now().Add(5 * time.Second)
	for pendingBytes(s) != 100 {
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d, want 100", pendingBytes(s))
		}
		time.Sleep(time.Millisecond)
	}
	if n := pendingBytes(&sealedConn{Conn: s}); n != 100 {
		t.Fatalf("through a sealed conn: pending = %d, want 100", n)
	}
}
