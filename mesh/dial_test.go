package mesh

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/leakcheck"
)

// TestDialsArePaced: a node that discovers many peers at once dials at
// most MaxDials of them at a time, and still tries every one. The peers
// here accept and never answer, so each dial lasts its HandshakeTimeout.
func TestDialsArePaced(t *testing.T) {
	leakcheck.Goroutines(t)
	const peers, maxDials = 10, 3
	type try struct {
		peer int
		at   time.Time
	}
	tried := make(chan try, 100)
	var wg sync.WaitGroup
	var addrs []string
	var lns []net.Listener
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	})
	for i := range peers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				tried <- try{i, time.Now()}
				wg.Go(func() {
					io.Copy(io.Discard, c) // until the dialer gives up
					c.Close()
				})
			}
		})
	}
	cfg := testConfig("pacer")
	cfg.MaxDials = maxDials
	cfg.HandshakeTimeout = 300 * time.Millisecond
	cfg.Discovery = []discovery.Discoverer{&discovery.Static{Addrs: addrs}}
	start(t, "paced", cfg)
	seen := map[int]bool{}
	var first time.Time
	early := 0 // dials that began before the first could have ended
	deadline := time.After(10 * time.Second)
	for len(seen) < peers {
		select {
		case tr := <-tried:
			seen[tr.peer] = true
			if first.IsZero() {
				first = tr.at
			}
			if tr.at.Sub(first) < cfg.HandshakeTimeout*3/4 {
				early++
			}
		case <-deadline:
			t.Fatalf("%d of %d peers dialed in 10 s", len(seen), peers)
		}
	}
	if early > maxDials {
		t.Errorf("%d dials began within the first dial's handshake timeout, want at most MaxDials = %d", early, maxDials)
	}
}
