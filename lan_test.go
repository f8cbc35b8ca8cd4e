package tallship_test

// Multi-host tests (issue 6): one real mesh process (internal/lanhost) per
// host of a private LAN of network namespaces joined by a bridge
// (internal/lan), and real faults: kill -9, a cut link, a partition, frame
// loss, a restart with the same id. Nothing leaves the test's private
// namespace (internal/netns). Every test skips, saying why, where
// namespaces, root or nft are missing. Run them alone with
// go test -run LAN .
//
// Times logged as "figure:" are measured from the fault (the harness's
// clock) to the event in each node (the node's clock: one machine, one
// clock), worst node first.

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/lan"
)

// Bounds. Waits end as soon as their condition holds; the bounds are
// generous so a busy machine does not fail them. The targets the figures
// are compared with are the spec's.
const (
	lanMeshWait   = 15 * time.Second // N processes started → full mesh
	lanChangeWait = 5 * time.Second  // a change to reach every node
	lanDownBound  = 3 * time.Second  // a dead peer dropped everywhere (target 1 s; 1.5 s for a silent one)
	lanHealWait   = 15 * time.Second // a healed LAN → one mesh
)

// lanMesh builds a LAN of n hosts, starts a node of cfg on each and waits
// for the full mesh.
func lanMesh(t *testing.T, n int, cfg lan.Node) (*lan.LAN, []*lan.Proc) {
	t.Helper()
	return lanMeshOf(t, n, func(int) lan.Node { return cfg })
}

// lanMeshOf is lanMesh with host i's node configured by cfg(i). The
// cluster defaults to one named for the test.
func lanMeshOf(t *testing.T, n int, cfg func(i int) lan.Node) (*lan.LAN, []*lan.Proc) {
	t.Helper()
	l := lan.New(t, n)
	start := time.Now()
	var procs []*lan.Proc
	for i, h := range l.Hosts() {
		c := cfg(i)
		if c.Cluster == "" {
			c.Cluster = lanCluster(t)
		}
		procs = append(procs, l.Start(h, c))
	}
	lan.Eventually(t, lanMeshWait, "a full mesh", func() error { return lan.FullMesh(procs...) })
	t.Logf("figure: %d nodes started → full mesh in %v", n, time.Since(start).Round(time.Millisecond))
	return l, procs
}

// lanCluster is the cluster name of the test's nodes.
func lanCluster(t *testing.T) string { return "lan-" + strings.ToLower(t.Name()) }

// lanRegisterEach registers role <prefix><i>@1.0.0 on each proc and waits
// until every proc sees them all.
func lanRegisterEach(t *testing.T, procs []*lan.Proc, prefix string) []lan.Record {
	t.Helper()
	var recs []lan.Record
	for i, p := range procs {
		recs = append(recs, p.Register(fmt.Sprintf("%s%d@1.0.0", prefix, i)))
	}
	lan.Eventually(t, lanChangeWait, "every record everywhere", func() error { return lan.SeeExactly(procs, recs) })
	return recs
}

// lanWaitAll waits, on each of procs, for an event that match accepts
// (among those printed since the mark), and returns the latest time one
// happened. It fails t when one does not come within d.
func lanWaitAll(t *testing.T, procs []*lan.Proc, marks map[*lan.Proc]int, d time.Duration, what string, match func(lan.Event) bool) time.Time {
	t.Helper()
	var last time.Time
	deadline := time.Now().Add(d)
	for _, p := range procs {
		skip := marks[p]
		seen := 0
		e, ok := p.WaitEvent(time.Until(deadline), func(e lan.Event) bool {
			seen++
			return seen > skip && match(e)
		})
		if !ok {
			t.Fatalf("%s: no %s within %v", p, what, d)
		}
		if e.Time().After(last) {
			last = e.Time()
		}
	}
	return last
}

// lanMarks notes how many events each proc has printed.
func lanMarks(procs []*lan.Proc) map[*lan.Proc]int {
	m := make(map[*lan.Proc]int)
	for _, p := range procs {
		m[p] = len(p.Events())
	}
	return m
}

