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
// publishes its own records and Beats; nothing is relayed. Its records
// change by contiguous steps (inc, seq) as over links, and a gap is
// filled by asking the owner (Want). Only a new Beat of its run, with a
// clock within busWindow of this node's, renews it: its records show
// while such Beats come, once what they announce is held, and expire
// after its Lifetime without one. What else it sends (Put, Del, a
// snapshot) changes its records, shown or not, and renews nothing: an
// old message replayed keeps no dead owner alive. Every function here
// runs with r.mu held.

// remote is what this node knows of an owner of another site.
type remote struct {
	*owner
	site   string
	snap   *busSnap  // a snapshot being received
	wantAt time.Time // when it was last asked for its records
	// heard is the seq its latest Beat announced: its records show once
	// this node holds that much.
	heard uint64
	// observer: its Beats say it only reads the cluster (Config.Observer)
	observer bool
	// clashSaid: a node of its id was heard in another site, and said.
	clashSaid bool
	// member: its RemoteUp was queued (of its run memberInc, of site
	// memberSite), and no RemoteDown since.
	member         bool
	memberInc      uint64
	memberSite     string
	memberObserver bool
}

// busSnap is a snapshot being received over the bus: its chunks come in
// order, each numbered, and it applies only whole.
type busSnap struct {
	inc, seq    uint64
	sig         []byte
	parts, next int // chunks in all; the index of the next one
	bytes       int // of the chunks so far (counted in siteState.snapBytes)
	recs        map[string]*entry
}

// Bounds on what the bus can make a node hold of other sites (vars for
// the tests): how many owners, and the bytes of their snapshots being
// received, of all owners together.
var (
	maxRemotes   = 4096
	maxSnapBytes = 64 << 20
)

// RemoteOwner is a node of another site, heard over the bus (ServeBus).
type RemoteOwner struct {
	ID   string
	Site string
	// Records is how many records of it are visible here.
	Records int
}

// Remotes returns the live nodes of other sites that this node hears
// over the bus, sorted by site and id, but those that only observe
// (Config.Observer) and those it reaches over its links (they are its
// peers). It returns nil once the registry has closed, or when no bus
// ever ran.
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

// Incarnation returns this node's run as the nodes of other sites know
// it (their RemoteUp events' Inc): it is new with each registry.
func (r *Registry) Incarnation() uint64 { return r.self.inc }

// SiteOf returns the site of node id as this node knows it: the site it
// publishes as over the bus when heard there (a node of another site
// that this node also reaches over links, linked by hand), else this
// node's own (Config.Site).
func (r *Registry) SiteOf(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.siteOf(id)
}

// remoteOf returns what this node holds of owner id of site: nil (and
// why, when that is worth a log line) when it holds nothing and may not
// begin to (owners sign and its credential has not come: it is asked,
// when beat, for it; or maxRemotes owners are held), or when id is heard
// in another site as well.
func (r *Registry) remoteOf(id, site string, beat bool) (*remote, error) {
	rm, clash := r.remoteIn(id, site)
	if rm != nil || clash {
		return rm, nil
	}
	if r.signing() {
		if beat {
			r.busAskUnknown(id)
		}
		return nil, nil
	}
	return r.newRemote(id, site)
}

// remoteIn returns what this node holds of owner id when of site (nil
// when it holds nothing). An owner of id heard in another site while
// that one is live is an id conflict (clash), said once, and dropped;
// once that one is silent, id of site begins anew.
func (r *Registry) remoteIn(id, site string) (rm *remote, clash bool) {
	rm = r.sites.remotes[id]
	if rm == nil || rm.site == site {
		return rm, false
	}
	if rm.expired || rm.leaving {
		r.forgetRemote(rm)
		return nil, false
	}
	if !rm.clashSaid {
		rm.clashSaid = true
		r.log.Error("registry: two nodes of one id publish on the bus, in two sites; only one shows: give each node an id of its own", "id", id, "site", rm.site, "other", site)
	}
	return nil, true
}

