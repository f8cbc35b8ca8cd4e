package registry

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
)

// serveName answers every connection with name and a newline.
func serveName(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, name)
		c.Close()
	}
}

func dialName(t *testing.T, n *node, query string) string {
	t.Helper()
	c, err := n.Dial(t.Context(), query)
	if err != nil {
		t.Fatalf("Dial(%q): %v", query, err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return line[:len(line)-1]
}

func TestListenAndDial(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	connectSynced(t, a, b)
	ln1, err := a.Listen(t.Context(), Service{Role: "echo@1.2.0", Meta: map[string]string{"n": "1"}}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln1.Close()
	go serveName(ln1, "one")
	rec := ln1.Record()
	if rec.Host != "127.0.0.1" || rec.Port != ln1.Addr().(*net.TCPAddr).Port || rec.Meta["n"] != "1" {
		t.Fatalf("listener record %+v for %v", rec, ln1.Addr())
	}
	if _, err := a.Register(Service{Role: "other@1.0.0", Port: rec.Port}); !errors.Is(err, ErrPortTaken) {
		t.Fatalf("registering the listener's port again: %v", err)
	}

	// b finds it by query (waiting for it) and connects.
	if got := dialName(t, b, "echo@^1"); got != "one" {
		t.Fatalf("dialed %q", got)
	}

	// Two instances: successive dials spread over both.
	ln2, err := a.Listen(t.Context(), Service{Role: "echo@1.3.0"}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serveName(ln2, "two")
	waitFor(t, "two instances", func() bool { return len(b.ids(t, "echo")) == 2 })
	seen := map[string]int{}
	for range 6 {
		seen[dialName(t, b, "echo")]++
	}
	if seen["one"] != 3 || seen["two"] != 3 {
		t.Fatalf("dials spread %v", seen)
	}

	// A dead instance is skipped.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()
	a.register(t, "echo@1.4.0", deadPort, nil)
	waitFor(t, "three instances", func() bool { return len(b.ids(t, "echo")) == 3 })
	for range 6 {
		if got := dialName(t, b, "echo"); got != "one" && got != "two" {
			t.Fatalf("dialed %q", got)
		}
	}
	if _, err := b.Dial(t.Context(), "echo@1.4.0"); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("Dial(dead) = %v, want ErrNoInstance", err)
	}

	// Closing a listener frees its record everywhere.
	if err := ln2.Close(); err != nil {
		t.Fatal(err)
	}
	ln2.Close()
	for _, n := range []*node{a, b} {
		waitFor(t, "freed", func() bool {
			recs, _ := n.Services("echo@1.3.0")
			return len(recs) == 0
		})
	}
	if _, err := net.Dial("tcp", ln2.Addr().String()); err == nil {
		t.Fatal("listener still accepts after Close")
	}
}

func TestListenBadRole(t *testing.T) {
	a := newNode(t, "a")
	if _, err := a.Listen(t.Context(), Service{Role: "bad role"}, "127.0.0.1:0"); !errors.Is(err, ErrBadRole) {
		t.Fatalf("Listen = %v", err)
	}
	if _, err := a.Listen(t.Context(), Service{Role: "x@1.0.0", Meta: map[string]string{"k": string(make([]byte, 5000))}}, "127.0.0.1:0"); !errors.Is(err, ErrMetadataTooLarge) {
		t.Fatalf("Listen = %v", err)
	}
	if _, err := a.Listen(t.Context(), Service{Role: "x@1.0.0", Port: 80}, "127.0.0.1:0"); !errors.Is(err, ErrBadService) {
		t.Fatalf("Listen with a Port = %v, want ErrBadService", err)
	}
	var _ io.Closer = (*Listener)(nil)
	var _ net.Listener = (*Listener)(nil)
}
