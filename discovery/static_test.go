package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

func TestStaticBadAddrs(t *testing.T) {
	for _, addr := range []string{
		"", "nohost", "1.2.3.4", ":80", "host:", "host:0", "host:99999", "host:nosuchservice",
		"bad host:80", "0.0.0.0:80", "[::]:80", "224.0.0.1:80", "[fe80::1:80", "-x.example:80",
	} {
		t.Run(addr, func(t *testing.T) {
			s := &Static{Addrs: []string{"10.0.0.1:7", addr}}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := s.Run(ctx, Self{}, func(ev Event) { t.Errorf("event %v before the error", ev) })
			if !errors.Is(err, ErrBadAddr) {
				t.Errorf("Run = %v, want ErrBadAddr", err)
			}
		})
	}
}

func TestStaticReports(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		self     Self
		// rounds in 12.5 s: how many times each address is reported.
		rounds int
		want   []string
	}{
		{"default interval", 0, Self{}, 3, []string{"[10.0.0.1:7]", "[[fe80::1%eth0]:8]", "[10.0.0.2:80]"}},
		{"every second", time.Second, Self{}, 13, []string{"[10.0.0.1:7]", "[[fe80::1%eth0]:8]", "[10.0.0.2:80]"}},
		{"once", -1, Self{}, 1, []string{"[10.0.0.1:7]", "[[fe80::1%eth0]:8]", "[10.0.0.2:80]"}},
		{"self skipped", 0, Self{Addrs: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:7")}}, 3, []string{"[[fe80::1%eth0]:8]", "[10.0.0.2:80]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := newRecorder()
				s := &Static{Addrs: []string{"10.0.0.1:7", "[fe80::1%eth0]:8", "10.0.0.2:http"}, Interval: tc.interval}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error)
				go func() { done <- s.Run(ctx, tc.self, rec.report) }()
				time.Sleep(12*time.Second + 500*time.Millisecond)
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("Run = %v, want nil", err)
				}
				evs := rec.snapshot()
				if len(evs) != tc.rounds*len(tc.want) {
					t.Fatalf("%d events, want %d rounds of %d: %v", len(evs), tc.rounds, len(tc.want), evs)
				}
				for i, ev := range evs {
					want := tc.want[i%len(tc.want)]
					if ev.Kind != Found || ev.Source != "static" || ev.Peer.ID != "" || fmt.Sprint(ev.Peer.Addrs) != want {
						t.Errorf("event %d = %+v, want Found %s from static", i, ev, want)
					}
				}
			})
		})
	}
}

// TestStaticResolves looks up names; "localhost" comes from /etc/hosts,
// the other name fails, and fails again each round. The failing look-up
// would ask a DNS server: it runs in the private namespace, where none is
// reachable.
func TestStaticResolves(t *testing.T) {
	netns.Require(t)
	rec := newRecorder()
	s := &Static{Addrs: []string{"localhost:7", "no-such-host.invalid:8"}, Interval: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, Self{}, rec.report) }()
	rec.waitFor(t, 10*time.Second, "two rounds", func(evs []Event) bool { return len(evs) >= 4 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	evs := rec.snapshot()
	found, failed := evs[0], evs[1]
	if found.Kind != Found || len(found.Peer.Addrs) == 0 || !found.Peer.Addrs[0].Addr().IsLoopback() || found.Peer.Addrs[0].Port() != 7 {
		t.Errorf("localhost: %+v, want Found at a loopback address, port 7", found)
	}
	if failed.Err == nil || failed.Kind != 0 {
		t.Errorf("bad name: %+v, want an error event", failed)
	}
}
