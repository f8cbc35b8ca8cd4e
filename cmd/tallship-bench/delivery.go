package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/node"
)

// The delivery group (issue 18): what a message bus promises while a peer
// lives (nothing Send accepted lost, duplicated or reordered, no live peer
// declared down) under 10% frame loss, beside how fast a peer that really
// is gone is noticed and what the acknowledgements cost a link.
//
// The loss measure runs helper nodes (the test-node harness) on hosts of a
// private LAN (lan.go) and makes its bridge drop a share of the frames it
// forwards.

// Shape of the loss measure.
const (
	lossHosts     = 4                     // nodes, one per host
	lossFlows     = 2                     // flows per ordered pair of nodes
	lossEvery     = 50 * time.Millisecond // one message per flow this often
	lossPercent   = 10                    // frames the bridge drops
	lossDrainWait = 15 * time.Second      // after the loss, for the last messages
	lossFormWait  = 30 * time.Second      // for the LAN's mesh to form
)

// flow is one sequence of messages from one node to another: message k
// says "dlv FLOW K". Sends that return an error are not counted as sent.
type flow struct {
	from, to *node.Proc
	id       int
	next     int          // the next sequence number
	refused  map[int]bool // sequence numbers Send did not accept
}

func (f *flow) prefix() string { return "dlv " + strconv.Itoa(f.id) + " " }

// flowTally is what a receiver made of a flow.
type flowTally struct {
	lost, duplicated, reordered int
}

// tallyFlow compares the sequence numbers a flow's receiver got, in the
// order it got them, with the sent numbers 0 … sent−1, of which those in
// refused were not accepted by Send (they may arrive or not): lost is how
// many accepted ones never arrived, duplicated how many arrivals repeat an
// earlier one, reordered how many arrive after a higher one.
func tallyFlow(sent int, refused map[int]bool, got []int) flowTally {
	var t flowTally
	seen := map[int]bool{}
	highest := -1
	for _, k := range got {
		switch {
		case seen[k]:
			t.duplicated++
			continue
		case k < highest:
			t.reordered++
		}
		seen[k] = true
		highest = max(highest, k)
	}
	for k := range sent {
		if !seen[k] && !refused[k] {
			t.lost++
		}
	}
	return t
}

// received returns the sequence numbers of f that its receiver has
// printed, in order.
func (f *flow) received() []int {
	var got []int
	pre := f.prefix()
	for _, e := range f.to.Events() {
		if e.Ev != "msg" || e.Peer != f.from.ID || !strings.HasPrefix(e.Data, pre) {
			continue
		}
		if k, err := strconv.Atoi(strings.TrimPrefix(e.Data, pre)); err == nil {
			got = append(got, k)
		}
	}
	return got
}

