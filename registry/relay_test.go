package registry

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// received returns what p has been sent so far; it runs in a synctest
// bubble, where synctest.Wait lets every frame in flight arrive.
func (p *tapPeer) received() []message {
	var out []message
	for {
		synctest.Wait()
		n := len(out)
		for more := true; more; {
			select {
			case m := <-p.got:
				out = append(out, m)
			default:
				more = false
			}
		}
		if len(out) == n {
			return out
		}
	}
}

// statesOf returns the beats of owner's States among msgs.
func statesOf(msgs []message, owner string) []uint64 {
	var beats []uint64
	for _, m := range msgs {
		if m.typ == msgState && m.owner == owner {
			beats = append(beats, m.beat)
		}
	}
	return beats
}

// TestSyncLeavesNewerStatesToRelay: a peer that holds a State of an
// owner's run is not sent the newer one in the sync: it is relayed to it
// after the relay delay, as any other owner's State, unless it has it by
// then. A peer that holds no State of the owner gets it in the sync.
func TestSyncLeavesNewerStatesToRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(c *Config) { c.Heartbeat, c.Lifetime = time.Hour, 3*time.Hour } // no heartbeats
		a, o := newNode(t, "a", slow), newNode(t, "o", slow)
		connect(t, a, o)
		synctest.Wait()
		o.Registry.mu.Lock()
		o.bumpState()
		beat := o.self.beat
		o.Registry.mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()

		knows := newTapPeer(t, a, "c", 9)
		knows.send(must(encodeHello("c", []digestEntry{
			{owner: "c", inc: 9, beat: 1},
			{owner: "o", inc: o.self.inc, beat: beat - 1},
		}, DefaultMaxMessageBytes)))
		fresh := newTapPeer(t, a, "d", 9)
		fresh.send(must(encodeHello("d", []digestEntry{{owner: "d", inc: 9, beat: 1}}, DefaultMaxMessageBytes)))
		if got := statesOf(knows.received(), "o"); len(got) != 0 {
			t.Fatalf("c, which holds a State of o, had o's States %v in its sync", got)
		}
		if got := statesOf(fresh.received(), "o"); len(got) != 1 || got[0] != beat {
			t.Fatalf("d, which holds none, had o's States %v in its sync, want [%d]", got, beat)
		}
		time.Sleep(relayDelay)
		if got := statesOf(knows.received(), "o"); len(got) != 1 || got[0] != beat {
			t.Fatalf("after the relay delay, c had o's States %v, want [%d]", got, beat)
		}
	})
}

// TestRelayDelays: another owner's State that drops a link, or leaves, is
// relayed after relayDelay; one that only adds links, after the window
// this node merges its own additions over, when that is longer (here 10
// ms for each of the 14 owners it knows).
func TestRelayDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newNode(t, "b", func(c *Config) { c.Heartbeat, c.Lifetime = 0, 0 }) // 1 s heartbeat
		x, c := newTapPeer(t, b, "x", 5), newTapPeer(t, b, "c", 6)
		binc := b.self.inc
		state := func(beat uint64, peers ...string) []byte {
			refs := []peerRef{{id: "b", inc: binc}}
			for _, p := range peers {
				refs = append(refs, peerRef{id: p, inc: 1})
			}
			return must(encodeState("x", 5, 0, beat, false, refs, DefaultMaxMessageBytes))
		}
		x.send(must(encodeHello("x", []digestEntry{{owner: "x", inc: 5, beat: 1}}, DefaultMaxMessageBytes)), state(1))
		c.send(must(encodeHello("c", []digestEntry{{owner: "c", inc: 6, beat: 1}}, DefaultMaxMessageBytes)))
		for i := range 12 {
			id := fmt.Sprintf("f%02d", i)
			x.send(must(encodeState(id, 1, 0, 1, false, []peerRef{{id: "x", inc: 5}}, DefaultMaxMessageBytes)))
		}
		time.Sleep(time.Second)
		x.received()
		c.received()
		hi := locked(b, func(r *Registry) time.Duration { _, hi := r.coalesceLimits(); return hi })
		if hi <= relayDelay {
			t.Fatalf("b's merging window is %v, not above relayDelay: this test no longer covers an addition relayed later", hi)
		}

		for _, tc := range []struct {
			what, owner string
			frame       []byte
			after       time.Duration
		}{
			{"an addition", "x", state(2, "f00"), hi},
			{"a loss", "x", state(3), relayDelay},
			{"a first state, leaving", "g", must(encodeState("g", 1, 0, 1, true, []peerRef{{id: "x", inc: 5}}, DefaultMaxMessageBytes)), relayDelay},
		} {
			start := time.Now()
			x.send(tc.frame)
			time.Sleep(tc.after - time.Millisecond)
			if got := statesOf(c.received(), tc.owner); len(got) != 0 {
				t.Fatalf("%s of %s relayed to c after %v, want %v", tc.what, tc.owner, time.Since(start), tc.after)
			}
			time.Sleep(time.Millisecond)
			if got := statesOf(c.received(), tc.owner); len(got) != 1 {
				t.Fatalf("%s of %s not relayed to c after %v: %v", tc.what, tc.owner, tc.after, got)
			}
		}
	})
}