// newRemote begins what this node holds of owner id of site: nothing
// shown until a Beat of it comes.
func (r *Registry) newRemote(id, site string) (*remote, error) {
	if len(r.sites.remotes) >= maxRemotes {
		return nil, fmt.Errorf("%w: %d owners of other sites held; %q not taken", ErrProtocol, len(r.sites.remotes), id)
	}
	rm := &remote{owner: &owner{id: id, records: map[string]*entry{}, renewed: time.Now(), expired: true}, site: site}
	r.sites.remotes[id] = rm
	return rm, nil
}

func (r *Registry) forgetRemote(rm *remote) {
	r.noteMember(rm, true)
	r.dropSnap(rm)
	r.wipeRecords(rm.owner)
	delete(r.sites.remotes, rm.id)
}

// dropSnap drops the snapshot rm was sending, if any.
func (r *Registry) dropSnap(rm *remote) {
	if rm.snap != nil {
		r.sites.snapBytes -= rm.snap.bytes
		rm.snap = nil
	}
}

// Why a node of another site is a member no longer (RemoteDown's Err;
// nil when it left).
var (
	errRemoteSilent    = errors.New("no new Beat over NATS for its lifetime: it died, or lost NATS")
	errRemoteRestarted = errors.New("restarted")
	errRemoteLinked    = errors.New("reached over links now")
)

// noteMember queues RemoteUp or RemoteDown when rm became, or stopped
// being, a member here, or its run changed since the last one said;
// gone: it is forgotten. r.mu is held.
//
// A member is an owner heard over NATS (a Beat of its run, not expired,
// not leaving) that this node has no link to: the mesh reaches it over
// NATS. Whether its records show from NATS or through links (relayed by
// a neighbour linked to it) is another matter (showRemote): a node of
// another site linked by hand to one node of this site is still a member
// of the others, which reach it only over NATS.
func (r *Registry) noteMember(rm *remote, gone bool) {
	linked := len(r.links[rm.id]) > 0
	live := !gone && !linked && rm.inc != 0 && !rm.expired && !rm.leaving
	now := time.Now()
	if rm.member && (!live || rm.inc != rm.memberInc) {
		var why error
		switch {
		case rm.inc != rm.memberInc:
			why = errRemoteRestarted
		case rm.leaving:
		case linked:
			why = errRemoteLinked
		default:
			why = errRemoteSilent
		}
		rm.member = false
		r.queueEvent(Event{Kind: RemoteDown, Peer: rm.id, Site: rm.memberSite, Inc: rm.memberInc, Observer: rm.memberObserver, Err: why, Time: now})
	}
	if live && !rm.member {
		rm.member, rm.memberInc, rm.memberSite, rm.memberObserver = true, rm.inc, rm.site, rm.observer
		r.queueEvent(Event{Kind: RemoteUp, Peer: rm.id, Site: rm.site, Inc: rm.inc, Observer: rm.observer, Time: now})
	}
}

// resetRemote starts rm's run inc: the owner restarted, its old records
// are gone, and the new run shows from its first Beat.
func (r *Registry) resetRemote(rm *remote, inc uint64, site string) {
	r.wipeRecords(rm.owner)
	rm.live = false
	rm.inc, rm.seq, rm.beat, rm.heard = inc, 0, 0, 0
	rm.leaving, rm.expired = false, true
	rm.recSig = nil
	rm.site = site
	r.dropSnap(rm)
}

// showRemote shows rm's records when it is renewed and holds what its
// Beat announced, unless this node reaches it over its links. An owner
// whose records came before any Beat of its run is asked (the answer
// ends with one).
func (r *Registry) showRemote(rm *remote) {
	if rm.expired && !rm.leaving && rm.beat == 0 {
		r.busWant(rm)
	}
	if rm.live || rm.leaving || rm.expired || rm.seq < rm.heard {
		return
	}
	if x := r.owners[rm.id]; x != nil && x.live {
		for _, e := range x.records {
			e.rec.Site = rm.site // its own site, which the links do not say
		}
		return
	}
	r.setLive(rm.owner, true)
}

