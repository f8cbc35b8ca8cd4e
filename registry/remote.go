package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tallship-go/tallship/internal/lag"
)

// Owners of other sites, heard over the bus (see ServeBus). Each
// publishes its own records and Beats; nothing is relayed, so every
// message from an owner is first-hand, and renews it. Its records change
// by contiguous steps (inc, seq) as over links, a gap is filled by
// asking the owner (Want), and it expires after its Lifetime without a
// message. Every function here runs with r.mu held.

// remote is what this node knows of an owner of another site.
type remote struct {
	*owner
	site   string
	snap   *snapshot // a snapshot being received
	wantAt time.Time // when it was last asked for its records
	// observer: its Beats say it only reads the cluster (Config.Observer)
	observer bool
}

// RemoteOwner is a node of another site, heard over the bus (ServeBus).
type RemoteOwner struct {
	ID   string
	Site string
	// Records is how many records of it are visible here.
	Records int
}

// Remotes returns the live nodes of other sites that this node hears
// over the bus, sorted by site and id, but those that only observe
// (Config.Observer). It returns nil once the registry has closed, or
// when no bus ever ran.
func (r *Registry) Remotes() []RemoteOwner {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	var out []RemoteOwner
	for _, rm := range r.sites.remotes {
		if rm.live && !rm.observer {
			out = append(out, RemoteOwner{ID: rm.id, Site: rm.site, Records: len(rm.records)})
		}
	}
	slices.SortFunc(out, func(a, b RemoteOwner) int {
		if c := strings.Compare(a.Site, b.Site); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// remoteOf returns what this node holds of owner id of site, new when
// it holds nothing; nil when this node reaches the owner over its links,
// which then carry all of it.
func (r *Registry) remoteOf(id, site string) *remote {
	if x := r.owners[id]; x != nil && x.live {
		return nil
	}
	rm := r.sites.remotes[id]
	if rm == nil {
		rm = &remote{owner: &owner{id: id, records: map[string]*entry{}, renewed: time.Now()}, site: site}
		r.sites.remotes[id] = rm
	}
	return rm
}

// shadowRemote forgets what the bus said of owner id: this node now
// reaches it over its links (sites linked by hand, or a site's name
// given twice), and one copy of its records is shown, the links'.
func (r *Registry) shadowRemote(id string) {
	rm := r.sites.remotes[id]
	if rm == nil {
		return
	}
	r.wipeRecords(rm.owner)
	rm.live = false
	r.forgetRemote(rm)
}

func (r *Registry) forgetRemote(rm *remote) { delete(r.sites.remotes, rm.id) }

// resetRemote starts rm's run inc: the owner restarted, its old records
// are gone.
func (r *Registry) resetRemote(rm *remote, inc uint64, site string) {
	r.wipeRecords(rm.owner)
	rm.live = false
	rm.inc, rm.seq, rm.beat = inc, 0, 0
	rm.leaving, rm.expired = false, false
	rm.recSig = nil
	rm.site = site
	rm.snap = nil
}

// renewRemote notes that rm's current run spoke: it is live, and its
// records are shown.
func (r *Registry) renewRemote(rm *remote) {
	rm.renewed = time.Now()
	rm.expired = false
	if !rm.live && !rm.leaving {
		r.setLive(rm.owner, true)
	}
}

// onRemoteBeat applies an owner's Beat: its run is alive (or leaving),
// and its records are at seq.
func (r *Registry) onRemoteBeat(rm *remote, site string, m *message) error {
	if m.inc < rm.inc || m.inc == rm.inc && m.beat <= rm.beat {
		return nil // stale, or a duplicate
	}
	if r.signing() {
		signed := beatSigned(m.owner, m.inc, m.seq, m.beat, m.leaving, m.observer, m.lifetime)
		if ok, err := r.remoteSigned(rm, m.inc, "beat", signed, m.sig); !ok {
			return err
		}
	}
	if m.inc > rm.inc {
		r.resetRemote(rm, m.inc, site)
	}
	rm.beat = m.beat
	rm.lifetime = m.lifetime
	rm.observer = m.observer
	if m.leaving {
		rm.leaving = true
		r.wipeRecords(rm.owner)
		rm.live = false
		rm.renewed = time.Now()
		r.log.Debug("registry: remote owner left", "owner", rm.id, "site", rm.site)
		return nil
	}
	if rm.leaving {
		return nil
	}
	r.renewRemote(rm)
	if m.seq > rm.seq {
		r.busWant(rm)
	}
	return nil
}

// onRemoteChange applies an owner's Put or Del.
func (r *Registry) onRemoteChange(rm *remote, site string, m *message) error {
	if m.inc < rm.inc || m.inc == rm.inc && m.seq <= rm.seq {
		return nil // stale, or a duplicate
	}
	if !(m.inc == rm.inc && m.seq == rm.seq+1) && !(m.inc > rm.inc && m.seq == 1) {
		r.busWant(rm)
		return nil
	}
	if m.typ == msgPut {
		e := m.recs[0]
		if _, ok := rm.records[e.rec.ID]; !ok && len(rm.records) >= r.cfg.MaxRecordsPerOwner {
			return fmt.Errorf("%w: owner %s already holds %d records", ErrTooManyRecords, rm.id, len(rm.records))
		}
	}
	if m.inc == rm.inc && rm.leaving {
		return nil
	}
	if r.signing() {
		held, id, put := rm.records, m.id, (*entry)(nil)
		if m.inc > rm.inc {
			held = nil
		}
		if m.typ == msgPut {
			put = m.recs[0]
			id = put.rec.ID
		}
		d := recordsDigest(held, id, put)
		if ok, err := r.remoteSigned(rm, m.inc, "records", recordsSigned(rm.id, m.inc, m.seq, d), m.sig); !ok {
			return err
		}
	}
	if m.inc > rm.inc {
		r.resetRemote(rm, m.inc, site)
	}
	rm.seq = m.seq
	if m.typ == msgPut {
		e := m.recs[0]
		e.rec.Site = rm.site
		r.setRecord(rm.owner, e)
	} else {
		r.delRecord(rm.owner, m.id)
	}
	if r.signing() {
		rm.recSig = cloneSig(m.sig)
	}
	r.renewRemote(rm)
	return nil
}

// onRemoteSnap gathers the chunks of an owner's snapshot and applies it
// whole when it is newer than what is held.
func (r *Registry) onRemoteSnap(rm *remote, site string, m *message) error {
	s := rm.snap
	if s == nil || s.inc != m.inc || s.seq != m.seq || !bytes.Equal(s.sig, m.sig) {
		// A new snapshot (an earlier one that never ended is dropped).
		s = &snapshot{owner: m.owner, inc: m.inc, seq: m.seq, recs: map[string]*entry{}, sig: cloneSig(m.sig)}
		rm.snap = s
	}
	for _, e := range m.recs {
		s.recs[e.rec.ID] = e
	}
	if len(s.recs) > r.cfg.MaxRecordsPerOwner {
		rm.snap = nil
		return fmt.Errorf("%w: snapshot of %s holds more than %d records", ErrTooManyRecords, s.owner, r.cfg.MaxRecordsPerOwner)
	}
	if !m.last {
		return nil
	}
	rm.snap = nil
	if s.inc < rm.inc || s.inc == rm.inc && (s.seq < rm.seq || rm.leaving) || s.seq == 0 {
		return nil
	}
	if r.signing() {
		if ok, err := r.remoteSigned(rm, s.inc, "records", recordsSigned(rm.id, s.inc, s.seq, recordsDigest(s.recs, "", nil)), s.sig); !ok {
			return err
		}
	}
	if s.inc > rm.inc {
		r.resetRemote(rm, s.inc, site)
	}
	if s.seq > rm.seq {
		rm.seq = s.seq
		for _, e := range s.recs {
			e.rec.Site = rm.site
		}
		r.replaceRecords(rm.owner, s.recs)
		if r.signing() {
			rm.recSig = s.sig
		}
	}
	r.renewRemote(rm)
	return nil
}

// onRemoteCred checks and keeps an owner's credential for one of its
// runs, as onCred does for one from a link.
func (r *Registry) onRemoteCred(rm *remote, m *message) error {
	if !r.signing() {
		return nil
	}
	c, _ := rm.credOf(m.inc)
	if c != nil || m.inc < rm.inc || rm.creds[1] != nil && m.inc < rm.creds[1].inc {
		return nil
	}
	verify, err := r.cfg.Identity.Verifier(m.owner, m.cred)
	if errors.Is(err, ErrUntrusted) {
		level := slog.LevelDebug
		if rm.untrusted == 0 {
			level = slog.LevelWarn
		}
		rm.untrusted = m.inc
		r.log.Log(context.Background(), level, "registry: remote owner's credential not trusted here; nothing of its run applies", "owner", m.owner, "site", rm.site, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: credential of owner %q: %v", ErrForged, m.owner, err)
	}
	if !verify(credSigned(m.owner, m.inc, m.cred), m.sig) {
		return fmt.Errorf("%w: credential of owner %q for run %d: not signed by its key", ErrForged, m.owner, m.inc)
	}
	rm.addCred(&cred{inc: m.inc, verify: verify})
	return nil
}

// remoteSigned checks that sig is rm's signature of signed in its run
// inc, as checkSigned does for a link: false, nil when the credential
// is not held (the owner is asked for it, unless it is of a later run
// or not trusted here).
func (r *Registry) remoteSigned(rm *remote, inc uint64, what string, signed, sig []byte) (bool, error) {
	c, later := rm.credOf(inc)
	if c == nil {
		if !later && rm.untrusted != inc {
			r.busWant(rm)
		}
		return false, nil
	}
	if !c.verify(signed, sig) {
		return false, fmt.Errorf("%w: %s of owner %q run %d", ErrForged, what, rm.id, inc)
	}
	return true, nil
}

// expireRemotes hides the records of owners of other sites that said
// nothing for their Lifetime (stretched by how late this process runs,
// as for owners known through relays), and forgets those silent or gone
// for longer. r.mu is held.
func (r *Registry) expireRemotes(now time.Time) {
	for _, rm := range r.sites.remotes {
		lifetime := lag.Stretch(r.lifetimeOf(rm.owner))
		age := now.Sub(rm.renewed)
		if !rm.expired && !rm.leaving && age > lifetime {
			rm.expired = true
			r.setLive(rm.owner, false)
			r.log.Debug("registry: remote owner expired", "owner", rm.id, "site", rm.site)
		}
		if (rm.expired || rm.leaving) && age > 3*lifetime {
			r.forgetRemote(rm)
		}
	}
}

// sameSite notes a message from node of this node's own site: its links
// carry that, and the message is dropped. A node heard so that the links
// do not reach for a while is most likely of another LAN that took the
// same site name (the default one, say): its records will never show
// here, and that is said once, at Warn. r.mu is held.
func (r *Registry) sameSite(node string) {
	if r.sites.clashSaid || r.owners[node] != nil {
		return
	}
	if r.sites.strangers == nil {
		r.sites.strangers = map[string]*stranger{}
	}
	now := time.Now()
	if s := r.sites.strangers[node]; s != nil {
		s.last = now
	} else if len(r.sites.strangers) < 64 {
		r.sites.strangers[node] = &stranger{first: now, last: now}
	}
}

// stranger is when a node of this site's name was first and last heard
// over the bus, its links not reaching it.
type stranger struct{ first, last time.Time }

// checkStrangers says, once, that a node of this site's name has been
// heard over the bus and never reached over links (see sameSite). r.mu
// is held.
func (r *Registry) checkStrangers(now time.Time) {
	for id, s := range r.sites.strangers {
		if x := r.owners[id]; x != nil || now.Sub(s.last) > r.cfg.Lifetime {
			delete(r.sites.strangers, id) // linked after all, or gone
			continue
		}
		if now.Sub(s.first) > 3*r.cfg.Lifetime {
			r.sites.clashSaid = true
			r.sites.strangers = nil
			r.log.Warn("registry: a node of another LAN publishes as this node's site; neither sees the other's records: give each LAN a site of its own", "site", r.cfg.Site, "other", id)
			return
		}
	}
}

// busTick is what each Heartbeat does for the bus: expire silent owners
// of other sites and publish this node's Beat. r.mu is held.
func (r *Registry) busTick(now time.Time) {
	if r.sites.remotes != nil {
		r.expireRemotes(now)
	}
	if r.sites.strangers != nil {
		r.checkStrangers(now)
	}
	r.busBeat()
}

// remoteRecord reports the owner of another site's record id, if this
// node holds one (for ErrNotOwner). r.mu is held.
func (r *Registry) remoteRecord(id string) (string, bool) {
	for _, rm := range r.sites.remotes {
		if _, ok := rm.records[id]; ok {
			return rm.id, true
		}
	}
	return "", false
}