// measureLoss runs lossHosts helper nodes (default timers, mDNS) on a
// private LAN, drops lossPercent of the frames for window while every
// node sends a numbered message every lossEvery to every other node on
// lossFlows flows, then lifts the loss and waits for the last messages.
// It records the peer-down events the nodes reported meanwhile (every
// peer lives: each one is false), and per flow the messages Send accepted
// that never arrived, arrived twice, or arrived after a later one.
func measureLoss(downs, lost, dup, order *row, cluster string, window time.Duration) {
	all := []*row{downs, lost, dup, order}
	fail := func(err error) {
		for _, r := range all {
			r.err = err
		}
	}
	l, err := newLAN(lossHosts)
	if err != nil {
		fail(err)
		return
	}
	defer l.close()
	var procs []*node.Proc
	for i := range lossHosts {
		p, err := l.start(i, node.Config{Cluster: cluster, Timers: "default"})
		if err != nil {
			fail(err)
			return
		}
		procs = append(procs, p)
	}
	if err := waitLinked(procs, lossFormWait); err != nil {
		fail(err)
		return
	}

	var flows []*flow
	bySender := map[*node.Proc][]*flow{}
	for _, from := range procs {
		for _, to := range procs {
			if from == to {
				continue
			}
			for range lossFlows {
				f := &flow{from: from, to: to, id: len(flows), refused: map[int]bool{}}
				flows = append(flows, f)
				bySender[from] = append(bySender[from], f)
			}
		}
	}
	marks := make([]int, len(procs))
	for i, p := range procs {
		marks[i] = len(p.Events())
	}

	if err := l.setLoss(lossPercent); err != nil {
		fail(err)
		return
	}
	t0 := time.Now()
	end := t0.Add(window)
	var wg sync.WaitGroup
	for _, fs := range bySender {
		wg.Go(func() { sendFlows(fs, end) })
	}
	wg.Wait()
	window = time.Since(t0)
	frames := l.dropped()
	if err := l.setLoss(0); err != nil {
		fail(err)
		return
	}

	// Wait for every message Send accepted, or lossDrainWait.
	tallies := make([]flowTally, len(flows))
	deadline := time.Now().Add(lossDrainWait)
	for {
		missing := 0
		for i, f := range flows {
			tallies[i] = tallyFlow(f.next, f.refused, f.received())
			missing += tallies[i].lost
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	falseDowns := 0
	for i, p := range procs {
		for _, e := range p.Events()[marks[i]:] {
			if e.Ev == "peer-down" {
				falseDowns++
			}
		}
	}
	var sent, refused int
	var total flowTally
	worst := [3]int{} // the most any one flow lost, duplicated, reordered
	hit := [3]int{}   // flows with any
	for i, f := range flows {
		sent += f.next - len(f.refused)
		refused += len(f.refused)
		t := tallies[i]
		total.lost += t.lost
		total.duplicated += t.duplicated
		total.reordered += t.reordered
		for j, v := range [3]int{t.lost, t.duplicated, t.reordered} {
			worst[j] = max(worst[j], v)
			if v > 0 {
				hit[j]++
			}
		}
	}
	downs.samples = append(downs.samples, float64(falseDowns))
	downs.note = fmt.Sprintf("%d nodes, %d frames dropped in %.0f s", lossHosts, frames, window.Seconds())
	for j, r := range []*row{lost, dup, order} {
		r.samples = append(r.samples, float64([3]int{total.lost, total.duplicated, total.reordered}[j]))
		r.note = fmt.Sprintf("%d flows hit, worst %d", hit[j], worst[j])
	}
	lost.note = fmt.Sprintf("of %d sent on %d flows; %s", sent, len(flows), lost.note)
	if refused > 0 {
		lost.note += fmt.Sprintf("; %d sends refused, not counted", refused)
	}
}

// sendFlows sends the next message of each of fs (one sender's flows)
// every lossEvery until end. A send refused (no link up, a full queue
// past the harness's 5 s) is noted and the flow goes on with the next
// number.
func sendFlows(fs []*flow, end time.Time) {
	tick := time.NewTicker(lossEvery)
	defer tick.Stop()
	for time.Now().Before(end) {
		for _, f := range fs {
			k := f.next
			f.next++
			if err := f.from.Send(f.to.ID, f.prefix()+strconv.Itoa(k)); err != nil {
				f.refused[k] = true
			}
		}
		<-tick.C
	}
}

// waitLinked waits until every node of procs has every other one up.
func waitLinked(procs []*node.Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, p := range procs {
		want := map[string]bool{}
		for _, q := range procs {
			if q != p {
				want[q.ID] = true
			}
		}
		_, ok := p.WaitEvent(time.Until(deadline), func(e node.Event) bool {
			if e.Ev == "peer-up" {
				delete(want, e.Peer)
			}
			return len(want) == 0
		})
		if !ok {
			return fmt.Errorf("%d-node LAN mesh: %s has %d of %d peers after %v", len(procs), p, len(procs)-1-len(want), len(procs)-1, timeout)
		}
	}
	return nil
}