// lanEventsSince returns the events p printed after its mark.
func lanEventsSince(p *lan.Proc, marks map[*lan.Proc]int) []lan.Event {
	return p.Events()[marks[p]:]
}

func lanWithout(procs []*lan.Proc, drop ...*lan.Proc) []*lan.Proc {
	return slices.DeleteFunc(slices.Clone(procs), func(p *lan.Proc) bool { return slices.Contains(drop, p) })
}

func lanHostsOf(procs []*lan.Proc) []*lan.Host {
	var hs []*lan.Host
	for _, p := range procs {
		hs = append(hs, p.Host)
	}
	return hs
}

// lanRecordsOf returns the records of recs whose owner is one of procs.
func lanRecordsOf(recs []lan.Record, procs []*lan.Proc) []lan.Record {
	ids := lan.IDs(procs...)
	return slices.DeleteFunc(slices.Clone(recs), func(r lan.Record) bool { return !slices.Contains(ids, r.Owner) })
}

// lanFigure logs a measured time against its target.
func lanFigure(t *testing.T, what string, got, target time.Duration) {
	t.Helper()
	note := "within"
	if got > target {
		note = "OVER"
	}
	t.Logf("figure: %s in %v (%s the %v target)", what, got.Round(time.Millisecond), note, target)
}

// Eight hosts form the full mesh, and every service registered on any host
// is seen on all, once.
func TestLANFullMesh(t *testing.T) {
	_, procs := lanMesh(t, 8, lan.Node{})
	start := time.Now()
	var recs []lan.Record
	for i, p := range procs {
		recs = append(recs, p.Register(fmt.Sprintf("svc%d@1.%d.0", i, i)))
		recs = append(recs, p.Register("shared@2.0.0", fmt.Sprintf("host=%d", i)))
	}
	lan.Eventually(t, lanChangeWait, "every record everywhere", func() error { return lan.SeeExactly(procs, recs) })
	t.Logf("figure: %d registrations on 8 hosts → seen on all in %v", len(recs), time.Since(start).Round(time.Millisecond))
	for _, p := range procs {
		got, err := p.Services("shared@^2")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(procs) {
			t.Errorf("%s: shared@^2 matches %d records, want %d", p, len(got), len(procs))
		}
	}
	// No node saw a peer go down or a record freed while the mesh formed.
	for _, p := range procs {
		for _, e := range p.Events() {
			if e.Ev == "peer-down" || e.Ev == "freed" {
				t.Errorf("%s: %s %s while forming the mesh", p, e.Ev, e.Peer)
			}
		}
	}
}

// kill -9 of one host's process: every other host drops it and its
// services, at once (the kernel resets its connections).
func TestLANKill9(t *testing.T) {
	_, procs := lanMesh(t, 8, lan.Node{})
	recs := lanRegisterEach(t, procs, "k")
	victim, rest := procs[7], procs[:7]
	marks := lanMarks(rest)
	killed := victim.Kill()

	down := lanWaitAll(t, rest, marks, lanDownBound, "peer-down of the killed node", func(e lan.Event) bool {
		return e.Ev == "peer-down" && e.Peer == victim.ID
	})
	freed := lanWaitAll(t, rest, marks, lanDownBound, "free of the killed node's record", func(e lan.Event) bool {
		return e.Ev == "freed" && e.Rec != nil && e.Rec.Owner == victim.ID
	})
	lanFigure(t, "kill -9 → peer down on all 7", down.Sub(killed), time.Second)
	lanFigure(t, "kill -9 → its service freed on all 7", freed.Sub(killed), time.Second)
	if d := lanLatest(down, freed).Sub(killed); d > lanDownBound {
		t.Errorf("kill -9 → gone everywhere took %v, bound %v", d, lanDownBound)
	}
	if err := lan.FullMesh(rest...); err != nil {
		t.Error(err)
	}
	if err := lan.SeeExactly(rest, lanRecordsOf(recs, rest)); err != nil {
		t.Error(err)
	}
	for _, p := range rest {
		for _, e := range lanEventsSince(p, marks) {
			if (e.Ev == "peer-down" && e.Peer != victim.ID) || (e.Ev == "freed" && e.Peer != victim.ID) {
				t.Errorf("%s: %s of %s, a live node", p, e.Ev, e.Peer)
			}
		}
	}
}

