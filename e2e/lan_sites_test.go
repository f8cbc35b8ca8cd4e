package e2e_test

// Sites through NATS (issue 21) across real processes: two sites, each
// a segment of a private LAN on which its nodes find each other over
// mDNS, that multicast does not cross (a partition on the bridge between
// the sites' hosts, as between two LANs), and a host that both reach,
// running a NATS server (the harness's -nats-server). Nothing leaves the
// test's private namespace.

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/lan"
	"github.com/tallship-go/tallship/internal/testutil/node"
)

// seesRecord returns nil when every proc shows the record id with site,
// or, gone set, when none shows it.
func seesRecord(procs []*lan.Proc, id, site string, gone bool) error {
	for _, p := range procs {
		recs, err := p.Services("")
		if err != nil {
			return err
		}
		i := slices.IndexFunc(recs, func(r node.Record) bool { return r.ID == id })
		switch {
		case gone && i >= 0:
			return fmt.Errorf("%s still shows %s", p, id)
		case !gone && i < 0:
			return fmt.Errorf("%s does not show %s", p, id)
		case !gone && recs[i].Site != site:
			return fmt.Errorf("%s shows %s of site %q, want %q", p, id, recs[i].Site, site)
		}
	}
	return nil
}

// TestLANSites: the registry spans both sites, each LAN staying a mesh
// of its own, and messages cross them; a node killed in one site is gone
// from the other within its lifetime; a site cut off from NATS keeps its
// LAN registry, and the sites reconverge (and messages cross again) when
// it is back.
func TestLANSites(t *testing.T) {
	lan.RequireNFT(t)
	l := lan.New(t, 6)
	hosts := l.Hosts()
	hostsA, hostsB, hostN := hosts[0:3], hosts[3:5], hosts[5]
	l.Partition(hostsA, hostsB)
	srv := l.Start(hostN, node.Config{NATSServer: "listen=" + hostN.IP.String() + ":0"})
	url := "nats://" + srv.Addrs[0]
	cluster := lanCluster(t)
	var a, b []*lan.Proc
	for _, h := range hostsA {
		a = append(a, l.Start(h, node.Config{Cluster: cluster, NATS: url, Site: "a"}))
	}
	for _, h := range hostsB {
		b = append(b, l.Start(h, node.Config{Cluster: cluster, NATS: url, Site: "b"}))
	}
	lan.Eventually(t, lanMeshWait, "site a a mesh of its own", func() error { return lan.FullMesh(a...) })
	lan.Eventually(t, lanMeshWait, "site b a mesh of its own", func() error { return lan.FullMesh(b...) })

	ra := a[0].Register("web@1.0.0")
	rk := a[2].Register("web@1.0.1") // of the node killed below
	rb := b[0].Register("db@1.0.0")
	start := time.Now()
	lan.Eventually(t, lanChangeWait, "a's records in b", func() error {
		return cmpErr(seesRecord(b, ra.ID, "a", false), seesRecord(b, rk.ID, "a", false))
	})
	lan.Eventually(t, lanChangeWait, "b's record in a", func() error { return seesRecord(a, rb.ID, "b", false) })
	lan.Eventually(t, lanChangeWait, "a's own records in a", func() error { return seesRecord(a, ra.ID, "a", false) })
	t.Logf("figure: records crossed both ways within %v", time.Since(start).Round(time.Millisecond))
	// Messages cross too, both ways, over NATS.
	sendAcross(t, a[0], b[0], "hello from a")
	sendAcross(t, b[1], a[2], "hello from b")
	if err := lan.FullMesh(a...); err != nil { // still: nobody linked across
		t.Fatal(err)
	}

	// kill -9 in a: gone from b within the lifetime (LocalConfig:
	// 500 ms, heartbeat 100 ms), and the messages it did not acknowledge
	// (sent while it was frozen) counted.
	killedID := a[2].ID
	a[2].Freeze()
	for i := range 3 {
		if err := b[0].Send(a[2].ID, fmt.Sprintf("unheard %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	killed := a[2].Kill()
	a = a[:2]
	gone := lan.Eventually(t, lanDownBound, "the killed node's record gone from b", func() error { return seesRecord(b, rk.ID, "", true) })
	t.Logf("figure: kill -9 in site a → its record gone from site b in %v (lifetime 500 ms)", time.Since(killed).Round(time.Millisecond))
	if gone > 500*time.Millisecond+100*time.Millisecond+700*time.Millisecond {
		t.Errorf("gone after %v: beyond the lifetime", gone)
	}
	if ev, ok := b[0].WaitEvent(lanDownBound, func(e node.Event) bool { return e.Ev == "remote-down" && e.Peer == killedID }); !ok || ev.Undelivered != 3 {
		t.Errorf("b-0's remote-down of the killed node: %+v (found %v), want 3 undelivered", ev, ok)
	}

	// Site a cut off from NATS: its LAN works alone, b expires it, then
	// both converge when it is back.
	l.Partition(hostsA, append(hostsB[:len(hostsB):len(hostsB)], hostN))
	lan.Eventually(t, 10*time.Second, "a's record expired in b", func() error { return seesRecord(b, ra.ID, "", true) })
	ra2 := a[1].Register("web@2.0.0")
	lan.Eventually(t, lanChangeWait, "a's new record in a", func() error { return seesRecord(a, ra2.ID, "a", false) })
	rb2 := b[1].Register("db@2.0.0")
	lan.Eventually(t, 10*time.Second, "b's records expired in a", func() error { return seesRecord(a, rb.ID, "", true) })
	l.Partition(hostsA, hostsB) // NATS is back for a
	back := time.Now()
	lan.Eventually(t, 20*time.Second, "the sites converged again", func() error {
		return cmpErr(seesRecord(b, ra.ID, "a", false), seesRecord(b, ra2.ID, "a", false),
			seesRecord(a, rb.ID, "b", false), seesRecord(a, rb2.ID, "b", false))
	})
	t.Logf("figure: site a back on NATS → converged in %v", time.Since(back).Round(time.Millisecond))
	sendAcross(t, a[1], b[1], "after the outage")
	if err := cmpErr(lan.FullMesh(a...), lan.FullMesh(b...)); err != nil {
		t.Fatal(err)
	}
}

// sendAcross sends text from one proc to a proc of another site, once
// the sender has it as a member of another site, and waits for it.
func sendAcross(t *testing.T, from, to *lan.Proc, text string) {
	t.Helper()
	lan.Eventually(t, lanChangeWait, from.ID+" sends to "+to.ID, func() error { return from.Send(to.ID, text) })
	if _, ok := to.WaitEvent(lanChangeWait, func(e node.Event) bool { return e.Ev == "msg" && e.Peer == from.ID && e.Data == text }); !ok {
		t.Fatalf("%s did not receive %q from %s", to.ID, text, from.ID)
	}
}

// cmpErr returns the first error that is not nil.
func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
