// Command child is the program the CLI tests run under "tallship run": it
// serves on the port it is given (its last argument, also in $PORT),
// answering each connection with its pid and port, and exits after
// $CHILD_EXIT_AFTER (if set) with status 3, or at SIGTERM or SIGINT with
// status 0. It prints one line when it serves and one when it stops.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "child: want a port as the last argument")
		os.Exit(2)
	}
	port := os.Args[len(os.Args)-1]
	if env := os.Getenv("PORT"); env != port {
		fmt.Fprintf(os.Stderr, "child: $PORT %q differs from the argument %q\n", env, port)
		os.Exit(2)
	}
	// Signals first: the test may send one as soon as the line below.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintf(os.Stderr, "child: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("child serving pid=%d port=%s\n", os.Getpid(), port)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "pid=%d port=%s\n", os.Getpid(), port)
			c.Close()
		}
	}()
	var expire <-chan time.Time
	if d, err := time.ParseDuration(os.Getenv("CHILD_EXIT_AFTER")); err == nil {
		expire = time.After(d)
	}
	select {
	case sig := <-sigs:
		fmt.Printf("child stopping pid=%d on %v\n", os.Getpid(), sig)
		os.Exit(0)
	case <-expire:
		fmt.Printf("child exiting pid=%d after %s\n", os.Getpid(), os.Getenv("CHILD_EXIT_AFTER"))
		os.Exit(3)
	}
}