// A host's link is cut (no FIN, no reset): its peers drop it and its
// services within the silent-peer bound of the default timers (keepalive
// 500 ms + write timeout 1 s), it drops them, and nobody else drops
// anything.
func TestLANLinkCut(t *testing.T) {
	const silentBound = 1500 * time.Millisecond // mesh.Config defaults
	l, procs := lanMesh(t, 8, lan.Node{Timers: "default"})
	recs := lanRegisterEach(t, procs, "c")
	cut := time.Now()
	down, freed := lanCut(t, l, procs, recs)
	lanFigure(t, "link cut → peer down on all 7", down.Sub(cut), silentBound)
	lanFigure(t, "link cut → its service freed on all 7", freed.Sub(cut), silentBound)
	if d := lanLatest(down, freed).Sub(cut); d > 2*silentBound {
		t.Errorf("link cut → gone everywhere took %v, bound %v", d, 2*silentBound)
	}
}

// A cut host whose link is mended rejoins: one mesh again, every record
// everywhere.
func TestLANLinkMend(t *testing.T) {
	l, procs := lanMesh(t, 8, lan.Node{})
	recs := lanRegisterEach(t, procs, "m")
	lanCut(t, l, procs, recs)
	mended := time.Now()
	l.Mend(procs[7].Host)
	lan.Eventually(t, lanHealWait, "one mesh after the link is mended", func() error { return lan.FullMesh(procs...) })
	meshed := time.Since(mended)
	lan.Eventually(t, lanChangeWait, "every record everywhere", func() error { return lan.SeeExactly(procs, recs) })
	t.Logf("figure: link mended → one mesh in %v, every record everywhere in %v", meshed.Round(time.Millisecond), time.Since(mended).Round(time.Millisecond))
}

// lanCut cuts the last host's link and checks that the others drop it and
// its records, and it drops them, and nobody drops anything else. It
// returns when the last of the others dropped it and freed its records.
func lanCut(t *testing.T, l *lan.LAN, procs []*lan.Proc, recs []lan.Record) (down, freed time.Time) {
	t.Helper()
	victim, rest := procs[len(procs)-1], procs[:len(procs)-1]
	marks := lanMarks(procs)
	l.Cut(victim.Host)
	down = lanWaitAll(t, rest, marks, 2*lanDownBound, "peer-down of the cut node", func(e lan.Event) bool {
		return e.Ev == "peer-down" && e.Peer == victim.ID
	})
	freed = lanWaitAll(t, rest, marks, 2*lanDownBound, "free of the cut node's record", func(e lan.Event) bool {
		return e.Ev == "freed" && e.Rec != nil && e.Rec.Owner == victim.ID
	})
	// The cut node, alone, drops all of them.
	for _, p := range rest {
		if _, ok := victim.WaitEvent(2*lanDownBound, func(e lan.Event) bool { return e.Ev == "peer-down" && e.Peer == p.ID }); !ok {
			t.Errorf("the cut node never dropped %s", p)
		}
	}
	lan.Eventually(t, lanChangeWait, "the records of each side apart", func() error {
		return errors.Join(lan.SeeExactly(rest, lanRecordsOf(recs, rest)), lan.SeeExactly([]*lan.Proc{victim}, lanRecordsOf(recs, []*lan.Proc{victim})))
	})
	if err := lan.FullMesh(rest...); err != nil {
		t.Error(err)
	}
	for _, p := range rest {
		for _, e := range lanEventsSince(p, marks) {
			if (e.Ev == "peer-down" || e.Ev == "freed") && e.Peer != victim.ID {
				t.Errorf("%s: %s of %s, a node still on the LAN", p, e.Ev, e.Peer)
			}
		}
	}
	return down, freed
}

// Partition 5|3: each side keeps its own services, also ones registered
// meanwhile, and drops the other side's.
func TestLANPartition(t *testing.T) {
	l, procs := lanMesh(t, 8, lan.Node{})
	lanPartition(t, l, procs)
}

