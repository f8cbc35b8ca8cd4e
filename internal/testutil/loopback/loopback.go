// Package loopback gives tests a connected pair of TCP connections on
// 127.0.0.1: nothing leaves the machine.
package loopback

import (
	"net"
	"testing"
)

// Pair returns the dialing and the accepting end of a new TCP connection
// on 127.0.0.1; both are closed when tb ends.
func Pair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}
