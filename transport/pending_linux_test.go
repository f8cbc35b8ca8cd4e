package transport

import (
	"net"
	"testing"
	"time"
)

func TestPendingBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	defer s.Close()
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