// Partition 5|3, then heal: one mesh again, every live registration
// everywhere, none lost, none duplicated.
func TestLANPartitionHeal(t *testing.T) {
	l, procs := lanMesh(t, 8, lan.Node{})
	recs := lanPartition(t, l, procs)

	marks := lanMarks(procs)
	healed := time.Now()
	l.Heal()
	lan.Eventually(t, lanHealWait, "one mesh after the heal", func() error { return lan.FullMesh(procs...) })
	meshed := time.Since(healed)
	lan.Eventually(t, lanChangeWait, "every live record everywhere", func() error { return lan.SeeExactly(procs, recs) })
	t.Logf("figure: heal → one mesh in %v, every live record everywhere in %v", meshed.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
	// Each node registered each record of the other side once, and freed
	// nothing live.
	live := map[string]bool{}
	for _, r := range recs {
		live[r.ID] = true
	}
	for _, p := range procs {
		count := map[string]int{}
		for _, e := range lanEventsSince(p, marks) {
			switch {
			case e.Ev == "registered":
				count[e.Rec.ID]++
			case e.Ev == "freed" && live[e.Rec.ID]:
				t.Errorf("%s: freed %s (%s of %s), a live record, after the heal", p, e.Rec.Role, e.Rec.ID, e.Rec.Owner)
			}
		}
		for id, c := range count {
			if c > 1 {
				t.Errorf("%s: record %s registered %d times after the heal", p, id, c)
			}
		}
	}
}

// lanPartition registers a record on each proc, splits the LAN 5|3,
// checks that each side is a mesh with its own records only, registers
// on both sides and frees one, checks again, and returns the live
// records.
func lanPartition(t *testing.T, l *lan.LAN, procs []*lan.Proc) []lan.Record {
	t.Helper()
	recs := lanRegisterEach(t, procs, "p")
	a, b := procs[:5], procs[5:]
	marks := lanMarks(procs)
	split := time.Now()
	l.Partition(lanHostsOf(a), lanHostsOf(b))

	lan.Eventually(t, lanChangeWait, "two meshes", func() error { return errors.Join(lan.FullMesh(a...), lan.FullMesh(b...)) })
	lan.Eventually(t, lanChangeWait, "each side with its own records", func() error {
		return errors.Join(lan.SeeExactly(a, lanRecordsOf(recs, a)), lan.SeeExactly(b, lanRecordsOf(recs, b)))
	})
	t.Logf("figure: partition 5|3 → two meshes, each with its own records, in %v", time.Since(split).Round(time.Millisecond))
	// Registrations and a free during the partition, on both sides.
	recs = append(recs, a[0].Register("during@1.0.0", "side=a"), b[0].Register("during@1.0.0", "side=b"))
	gone := recs[6] // b[1]'s
	b[1].Free(gone.ID)
	recs = slices.Delete(recs, 6, 7)
	lan.Eventually(t, lanChangeWait, "each side with its own records", func() error {
		return errors.Join(lan.SeeExactly(a, lanRecordsOf(recs, a)), lan.SeeExactly(b, lanRecordsOf(recs, b)))
	})
	for _, side := range [][]*lan.Proc{a, b} {
		own := lan.IDs(side...)
		for _, p := range side {
			for _, e := range lanEventsSince(p, marks) {
				switch {
				case e.Ev == "peer-down" && slices.Contains(own, e.Peer):
					t.Errorf("%s: peer-down of %s, on its own side", p, e.Peer)
				case e.Ev == "freed" && slices.Contains(own, e.Peer) && e.Rec.ID != gone.ID:
					t.Errorf("%s: freed %s of %s, on its own side", p, e.Rec.Role, e.Peer)
				}
			}
		}
	}
	return recs
}

// lanKnownBug skips t, naming a known library bug it would fail on,
// unless TALLSHIP_KNOWN_BUGS is set (to check a fix).
func lanKnownBug(t *testing.T, bug string) {
	t.Helper()
	if os.Getenv("TALLSHIP_KNOWN_BUGS") == "" {
		t.Skip(bug + " (set TALLSHIP_KNOWN_BUGS=1 to run it)")
	}
}

func lanLatest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// lanLossFor is how long frames are dropped in TestLANFrameLoss: the
// issue's 30 s, or 10 s with -short.
func lanLossFor() time.Duration {
	if testing.Short() {
		return 10 * time.Second
	}
	return 30 * time.Second
}

// 10% of frames dropped on the LAN for a while: the mesh stays whole, no
// record is freed, and the messages sent meanwhile all arrive, once, in
// order. The links' write timeout is 5 s here, not the default 1 s: with
// TCP's 200 ms minimum retransmission timeout, a frame lost four times in
// a row (one in 10^4 at 10% loss) holds a link's pings back for 1.4 s, and
// the default 500 ms keepalive + 1 s timeout then drops a live peer:
// TestLANFrameLossDefaultTimers shows it.
func TestLANFrameLoss(t *testing.T) {
	lanFrameLoss(t, lan.Node{Timers: "default", WriteTimeout: 5 * time.Second})
}

// TestLANFrameLoss with the default timers.
func TestLANFrameLossDefaultTimers(t *testing.T) {
	lanKnownBug(t, lanBugLossFalseAlarm)
	lanFrameLoss(t, lan.Node{Timers: "default"})
}

// lanBugLossFalseAlarm is a library limit these tests found (issue 6).
const lanBugLossFalseAlarm = "library limit: at 10% frame loss the default silent-peer bound (keepalive 500 ms + write timeout 1 s) " +
	"drops live peers (a TCP segment lost 4 times in a row holds a link's pings back 1.4 s), " +
	"and the messages queued on the dropped link are lost although Send returned nil (a gap in the sequence the peer receives)"

func lanFrameLoss(t *testing.T, cfg lan.Node) {
	lan.RequireNFT(t)
	l, procs := lanMesh(t, 8, cfg)
	recs := lanRegisterEach(t, procs, "l")
	marks := lanMarks(procs)

	// Two senders: procs[0] to every other node, procs[3] to procs[6].
	type flow struct {
		from, to *lan.Proc
		sent     int
	}
	var flows []*flow
	for _, p := range procs[1:] {
		flows = append(flows, &flow{from: procs[0], to: p})
	}
	flows = append(flows, &flow{from: procs[3], to: procs[6]})

	lossFor := lanLossFor()
	l.Loss(10)
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	registered, failed := false, false
	for time.Since(start) < lossFor && !failed {
		<-tick.C
		for _, f := range flows {
			if err := f.from.Send(f.to.ID, fmt.Sprintf("loss %s %d", f.from.Host.Name, f.sent)); err != nil {
				t.Errorf("after %v of loss, send %d from %s to %s: %v", time.Since(start).Round(time.Millisecond), f.sent, f.from, f.to, err)
				failed = true
				break
			}
			f.sent++
		}
		if !registered && time.Since(start) > lossFor/2 {
			recs = append(recs, procs[5].Register("during-loss@1.0.0"))
			registered = true
		}
	}
	tick.Stop()
	dropped := l.Dropped()
	l.Loss(0)
	total := 0
	for _, f := range flows {
		total += f.sent
	}
	t.Logf("figure: %d messages sent during %v of 10%% frame loss (%d frames dropped)", total, time.Since(start).Round(time.Second), dropped)
	for _, p := range procs {
		for _, e := range lanEventsSince(p, marks) {
			if e.Ev == "peer-down" || e.Ev == "freed" {
				t.Errorf("%s: spurious %s of %s at %v of loss (%s)", p, e.Ev, e.Peer, e.Time().Sub(start).Round(time.Millisecond), e.Err)
			}
		}
	}
	if t.Failed() {
		return
	}

	// Every message arrives, in order, once.
	for _, f := range flows {
		prefix := "loss " + f.from.Host.Name + " "
		lan.Eventually(t, lanChangeWait, "every message delivered", func() error {
			var got []string
			for _, e := range f.to.Events() {
				if e.Ev == "msg" && e.Peer == f.from.ID && strings.HasPrefix(e.Data, prefix) {
					got = append(got, strings.TrimPrefix(e.Data, prefix))
				}
			}
			for i, g := range got {
				if g != fmt.Sprint(i) {
					return fmt.Errorf("%s from %s: message %d is %q (want %d); %d received of %d", f.to, f.from, i, g, i, len(got), f.sent)
				}
			}
			if len(got) != f.sent {
				return fmt.Errorf("%s from %s: %d received of %d", f.to, f.from, len(got), f.sent)
			}
			return nil
		})
	}
	if err := lan.FullMesh(procs...); err != nil {
		t.Error(err)
	}
	lan.Eventually(t, lanChangeWait, "every record everywhere", func() error { return lan.SeeExactly(procs, recs) })
}

// A link with 100 ms of latency each way (through a user-space proxy):
// it comes up, changes and messages cross it in order and no faster than
// the latency allows, and the default timers keep it up.
func TestLANDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	l := lan.New(t, 2)
	cfg := lan.Node{Cluster: "lan-delay", Timers: "default", NoMDNS: true}
	a, b := l.Start(l.Host(0), cfg), l.Start(l.Host(1), cfg)
	proxy := l.Delay(l.Host(1), a.Addrs[0], delay)

	start := time.Now()
	id, err := b.Connect(proxy)
	if err != nil || id != a.ID {
		t.Fatalf("connect through the proxy: %q, %v", id, err)
	}
	t.Logf("figure: link through %v of latency each way up in %v", delay, time.Since(start).Round(time.Millisecond))
	lan.Eventually(t, lanChangeWait, "linked both ways", func() error { return lan.FullMesh(a, b) })
	marks := lanMarks([]*lan.Proc{a, b})

	registered := time.Now()
	rec := a.Register("slow@1.0.0")
	e, ok := b.WaitEvent(lanChangeWait, func(e lan.Event) bool { return e.Ev == "registered" && e.Rec.ID == rec.ID })
	if !ok {
		t.Fatal("the record never crossed the slow link")
	}
	crossed := e.Time().Sub(registered)
	t.Logf("figure: register → seen across the slow link in %v", crossed.Round(time.Millisecond))
	if crossed < delay {
		t.Errorf("the record crossed in %v, less than the link's %v latency: the proxy is not in the path", crossed, delay)
	}

	const n = 200
	for i := range n {
		if err := b.Send(a.ID, fmt.Sprintf("slow %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	lan.Eventually(t, lanChangeWait, "every message across the slow link, in order", func() error {
		var got []string
		for _, e := range a.Events() {
			if e.Ev == "msg" && strings.HasPrefix(e.Data, "slow ") {
				got = append(got, e.Data)
			}
		}
		for i, g := range got {
			if g != fmt.Sprintf("slow %d", i) {
				return fmt.Errorf("message %d is %q", i, g)
			}
		}
		if len(got) != n {
			return fmt.Errorf("%d of %d received", len(got), n)
		}
		return nil
	})
	// A few keepalive rounds at this latency: no false alarm.
	deadline := time.Now().Add(3 * time.Second)
	for _, p := range []*lan.Proc{a, b} {
		skip, seen := marks[p], 0
		if e, ok := p.WaitEvent(time.Until(deadline), func(e lan.Event) bool { seen++; return seen > skip && e.Ev == "peer-down" }); ok {
			t.Errorf("%s: peer-down of %s on a slow but live link (%s)", p, e.Peer, e.Err)
		}
	}
}

// A node killed and restarted at once with its old id rejoins, and its
// new registrations replace the old ones everywhere.
func TestLANRestartSameID(t *testing.T) {
	l, procs := lanMesh(t, 5, lan.Node{})
	recs := lanRegisterEach(t, procs, "r")
	old := procs[4]
	recs = append(recs, old.Register("old@1.0.0"))
	lan.Eventually(t, lanChangeWait, "every record everywhere", func() error { return lan.SeeExactly(procs, recs) })
	rest := procs[:4]
	marks := lanMarks(rest)

	killed := old.Kill()
	again := l.Start(old.Host, lan.Node{Cluster: lanCluster(t), ID: old.ID})
	restarted := time.Since(killed)
	newRec := again.Register("new@2.0.0")
	all := append(slices.Clone(rest), again)
	want := append(lanRecordsOf(recs, rest), newRec)
	lan.Eventually(t, lanMeshWait, "one mesh with the restarted node", func() error { return lan.FullMesh(all...) })
	lan.Eventually(t, lanChangeWait, "the new registrations in place of the old", func() error { return lan.SeeExactly(all, want) })
	t.Logf("figure: kill -9, restart with the old id (%v) → rejoined with its new records everywhere in %v",
		restarted.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if newRec.Inc <= recs[len(recs)-1].Inc {
		t.Errorf("restarted incarnation %d not above the old %d", newRec.Inc, recs[len(recs)-1].Inc)
	}
	for _, p := range rest {
		for _, e := range lanEventsSince(p, marks) {
			if e.Ev == "freed" && e.Peer != old.ID {
				t.Errorf("%s: freed a record of %s, a node that did not restart", p, e.Peer)
			}
		}
	}
}

// A host hangs (its process frozen: connections open, nothing answered)
// and its node is started again, with its old id, before the peers have
// noticed: the new one gets in once the old one is dropped, and its new
// registrations replace the old ones everywhere.
func TestLANRestartAfterHang(t *testing.T) {
	// The hung node has the highest id: its peers dialed its old links, and
	// its new run dials them (after FallbackDelay) while they may still
	// hold those old links.
	l, procs := lanMeshOf(t, 5, func(i int) lan.Node {
		if i == 4 {
			return lan.Node{ID: "zz-hung-node"}
		}
		return lan.Node{}
	})
	recs := lanRegisterEach(t, procs, "h")
	old := procs[4]
	recs = append(recs, old.Register("old@1.0.0"))
	lan.Eventually(t, lanChangeWait, "every record everywhere", func() error { return lan.SeeExactly(procs, recs) })
	rest := procs[:4]
	marks := lanMarks(rest)

	hung := time.Now()
	old.Freeze()
	again := l.Start(old.Host, lan.Node{Cluster: lanCluster(t), ID: old.ID})
	newRec := again.Register("new@2.0.0")
	all := append(slices.Clone(rest), again)
	want := append(lanRecordsOf(recs, rest), newRec)
	lan.Eventually(t, lanHealWait, "one mesh with the new process", func() error { return lan.FullMesh(all...) })
	lan.Eventually(t, lanChangeWait, "the new registrations in place of the old", func() error { return lan.SeeExactly(all, want) })
	t.Logf("figure: hang, restart with the old id → rejoined with its new records everywhere in %v", time.Since(hung).Round(time.Millisecond))
	for _, p := range rest {
		for _, e := range lanEventsSince(p, marks) {
			if (e.Ev == "freed" || e.Ev == "peer-down") && e.Peer != old.ID {
				t.Errorf("%s: %s of %s, a node that did not hang", p, e.Ev, e.Peer)
			}
		}
	}
	// The old process's death changes nothing for the new one: no link of
	// the mesh drops, no record is freed.
	marks = lanMarks(all)
	old.Kill()
	deadline := time.Now().Add(time.Second)
	for _, p := range all {
		skip, seen := marks[p], 0
		if e, ok := p.WaitEvent(time.Until(deadline), func(e lan.Event) bool {
			seen++
			return seen > skip && (e.Ev == "peer-down" || e.Ev == "freed")
		}); ok {
			t.Errorf("%s: %s of %s (%s) when the old process was killed", p, e.Ev, e.Peer, e.Err)
		}
	}
	if err := lan.SeeExactly(all, want); err != nil {
		t.Error(err)
	}
}

// A second process started with the id of a running one: the second gets
// a clear error and the first is unaffected (it keeps its links and its
// records).
func TestLANDuplicateID(t *testing.T) {
	l, procs := lanMesh(t, 4, lan.Node{})
	first := procs[0]
	recs := lanRegisterEach(t, procs, "d")
	marks := lanMarks(procs)
	// procs[3]'s host runs the second process with first's id.
	procs[3].Kill()
	members := procs[:3]
	lan.Eventually(t, lanChangeWait, "a mesh of three", func() error { return lan.FullMesh(members...) })
	recs = lanRecordsOf(recs, members)
	marks = lanMarks(members)

	second, err := l.TryStart(procs[3].Host, lan.Node{Cluster: lanCluster(t), ID: first.ID})
	if err != nil {
		t.Logf("the second process with id %s: %v", first.ID, err)
	} else {
		// It runs: it must say, soon, that its id is taken.
		e, ok := second.WaitEvent(lanDownBound, func(e lan.Event) bool {
			return e.Ev == "fatal" || (e.Ev == "id-conflict" && strings.Contains(e.Err, first.ID))
		})
		if !ok {
			t.Errorf("the second process with id %s runs with no id-conflict error after %v; peers %v", first.ID, lanDownBound, lanPeers(t, second))
		} else {
			t.Logf("the second process with id %s: %s %s", first.ID, e.Ev, e.Err)
		}
	}
	// The first is unaffected: no link of the three dropped or re-made,
	// nothing freed, every record in place.
	if _, ok := first.WaitEvent(lanDownBound, func(lan.Event) bool { return false }); ok {
		t.Fatal("unreachable")
	}
	for _, p := range members {
		for _, e := range lanEventsSince(p, marks) {
			if e.Ev == "peer-down" || e.Ev == "peer-up" || e.Ev == "freed" {
				t.Errorf("%s: %s %s (%s) after the second process started", p, e.Ev, e.Peer, e.Err)
			}
		}
	}
	if err := lan.FullMesh(members...); err != nil {
		t.Error(err)
	}
	if err := lan.SeeExactly(members, recs); err != nil {
		t.Error(err)
	}
}

// lanPeers returns p's peers, failing t when p cannot say.
func lanPeers(t *testing.T, p *lan.Proc) []string {
	t.Helper()
	peers, err := p.Peers()
	if err != nil {
		t.Fatal(err)
	}
	return peers
}

// Nodes of another cluster, with a wrong secret or with none, on the same
// LAN as a cluster with a secret: they never link with it, not by mDNS
// and not when told to connect, in either direction, and its services
// never see theirs.
func TestLANForeignNodesNeverLink(t *testing.T) {
	l := lan.New(t, 6)
	const cluster, secret = "blue", "s3cret"
	var members []*lan.Proc
	for _, h := range l.Hosts()[:3] {
		members = append(members, l.Start(h, lan.Node{Cluster: cluster, Secret: secret}))
	}
	foreign := []*lan.Proc{
		l.Start(l.Host(3), lan.Node{Cluster: "green", Secret: secret}),
		l.Start(l.Host(4), lan.Node{Cluster: cluster, Secret: "wrong"}),
		l.Start(l.Host(5), lan.Node{Cluster: cluster}),
	}
	what := []string{"another cluster", "a wrong secret", "no secret"}
	lan.Eventually(t, lanMeshWait, "the members' mesh", func() error { return lan.FullMesh(members...) })
	recs := lanRegisterEach(t, members, "b")
	for _, f := range foreign {
		f.Register("intruder@1.0.0")
	}
	// Told to connect, both ways: refused.
	for i, f := range foreign {
		if id, err := f.Connect(members[0].Addrs[0]); err == nil {
			t.Errorf("a node with %s linked to a member (%s)", what[i], id)
		} else {
			t.Logf("a node with %s connecting to a member: %v", what[i], err)
		}
		if id, err := members[1].Connect(f.Addrs[0]); err == nil {
			t.Errorf("a member linked to a node with %s (%s)", what[i], id)
		} else {
			t.Logf("a member connecting to a node with %s: %v", what[i], err)
		}
	}
	// For a while, while mDNS runs and the connects are retried: no link.
	memberIDs := lan.IDs(members...)
	bad := func(p *lan.Proc) func(e lan.Event) bool {
		return func(e lan.Event) bool {
			return e.Ev == "peer-up" && (slices.Contains(memberIDs, p.ID) != slices.Contains(memberIDs, e.Peer))
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, p := range append(slices.Clone(members), foreign...) {
		if e, ok := p.WaitEvent(time.Until(deadline), bad(p)); ok {
			t.Errorf("%s linked with %s", p, e.Peer)
		}
	}
	if err := lan.FullMesh(members...); err != nil {
		t.Error(err)
	}
	if err := lan.SeeExactly(members, recs); err != nil {
		t.Error(err)
	}
	for i, f := range foreign {
		if peers := lanPeers(t, f); len(peers) != 0 {
			t.Errorf("the node with %s has peers %v", what[i], peers)
		}
	}
}
