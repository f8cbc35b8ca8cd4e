package transport

import (
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// TestThinStream: a link's TCP connection resends at a steady pace
// (TCP_THIN_LINEAR_TIMEOUTS), looked up through the sealed wrapper.
func TestThinStream(t *testing.T) {
	c, _ := loopback.Pair(t)
	thinOn := func() int {
		v := -1
		tcpRaw(c).Control(func(fd uintptr) {
			v, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_THIN_LINEAR_TIMEOUTS)
		})
		return v
	}
	if v := thinOn(); v != 0 {
		t.Fatalf("TCP_THIN_LINEAR_TIMEOUTS = %d on a new connection, want 0", v)
	}
	thinStream(&sealedConn{Conn: c})
	if v := thinOn(); v != 1 {
		t.Fatalf("TCP_THIN_LINEAR_TIMEOUTS = %d after thinStream, want 1", v)
	}
}

// TestSendState: the kernel's count of bytes the peer acknowledged grows
// with what was written, and nothing is being resent on loopback.
func TestSendState(t *testing.T) {
	c, s := loopback.Pair(t)
	before, resending, ok := sendState(&sealedConn{Conn: c})
	if !ok || resending {
		t.Fatalf("sendState = %d, %v, %v on a new connection", before, resending, ok)
	}
	c.Write(make([]byte, 1000))
	if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		acked, resending, _ := sendState(c)
		if acked >= before+1000 && !resending {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("acknowledged %d bytes (resending %v), want %d", acked-before, resending, 1000)
		}
		time.Sleep(time.Millisecond) // polling against the deadline
	}
}
