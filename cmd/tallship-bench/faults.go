package main

import (
	"fmt"
	"syscall"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/node"
	"github.com/tallship-go/tallship/mesh"
	"github.com/tallship-go/tallship/registry"
)

// measureChurn joins a node to the running mesh g of cluster, runs times:
// the time until it is linked to every node (both ends up), then a
// register on it until visible on every node, then its Close until it and
// its record are gone everywhere.
func measureChurn(join, register, leave *row, g *group, cluster string, runs int) {
	for range runs {
		marks := g.marks()
		j, err := newBenchNode(cluster, mdnsConfig(), g.notify)
		if err != nil {
			join.err = err
			return
		}
		t0, err := g.startAll([]*benchNode{j})
		if err != nil {
			j.close()
			join.err = err
			return
		}
		atAll, err := g.waitAll(g.nodes, marks, 10*time.Second, isPeer(mesh.PeerUp, j.ID()))
		if err == nil {
			var atJ time.Time
			atJ, err = g.waitFull([]*benchNode{j}, len(g.nodes), 10*time.Second)
			atAll = later(atAll, atJ)
		}
		if err != nil {
			j.close()
			join.err = err
			return
		}
		join.samples = append(join.samples, ms(atAll.Sub(t0)))

		// Let the registry syncs that follow the links finish.
		waitCount(j, 0, len(g.nodes), 5*time.Second, func(e entry) bool { return e.Service == nil && e.Kind == mesh.PeerSynced })
		marks = g.marks()
		t1 := time.Now()
		rec, err := j.Register(mesh.Service{Role: "bench@1.0.0"})
		if err != nil {
			j.close()
			register.err = err
			return
		}
		at, err := g.waitAll(g.nodes, marks, 5*time.Second, isService(registry.Registered, rec.ID))
		if err != nil {
			j.close()
			register.err = err
			return
		}
		register.samples = append(register.samples, ms(at.Sub(t1)))

		marks = g.marks()
		t2 := time.Now()
		j.leave()
		at1, err1 := g.waitAll(g.nodes, marks, 5*time.Second, isPeer(mesh.PeerDown, j.ID()))
		at2, err2 := g.waitAll(g.nodes, marks, 5*time.Second, isService(registry.Freed, rec.ID))
		if err1 != nil || err2 != nil {
			leave.err = fmt.Errorf("peer down: %v; service freed: %v", err1, err2)
			return
		}
		leave.samples = append(leave.samples, ms(later(at1, at2).Sub(t2)))
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCount waits until b has want events matching from position from.
func waitCount(b *benchNode, from, want int, timeout time.Duration, match func(entry) bool) bool {
	deadline := time.Now().Add(timeout)
	for b.count(from, match) < want {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// victim starts a helper node of cfg (default timers, a record of
// victim@1.0.0) in cluster with start and waits until every node of g
// has it up and its record registered.
func victim(g *group, cluster string, cfg node.Config, start func(node.Config) (*node.Proc, error)) (*node.Proc, error) {
	cfg.Cluster, cfg.Timers, cfg.Roles = cluster, "default", []string{"victim@1.0.0"}
	marks := g.marks()
	p, err := start(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := g.waitAll(g.nodes, marks, 15*time.Second, isPeer(mesh.PeerUp, p.ID)); err != nil {
		p.Kill()
		return nil, fmt.Errorf("victim did not link: %w", err)
	}
	if _, err := g.waitAll(g.nodes, marks, 5*time.Second, isService(registry.Registered, p.Records[0].ID)); err != nil {
		p.Kill()
		return nil, fmt.Errorf("victim's record did not spread: %w", err)
	}
	time.Sleep(100 * time.Millisecond)
	return p, nil
}

// gone waits until every node of g has seen p's node down and its record
// freed, and returns when the last did.
func gone(g *group, p *node.Proc, marks []int, timeout time.Duration) (time.Time, error) {
	at1, err := g.waitAll(g.nodes, marks, timeout, isPeer(mesh.PeerDown, p.ID))
	if err != nil {
		return time.Time{}, fmt.Errorf("peer down: %w", err)
	}
	at2, err := g.waitAll(g.nodes, marks, timeout, isService(registry.Freed, p.Records[0].ID))
	if err != nil {
		return time.Time{}, fmt.Errorf("service freed: %w", err)
	}
	return later(at1, at2), nil
}

// measureKill kills a helper node with SIGKILL, runs times, and records
// how long until it and its record are gone on every node of g.
func measureKill(r *row, g *group, cluster string, runs int) {
	measureSignal(r, g, cluster, runs, syscall.SIGKILL)
}

// measureFreeze stops a helper node with SIGSTOP (a frozen host: its
// kernel still acknowledges, nothing answers), runs times, and records how
// long until it and its record are gone on every node of g.
func measureFreeze(r *row, g *group, cluster string, runs int) {
	measureSignal(r, g, cluster, runs, syscall.SIGSTOP)
}

// measureSignal sends sig to a fresh helper node, runs times, and records
// how long until it and its record are gone on every node of g.
func measureSignal(r *row, g *group, cluster string, runs int, sig syscall.Signal) {
	for range runs {
		c, err := victim(g, cluster, node.Config{}, startNode) // mDNS on loopback
		if err != nil {
			r.err = err
			return
		}
		marks := g.marks()
		t0 := time.Now()
		c.Signal(sig)
		at, err := gone(g, c, marks, 10*time.Second)
		c.Kill()
		if err != nil {
			r.err = err
			return
		}
		r.samples = append(r.samples, ms(at.Sub(t0)))
		time.Sleep(200 * time.Millisecond) // let the mesh settle between runs
	}
}

// newCutLAN makes the LAN of the cut measure: one host, for the victim,
// and the benchmark's own namespace joined to the bridge. Make it before
// the mesh the victim joins: a node advertises the addresses it has when
// it starts, and the mesh's nodes must advertise one the host reaches.
func newCutLAN() (*lan, error) {
	l, err := newLAN(1)
	if err != nil {
		return nil, err
	}
	if err := l.join(); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// measureCut links a helper node on the host of l (made by newCutLAN
// before g started) to every node of g, cuts its cable (the bridge drops
// every frame, both ways, without a reset), runs times, and records how
// long until it and its record are gone on every node of g. Every link to
// it, whichever end dialed, crosses the bridge: it reaches g at
// lanSelfIP, g reaches it at its host's address.
func measureCut(r *row, g *group, l *lan, cluster string, runs int) {
	if l == nil {
		return // newCutLAN failed: r says why
	}
	start := func(cfg node.Config) (*node.Proc, error) { return l.start(0, cfg) }
	for range runs {
		// No mDNS: g runs it on loopback only. The victim links to one
		// node and finds the others in its member list.
		c, err := victim(g, cluster, node.Config{NoMDNS: true, Connect: []string{selfAddr(g.nodes[0])}}, start)
		if err != nil {
			r.err = err
			return
		}
		marks := g.marks()
		t0 := time.Now()
		if err := l.setLoss(100); err != nil {
			c.Kill()
			r.err = err
			return
		}
		at, err := gone(g, c, marks, 10*time.Second)
		c.Kill()
		if err2 := l.setLoss(0); err == nil {
			err = err2
		}
		if err != nil {
			r.err = err
			return
		}
		r.samples = append(r.samples, ms(at.Sub(t0)))
		time.Sleep(200 * time.Millisecond)
	}
}
