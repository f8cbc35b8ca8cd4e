package e2e_test

// A node restarted with its old id while its old process hangs, joining
// through one member only (issue 18): see lan_identity_test.go for the
// restarts that rejoin by mDNS.

import (
	"fmt"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/lan"
	"github.com/tallship-go/tallship/internal/testutil/node"
)

// Four hosts linked by --connect alone (no mDNS; peer exchange makes the
// full mesh). The last one's process hangs (SIGSTOP) and a new process
// with its id, on a new port, joins through the first member only, and
// registers the same role. The new run gets the full mesh (the members
// it did not dial learn it from peer exchange), and on every member the
// new run's record is registered once and never freed, before or after
// the old process is found dead and killed; the old run's records are
// freed once each, and nothing of the other members goes.
func TestLANRestartThroughOneMember(t *testing.T) {
	const role = "svc@1.0.0"
	cluster := lanCluster(t)
	l := lan.New(t, 4)
	first := l.Start(l.Host(0), node.Config{Cluster: cluster, NoMDNS: true, Roles: []string{"m0@1.0.0"}})
	via := first.Addrs[0]
	procs := []*lan.Proc{first}
	for i := 1; i < 4; i++ {
		c := node.Config{Cluster: cluster, NoMDNS: true, Connect: []string{via}, Roles: []string{fmt.Sprintf("m%d@1.0.0", i)}}
		if i == 3 {
			c.Roles = append(c.Roles, role)
		}
		procs = append(procs, l.Start(l.Host(i), c))
	}
	lan.Eventually(t, lanMeshWait, "a full mesh", func() error { return lan.FullMesh(procs...) })
	var recs []node.Record
	for _, p := range procs {
		recs = append(recs, p.Records...)
	}
	lan.Eventually(t, lanChangeWait, "every record everywhere", func() error { return lan.SeeExactly(procs, recs) })
	old, rest := procs[3], procs[:3]
	marks := lanMarks(rest)

	hung := time.Now()
	old.Freeze()
	// On the old host, with a new port; the new run knows only the first
	// member, which vouches for it to nobody: the others must learn it
	// from peer exchange.
	again := l.Start(old.Host, node.Config{Cluster: cluster, ID: old.ID, NoMDNS: true, Connect: []string{via}, Roles: []string{role}})
	if again.Addrs[0] == old.Addrs[0] {
		t.Fatalf("the new run listens on the old run's address %s", again.Addrs[0])
	}
	newRec := again.Records[0]
	all := append([]*lan.Proc{again}, rest...)
	want := append(lanRecordsOf(recs, rest), newRec)
	meshed := lan.Eventually(t, lanHealWait, "the new run in the full mesh", func() error { return lan.FullMesh(all...) })
	lan.Eventually(t, lanChangeWait, "the new run's record in place of the old", func() error { return lan.SeeExactly(all, want) })
	t.Logf("figure: hang, restart through one member → full mesh in %v, its record everywhere in %v",
		meshed.Round(time.Millisecond), time.Since(hung).Round(time.Millisecond))

	// Leave the old run hung past every silent-peer bound (the local
	// preset's keepalive 250 ms + write timeout 750 ms, probes included),
	// then kill it: its links' ends, whenever they come, change nothing
	// for the new run.
	time.Sleep(2 * time.Second)
	old.Kill()
	time.Sleep(time.Second)
	if err := lan.FullMesh(all...); err != nil {
		t.Error(err)
	}
	if err := lan.SeeExactly(all, want); err != nil {
		t.Error(err)
	}
	for _, p := range rest {
		registered, freedOld := 0, map[string]int{}
		for _, e := range lanEventsSince(p, marks) {
			switch {
			case e.Rec == nil:
				if e.Ev == "peer-down" && e.Peer != old.ID {
					t.Errorf("%s: peer-down of %s (%s), a live member", p, e.Peer, e.Err)
				}
			case e.Rec.ID == newRec.ID && e.Ev == "registered":
				registered++
			case e.Rec.ID == newRec.ID && e.Ev == "freed":
				t.Errorf("%s: the new run's record %s freed (a live record flapped)", p, node.Short(newRec.ID))
			case e.Rec.Owner == old.ID && e.Rec.Inc != newRec.Inc && e.Ev == "freed":
				freedOld[e.Rec.Role]++
			case e.Ev == "freed":
				t.Errorf("%s: record %s of %s freed", p, e.Rec.Role, e.Rec.Owner)
			}
		}
		if registered != 1 {
			t.Errorf("%s: the new run's record registered %d times, want once", p, registered)
		}
		for _, r := range old.Records {
			if n := freedOld[r.Role]; n != 1 {
				t.Errorf("%s: the old run's record %s freed %d times, want once", p, r.Role, n)
			}
		}
	}
	if t.Failed() {
		for _, p := range rest {
			t.Logf("%s since the hang:\n%s", p, p.Log(60))
		}
	}
}