// onRemoteBeat applies an owner's Beat, sent at its clock at: its run is
// alive (or leaving), and its records are at seq.
func (r *Registry) onRemoteBeat(rm *remote, site string, at time.Time, m *message) error {
	if m.inc < rm.inc || m.inc == rm.inc && m.beat <= rm.beat {
		return nil // stale, or a duplicate
	}
	now := time.Now()
	if !r.busFresh(at, m.lifetime, now) {
		return fmt.Errorf("%w: beat of owner %q sent %v ago (clocks apart, or a replay)", ErrProtocol, m.owner, now.Sub(at).Round(time.Millisecond))
	}
	if r.signing() {
		signed := beatSigned(m.owner, m.inc, m.seq, m.beat, m.leaving, m.observer, m.lifetime, at)
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
	rm.heard = max(rm.heard, m.seq)
	rm.renewed = now
	if m.leaving {
		rm.leaving = true
		r.dropSnap(rm)
		r.wipeRecords(rm.owner)
		rm.live = false
		r.log.Debug("registry: remote owner left", "owner", rm.id, "site", rm.site)
		return nil
	}
	if rm.leaving {
		return nil
	}
	rm.expired = false
	if m.seq > rm.seq {
		r.busWant(rm) // shown once that comes, not stale before
	}
	r.showRemote(rm)
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
	if m.inc == rm.inc && rm.leaving {
		return nil
	}
	held := rm.records
	if m.inc > rm.inc {
		held = nil // a new run holds nothing yet
	}
	if m.typ == msgPut {
		e := m.recs[0]
		if _, ok := held[e.rec.ID]; !ok && len(held) >= r.cfg.MaxRecordsPerOwner {
			return fmt.Errorf("%w: owner %s already holds %d records", ErrTooManyRecords, rm.id, len(held))
		}
	}
	if r.signing() {
		id, put := m.id, (*entry)(nil)
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
	r.showRemote(rm)
	return nil
}

// onRemoteSnap gathers the chunks of an owner's snapshot, in order, and
// applies it when whole: it replaces what is held when newer, or at the
// same seq (what a snapshot cut short, or not verified, left is
// repaired; the same set changes nothing). A chunk out of order drops
// the snapshot, and the owner is asked again.
func (r *Registry) onRemoteSnap(rm *remote, site string, f *busFrame, m *message) error {
	newer := m.inc > rm.inc || m.inc == rm.inc && m.seq >= rm.seq
	if r.signing() {
		if c, later := rm.credOf(m.inc); c == nil {
			r.dropSnap(rm) // nothing unverified is kept
			if !later && rm.untrusted != m.inc && newer {
				r.busWant(rm)
			}
			return nil
		}
	}
	s := rm.snap
	if f.part == 0 {
		r.dropSnap(rm)
		s = &busSnap{inc: m.inc, seq: m.seq, sig: cloneSig(m.sig), parts: f.parts, recs: map[string]*entry{}}
		rm.snap = s
	} else if s == nil || s.inc != m.inc || s.seq != m.seq || s.parts != f.parts || s.next != f.part || !bytes.Equal(s.sig, m.sig) {
		r.dropSnap(rm) // a chunk was lost
		if newer {
			r.busWant(rm)
		}
		return nil
	}
	s.next++
	s.bytes += len(f.payload)
	r.sites.snapBytes += len(f.payload)
	for _, e := range m.recs {
		s.recs[e.rec.ID] = e
	}
	switch {
	case len(s.recs) > r.cfg.MaxRecordsPerOwner:
		r.dropSnap(rm)
		return fmt.Errorf("%w: snapshot of %s holds more than %d records", ErrTooManyRecords, rm.id, r.cfg.MaxRecordsPerOwner)
	case r.sites.snapBytes > maxSnapBytes:
		r.dropSnap(rm)
		return fmt.Errorf("%w: snapshots being received exceed %d bytes; %s's dropped", ErrProtocol, maxSnapBytes, rm.id)
	case s.next < s.parts:
		return nil
	}
	r.dropSnap(rm)
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
	rm.seq = s.seq
	for _, e := range s.recs {
		e.rec.Site = rm.site
	}
	r.replaceRecords(rm.owner, s.recs)
	if r.signing() {
		rm.recSig = s.sig
	}
	r.showRemote(rm)
	return nil
}

// onRemoteCred checks an owner's credential for one of its runs, as
// onCred does for one from a link, and keeps it: what this node holds of
// an owner of another site begins with it when owners sign.
func (r *Registry) onRemoteCred(id, site string, m *message) error {
	if !r.signing() {
		return nil
	}
	rm, clash := r.remoteIn(id, site)
	if clash {
		return nil
	}
	if rm != nil {
		c, _ := rm.credOf(m.inc)
		if c != nil || m.inc < rm.inc || rm.creds[1] != nil && m.inc < rm.creds[1].inc {
			return nil
		}
	}
	verify, err := r.cfg.Identity.Verifier(m.owner, m.cred)
	if errors.Is(err, ErrUntrusted) {
		r.untrustedRemote(rm, m.owner, site, m.inc, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: credential of owner %q: %v", ErrForged, m.owner, err)
	}
	if !verify(credSigned(m.owner, m.inc, m.cred), m.sig) {
		return fmt.Errorf("%w: credential of owner %q for run %d: not signed by its key", ErrForged, m.owner, m.inc)
	}
	if rm == nil {
		if rm, err = r.newRemote(id, site); rm == nil {
			return err
		}
	}
	delete(r.sites.untrusted, id)
	rm.addCred(&cred{inc: m.inc, verify: verify})
	return nil
}

// untrustedRemote notes that owner's credential for run inc is not
// trusted here: said at Warn once per owner, and the owner is not asked
// again for it.
func (r *Registry) untrustedRemote(rm *remote, owner, site string, inc uint64, err error) {
	level := slog.LevelDebug
	if _, said := r.sites.untrusted[owner]; !said {
		level = slog.LevelWarn
		if r.sites.untrusted == nil {
			r.sites.untrusted = map[string]uint64{}
		}
		if len(r.sites.untrusted) < maxAsked {
			r.sites.untrusted[owner] = inc
		}
	}
	if rm != nil {
		rm.untrusted = inc
	}
	r.log.Log(context.Background(), level, "registry: remote owner's credential not trusted here; nothing of its run applies", "owner", owner, "site", site, "err", err)
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

// expireRemotes hides the records of owners of other sites that sent no
// new Beat for their Lifetime (stretched by how late this process runs,
// as for owners known through relays), and forgets those silent or gone
// for longer: 3 lifetimes, the owner's no longer than this node's for
// that (an owner's Beat may announce up to a day). r.mu is held.
func (r *Registry) expireRemotes(now time.Time) {
	own := lag.Stretch(r.cfg.Lifetime)
	for _, rm := range r.sites.remotes {
		lifetime := lag.Stretch(r.lifetimeOf(rm.owner))
		age := now.Sub(rm.renewed)
		if !rm.expired && !rm.leaving && age > lifetime {
			rm.expired = true
			r.setLive(rm.owner, false)
			r.log.Debug("registry: remote owner expired", "owner", rm.id, "site", rm.site)
		}
		r.noteMember(rm, false) // expired, or handed over to or from links since the last tick
		if (rm.expired || rm.leaving) && age > max(lifetime, 3*min(lifetime, own)) {
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
