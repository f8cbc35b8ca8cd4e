package registry

import "time"

// Liveness, link-state style. Every node floods a versioned state of its
// own: its adjacency (the peers it has a handshaken link with), a leaving
// flag, and a beat counter renewed every Heartbeat. From the states it
// holds, each node computes which owners it can reach over links that both
// ends announce. Only the records of reachable, renewed, not leaving owners
// are visible: an owner whose every neighbour dropped it is freed at once;
// one link dropping between nodes still joined through others changes
// nothing; an owner that stops renewing is freed after Lifetime.

// heartbeatLoop renews this node's state and expires silent owners.
func (r *Registry) heartbeatLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		r.mu.Lock()
		if !r.closed {
			r.bumpState()
			r.expire(time.Now())
			if r.dirty {
				r.recompute()
			}
		}
		r.mu.Unlock()
	}
}

// expire marks owners not renewed within Lifetime as expired, and forgets
// owners that have been expired and invisible for another Lifetime (their
// versions are kept that long so late duplicates are still recognised).
// r.mu is held.
func (r *Registry) expire(now time.Time) {
	for id, o := range r.owners {
		if o == r.self {
			continue
		}
		age := now.Sub(o.renewed)
		lifetime := r.cfg.Lifetime
		if o.lifetime > 0 {
			lifetime = o.lifetime
		}
		if !o.expired && age > lifetime {
			o.expired = true
			r.dirty = true
			r.log.Debug("registry: owner expired", "owner", id)
		}
		if o.expired && !o.live && age > 2*lifetime {
			delete(r.owners, id)
		}
	}
}

// recompute finds the owners reachable from this node and shows or hides
// their records accordingly. r.mu is held.
func (r *Registry) recompute() {
	r.dirty = false
	clear(r.reach)
	r.reach[r.self.id] = true
	queue := append(r.queue[:0], r.self.id)
	for len(queue) > 0 {
		u := r.owners[queue[0]]
		queue = queue[1:]
		for v := range u.peers {
			if r.reach[v] {
				continue
			}
			vo := r.owners[v]
			if vo == nil || vo.beat == 0 || vo.leaving || vo.expired || !r.linked(u, vo) {
				continue
			}
			r.reach[v] = true
			queue = append(queue, v)
		}
	}
	r.queue = queue[:0]
	for _, o := range r.owners {
		if o != r.self {
			r.setLive(o, r.reach[o.id])
		}
	}
}
