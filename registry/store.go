package registry

// The functions here change what this node stores of an owner, keeping the
// index of visible records and emitting events. r.mu is held.

// setRecord stores e (new or replacing a record with the same id).
func (r *Registry) setRecord(o *owner, e *entry) {
	if e.rec.Site == "" {
		e.rec.Site = r.siteOf(o.id) // the links brought it
	}
	old := o.records[e.rec.ID]
	o.records[e.rec.ID] = e
	if !o.live {
		return
	}
	if old != nil {
		r.index(old, false)
	}
	r.index(e, true)
	if old != nil {
		r.emit(Updated, e)
	} else {
		r.emit(Registered, e)
	}
}

// delRecord removes the record id, if stored.
func (r *Registry) delRecord(o *owner, id string) {
	e, ok := o.records[id]
	if !ok {
		return
	}
	delete(o.records, id)
	if o.live {
		r.index(e, false)
		r.emit(Freed, e)
	}
}

// wipeRecords removes every record of o.
func (r *Registry) wipeRecords(o *owner) {
	for id := range o.records {
		r.delRecord(o, id)
	}
}

// replaceRecords makes recs o's record set, with the events of the
// difference.
func (r *Registry) replaceRecords(o *owner, recs map[string]*entry) {
	for id := range o.records {
		if _, ok := recs[id]; !ok {
			r.delRecord(o, id)
		}
	}
	for id, e := range recs {
		if old, ok := o.records[id]; !ok || old.rec.Rev != e.rec.Rev {
			r.setRecord(o, e)
		}
	}
}

// siteOf returns the site of the owner id that the links bring: this
// node's, unless it is heard over the bus too, as of another site (sites
// linked by hand).
func (r *Registry) siteOf(id string) string {
	if rm := r.sites.remotes[id]; rm != nil {
		return rm.site
	}
	return r.cfg.Site
}

// setLive shows or hides all of o's records. An owner this node reaches
// over its links and hears over the bus as well shows once: while the
// links' copy is live, the bus's is kept unshown, and either takes over
// from the other without events but for what differs.
func (r *Registry) setLive(o *owner, live bool) {
	if o.live == live {
		return
	}
	if rm := r.sites.remotes[o.id]; rm != nil && r.owners[o.id] == o {
		switch {
		case live && rm.live:
			r.handOver(rm.owner, o)
			return
		case !live && !rm.leaving && !rm.expired && rm.seq >= rm.heard:
			r.handOver(o, rm.owner)
			return
		}
	}
	o.live = live
	kind := Freed
	if live {
		kind = Registered
	}
	for _, e := range o.records {
		r.index(e, live)
		r.emit(kind, e)
	}
}

// handOver hides from's records and shows to's, both of one owner (its
// links' copy and its bus's), with events only for what differs.
func (r *Registry) handOver(from, to *owner) {
	from.live, to.live = false, true
	for id, e := range from.records {
		if _, ok := to.records[id]; !ok {
			r.index(e, false)
			r.emit(Freed, e)
		}
	}
	site := r.siteOf(to.id)
	for id, e := range to.records {
		e.rec.Site = site
		old, ok := from.records[id]
		if ok {
			r.index(old, false)
		}
		r.index(e, true)
		switch {
		case !ok:
			r.emit(Registered, e)
		case old.rec.Rev != e.rec.Rev:
			r.emit(Updated, e)
		}
	}
}

// resetOwner forgets all of o for its new incarnation inc: the node
// restarted, so its old records and state are gone. The new run is not
// live until a walk reaches it, which takes its state: its records,
// which may arrive first (relayed at once, where states wait; see
// relayLater), are shown then, once. Shown at once, the next walk would
// hide them again until the state came: a live record's flap.
func (r *Registry) resetOwner(o *owner, inc uint64) {
	if eligible(o) || o.live {
		r.dirty = true // edges to its old run are gone
	}
	r.wipeRecords(o)
	o.live, o.reached = false, false
	o.inc = inc
	r.renamed(o)
	o.seq = 0
	o.beat = 0
	o.leaving = false
	o.peers, o.adj, o.adjAt, o.lossBeat, o.namedAt = nil, nil, 0, 0, 0
	clear(o.names)
	r.peersGen++
	o.frame, o.delta, o.deltaBase = nil, nil, 0
	o.recSig, o.stateSig, o.stateSeq = nil, nil, 0 // (its credentials are by run: kept)
	o.expired, o.gone = false, false
}

// index adds e to or removes it from the visible index.
func (r *Registry) index(e *entry, add bool) {
	byID := r.visible[e.rec.Name]
	if add {
		if byID == nil {
			byID = map[string]*entry{}
			r.visible[e.rec.Name] = byID
		}
		byID[e.rec.ID] = e
		return
	}
	delete(byID, e.rec.ID)
	if len(byID) == 0 {
		delete(r.visible, e.rec.Name)
	}
}
