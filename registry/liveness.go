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
	defer r.stateTimer.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-r.stateTimer.C:
			r.mu.Lock()
			if r.stateDue && !r.closed {
				r.bumpState()
			}
			r.mu.Unlock()
			continue
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
	r.spread(r.self)
	for _, o := range r.owners {
		if o != r.self {
			r.setLive(o, r.reach[o.id])
		}
	}
}

// grow extends reachability over the links u newly announces (peers
// added): when one end of a now complete edge is reachable and the other
// not, everything the other reaches becomes reachable. Nothing becomes
// unreachable by adding links, so no whole walk is needed. When one is
// due anyway (r.dirty), grow leaves it to that. r.mu is held.
func (r *Registry) grow(u *owner, added []string) {
	if r.dirty {
		return
	}
	for _, id := range added {
		v := r.owners[id]
		if v == nil || !eligible(v) || !r.linked(u, v) {
			continue
		}
		switch {
		case r.reach[u.id] && !r.reach[v.id]:
			r.spread(v)
		case r.reach[v.id] && !r.reach[u.id]:
			r.spread(u)
		}
	}
}

// spread marks from reachable, and every owner reachable from it that is
// not marked yet, showing their records. r.mu is held.
func (r *Registry) spread(from *owner) {
	r.reach[from.id] = true
	if from != r.self {
		r.setLive(from, true)
	}
	queue := append(r.queue[:0], from.id)
	for len(queue) > 0 {
		u := r.owners[queue[0]]
		queue = queue[1:]
		for v := range u.peers {
			if r.reach[v] {
				continue
			}
			vo := r.owners[v]
			if vo == nil || !eligible(vo) || !r.linked(u, vo) {
				continue
			}
			r.reach[v] = true
			r.setLive(vo, true)
			queue = append(queue, v)
		}
	}
	r.queue = queue[:0]
}

// eligible reports whether o's own state lets it be reachable: known,
// renewed, not leaving.
func eligible(o *owner) bool {
	return o.beat != 0 && !o.leaving && !o.expired
}
