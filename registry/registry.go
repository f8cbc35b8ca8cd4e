package registry

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Registry is one node's replica of the cluster's service registry. Create
// it with New, connect it to directly linked peers with Serve, and Close it
// when done. Its methods are safe for concurrent use.
type Registry struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	closed   bool
	self     *owner
	owners   map[string]*owner            // every owner known, self included
	ids      idTable                      // the owners' ids, for the links' decoders
	links    map[string][]*link           // by peer: every running Serve
	held     map[string]int               // by peer: PeerUp calls not yet undone
	visible  map[string]map[string]*entry // by name, by id: the records of live owners
	ports    map[int]string               // own non-zero ports → record id
	watchers map[*watcher]struct{}
	changed  chan struct{} // closed on the next register/update; nil when no Lookup waits
	dirty    bool          // liveness must be recomputed
	ownFrame []byte        // this node's state as last issued, whole
	// This node's adjacency as last issued (at self.adjAt), and as its
	// last State to every peer said it, at pushedAt: the next change goes
	// as a delta from that one to the peers known to hold it (see
	// bumpState). Both are in the order of the ids, and neither is
	// changed in place.
	issued   []peerRef
	pushed   []peerRef
	pushedAt uint64
	// Adjacency changes are merged for a while before a new state is
	// issued (see announce).
	stateDue   bool        // a change awaits stateTimer
	stateTimer *time.Timer // fires in heartbeatLoop
	// Whole walks of the graph (see settle) are spaced by walkGap.
	walked    time.Time   // when the last whole walk ran
	walkDue   bool        // a walk awaits walkTimer
	walkTimer *time.Timer // fires in heartbeatLoop
	ownersGen uint64      // counts owners created and forgotten
	// Each owner's index (owner.idx), for the bit sets of adjacency
	// (owner.names): the next never given, and those given back.
	idxNext  int
	idxFree  []int
	byIdx    []*owner // by index: nil for one given back
	uncovBuf []peerRefOwner
	adjGen   uint64 // counts changes of this node's adjacency
	peersGen uint64 // counts changes of other owners' adjacency
	lower    bitset // the owners markLower marked (relay's)
	// selfSorted is self.peers in the order of their ids, as a State
	// lists them (see sortedPeer).
	selfSorted []peerRef
	digestBuf  []digestEntry // (see digest)
	above      bitset        // the owners whose ids sort above this node's
	// The neighbours the heartbeat goes to (see beatTargets), found for
	// (peersGen, adjGen, ownersGen).
	beatTo  map[string]bool
	beatKey [3]uint64
	// (peersGen, adjGen) at the last heartbeat, and when forgetCovered
	// last ran.
	tickKey, coveredKey [2]uint64
	// Other owners' states are relayed a while after they arrive (see
	// relayLater): when each is due, and the earliest of those times.
	relayDue   map[*owner]time.Time
	relayNext  time.Time
	relayTimer *time.Timer // fires in heartbeatLoop at relayNext
	queue      []*owner
	// walkSeen: the owners a walk (spread) has done with, by idx.
	walkSeen bitset
	// What ServeBus keeps: the bus's run, the owners of other sites.
	sites siteState

	evmu   sync.Mutex
	events []Event // queued for Config.OnEvent
	evwake chan struct{}

	closing   chan struct{} // closed when Close starts
	done      chan struct{} // closed when the goodbye is flushed: links and timers stop
	evstop    chan struct{} // closed when the dispatcher should drain and stop
	closeDone chan struct{} // closed when Close has finished
	wg        sync.WaitGroup
	serving   sync.WaitGroup

	rr      atomic.Uint64 // Dial's round-robin counter
	relayed atomic.Int64  // messages relayed (for tests)
}

// owner is what this node knows of one node's records and state.
type owner struct {
	id      string
	inc     uint64 // incarnation of everything below
	seq     uint64 // version of records (contiguous changes)
	beat    uint64 // version of the state; 0 = no state known
	leaving bool   // the node closed
	// lifetime is the record lifetime the owner announced; 0 = this
	// node's own Lifetime applies.
	lifetime time.Duration
	peers    map[string]uint64 // its adjacency as it announced it: peer → peer's incarnation
	// idx numbers it among the owners known here (0: this node), and
	// names holds the idx of each owner whose current run peers names:
	// the walk and the relays ask "does u name v?" for every pair of
	// owners, and a bit is cheaper than a look-up by id (see nameBit).
	idx   int
	names bitset
	adjAt uint64 // the beat peers was issued at
	// lossBeat is the beat of its latest state here that removed a link
	// or left: a peer holding an older state of its run lacks more than
	// added links (see onHello).
	lossBeat uint64
	// relayedAt is when its state was last queued for relaying, and
	// renewOnly whether that queued relay only renews it (see renewLater).
	relayedAt time.Time
	renewOnly bool
	// namedAt is the beat of its state, here, from which its adjacency
	// names this node's run (0: it does not): a peer holding that state
	// or a later one can have it renewed by this node's link to it (see
	// vouched).
	namedAt uint64
	// Its state as a whole State frame, for syncs and relays: as received,
	// or encoded from the fields above when first needed (nil until then,
	// and always for this node's own: see ownFrame).
	frame []byte
	// When its latest state came as a delta: that frame, as received, and
	// the beat of the adjacency it changes. A peer known to hold a state
	// of that adjacency is relayed the delta instead of the whole state.
	delta     []byte
	deltaBase uint64
	records   map[string]*entry
	renewed   time.Time // when beat last rose here, or its link here was last up
	expired   bool      // not renewed within Lifetime
	live      bool      // reachable and renewed: its records are visible
	// gone: the transport knows this run is over (PeerGone); only a newer
	// state of it renews it, not a link, nor a neighbour's (see expire).
	gone bool

	// For the reachability walk: the owners peers names, resolved (nil
	// when to resolve again: peers changed, or owners came or went since
	// adjGen), and whether the walk reached it. Dropped, not kept for
	// reuse, when peers change: at idle, a whole mesh's slices were 2 KiB
	// a link side.
	adj     []adjRef
	adjGen  uint64
	reached bool

	// When owners sign (Config.Identity): its credentials for its latest
	// runs (see addCred), its signature of its records at (inc, seq), and
	// of its state at (inc, beat), whose seq was stateSeq: what this node
	// sends of it in frames of its own making carries them.
	creds [2]*cred
	// untrusted is the run of its latest credential that Identity could
	// not prove here (ErrUntrusted): its messages are dropped, not asked
	// for again.
	untrusted uint64
	recSig    []byte
	stateSig  []byte
	stateSeq  uint64
}

// adjRef is a neighbour an owner announces, and the incarnation of it
// that it names.
type adjRef struct {
	o   *owner
	inc uint64
}

// lastIncarnation makes incarnations unique and increasing in a process,
// even when the clock does not move (synctest) or steps back.
var lastIncarnation atomic.Uint64

func newIncarnation() uint64 {
	now := uint64(time.Now().UnixNano())
	for {
		old := lastIncarnation.Load()
		n := max(now, old+1)
		if lastIncarnation.CompareAndSwap(old, n) {
			return n
		}
	}
}

// New returns a running Registry for the node cfg.ID, linked to nobody yet.
// It returns an error wrapping ErrConfig for an invalid Config.
func New(cfg Config) (*Registry, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Registry{
		cfg:       cfg,
		log:       cfg.Logger.With("node", cfg.ID),
		owners:    map[string]*owner{},
		links:     map[string][]*link{},
		held:      map[string]int{},
		visible:   map[string]map[string]*entry{},
		ports:     map[int]string{},
		watchers:  map[*watcher]struct{}{},
		evwake:    make(chan struct{}, 1),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
		evstop:    make(chan struct{}),
		closeDone: make(chan struct{}),
	}
	r.self = &owner{
		id:      cfg.ID,
		inc:     newIncarnation(),
		beat:    1,
		adjAt:   1,
		peers:   map[string]uint64{},
		records: map[string]*entry{},
		renewed: time.Now(),
		live:    true,
		reached: true,
	}
	r.owners[cfg.ID] = r.self
	r.idxNext, r.byIdx = 1, []*owner{r.self} // self's is 0
	r.issued, r.pushed, r.pushedAt = []peerRef{}, []peerRef{}, 1
	r.ids.add(cfg.ID)
	r.walkTimer = time.NewTimer(time.Hour)
	r.walkTimer.Stop()
	r.relayDue = map[*owner]time.Time{}
	r.relayTimer = time.NewTimer(time.Hour)
	r.relayTimer.Stop()
	r.stateTimer = time.NewTimer(time.Hour)
	r.stateTimer.Stop()
	if r.signing() {
		if err := r.ownCred(); err != nil {
			return nil, err
		}
	}
	if _, err := r.ownState(false); err != nil {
		return nil, err
	}
	r.wg.Add(2)
	go r.heartbeatLoop()
	go r.dispatchLoop()
	return r, nil
}

// ID returns this node's id.
func (r *Registry) ID() string { return r.cfg.ID }

// Register registers a service owned by this node and pushes it to every
// peer at once. It returns the record as registered.
//
// Errors: ErrBadRole (malformed Role), ErrBadService (port out of range,
// host too long), ErrMetadataTooLarge, ErrTooManyRecords (this node holds
// Config.MaxRecordsPerOwner records), ErrPortTaken (this node already
// registered Port), ErrClosed.
func (r *Registry) Register(s Service) (Record, error) {
	name, ver, err := ParseRole(s.Role)
	if err != nil {
		return Record{}, err
	}
	v, _ := parseVersion(ver)
	host := s.Host
	if host == "" {
		host = r.cfg.Host
	}
	if len(host) > MaxHostBytes {
		return Record{}, fmt.Errorf("%w: host longer than %d bytes", ErrBadService, MaxHostBytes)
	}
	if s.Port < 0 || s.Port > 65535 {
		return Record{}, fmt.Errorf("%w: port %d out of range", ErrBadService, s.Port)
	}
	if n := metaSize(s.Meta); n > r.cfg.MaxMetadataBytes {
		return Record{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMetadataTooLarge, n, r.cfg.MaxMetadataBytes)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Record{}, ErrClosed
	}
	o := r.self
	if len(o.records) >= r.cfg.MaxRecordsPerOwner {
		return Record{}, fmt.Errorf("%w: limit %d", ErrTooManyRecords, r.cfg.MaxRecordsPerOwner)
	}
	if id, ok := r.ports[s.Port]; ok && s.Port != 0 {
		return Record{}, fmt.Errorf("%w: port %d (record %s)", ErrPortTaken, s.Port, id)
	}
	seq := o.seq + 1
	e := &entry{
		rec: Record{
			ID:      o.id + "/" + strconv.FormatUint(o.inc, 36) + "." + strconv.FormatUint(seq, 10),
			Name:    name,
			Version: ver,
			Owner:   o.id,
			Host:    host,
			Port:    s.Port,
			Meta:    cloneMeta(s.Meta),
			Rev:     Rev{Incarnation: o.inc, Seq: seq},
		},
		ver: v,
	}
	sig, err := r.signRecords(seq, e.rec.ID, e)
	if err != nil {
		return Record{}, err
	}
	frame, err := encodePutSigned(o.id, o.inc, e, sig, r.cfg.MaxMessageBytes)
	if err != nil {
		return Record{}, err
	}
	o.seq, o.recSig = seq, sig
	if s.Port != 0 {
		r.ports[s.Port] = e.rec.ID
	}
	r.setRecord(o, e)
	r.pushRecords(frame)
	return e.record(), nil
}

// Update replaces the metadata of a record this node owns and pushes the
// change to every peer. It returns the updated record.
//
// Errors: ErrNotOwner (another node's record; nothing changes),
// ErrNotFound, ErrMetadataTooLarge, ErrClosed.
func (r *Registry) Update(id string, meta map[string]string) (Record, error) {
	if n := metaSize(meta); n > r.cfg.MaxMetadataBytes {
		return Record{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMetadataTooLarge, n, r.cfg.MaxMetadataBytes)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, err := r.ownRecord(id)
	if err != nil {
		return Record{}, err
	}
	o := r.self
	e := &entry{rec: old.rec, ver: old.ver}
	e.rec.Meta = cloneMeta(meta)
	e.rec.Rev.Seq = o.seq + 1
	sig, err := r.signRecords(o.seq+1, id, e)
	if err != nil {
		return Record{}, err
	}
	frame, err := encodePutSigned(o.id, o.inc, e, sig, r.cfg.MaxMessageBytes)
	if err != nil {
		return Record{}, err
	}
	o.seq++
	o.recSig = sig
	r.setRecord(o, e)
	r.pushRecords(frame)
	return e.record(), nil
}

// Free frees a record this node owns, here and on every peer at once.
//
// Errors: ErrNotOwner (another node's record: nothing changes, here or
// anywhere), ErrNotFound, ErrClosed.
func (r *Registry) Free(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, err := r.ownRecord(id)
	if err != nil {
		return err
	}
	o := r.self
	sig, err := r.signRecords(o.seq+1, id, nil)
	if err != nil {
		return err
	}
	frame, err := encodeDelSigned(o.id, o.inc, o.seq+1, id, sig, r.cfg.MaxMessageBytes)
	if err != nil {
		return err
	}
	o.seq++
	o.recSig = sig
	if r.ports[e.rec.Port] == id {
		delete(r.ports, e.rec.Port)
	}
	r.delRecord(o, id)
	r.pushRecords(frame)
	return nil
}

// ownRecord returns this node's record id, or why it cannot be changed.
// r.mu is held.
func (r *Registry) ownRecord(id string) (*entry, error) {
	if r.closed {
		return nil, ErrClosed
	}
	if e, ok := r.self.records[id]; ok {
		return e, nil
	}
	for _, o := range r.owners {
		if _, ok := o.records[id]; ok {
			return nil, fmt.Errorf("%w: record %s belongs to %s", ErrNotOwner, id, o.id)
		}
	}
	if owner, ok := r.remoteRecord(id); ok {
		return nil, fmt.Errorf("%w: record %s belongs to %s", ErrNotOwner, id, owner)
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// Services returns the records that match query and whose owners are live,
// sorted by name, version, owner and id. The records are copies.
//
// Errors: ErrBadQuery, ErrClosed.
func (r *Registry) Services(query string) ([]Record, error) {
	q, err := ParseQuery(query)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	return r.match(&q), nil
}

// Reachable reports whether this node reaches a run of node id over the
// links the nodes announce, its own or others' (a path of links both ends
// announce), and that run is renewed and not leaving. The mesh keeps
// dialing a peer whose own link is lost while this holds: the peer lives,
// and others are linked with it.
func (r *Registry) Reachable(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.owners[id]
	return o != nil && o != r.self && o.reached && eligible(o)
}

// Unlinked returns those of ids that node a has no link to, as far as
// this node knows: a link is known when the State held here of a's run
// that this node links names the id's current run, or the id's State
// names a's. With no State of that run of a held here, that is all of
// them. The mesh tells a new peer only the members it is not linked to
// already (its peer exchange).
func (r *Registry) Unlinked(a string, ids []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	pa := r.owners[a]
	if inc, ok := r.self.peers[a]; !ok || pa == nil || pa.inc != inc || pa.beat == 0 {
		return ids
	}
	var out []string
	for _, id := range ids {
		o := r.owners[id]
		if o == nil || o == r.self || o.inc == 0 || !pa.names.has(o.idx) && !o.names.has(pa.idx) {
			out = append(out, id)
		}
	}
	return out
}

// Len returns how many records Services("") would return: those whose
// owners are live. It returns 0 once the registry has closed.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0
	}
	n := 0
	for _, byID := range r.visible {
		n += len(byID)
	}
	return n
}

// match returns copies of the visible records matching q. r.mu is held.
func (r *Registry) match(q *Query) []Record {
	var found []*entry
	collect := func(byID map[string]*entry) {
		for _, e := range byID {
			if q.matches(e) {
				found = append(found, e)
			}
		}
	}
	if q.Name != "" {
		collect(r.visible[q.Name])
	} else {
		for _, byID := range r.visible {
			collect(byID)
		}
	}
	slices.SortFunc(found, compareEntries)
	out := make([]Record, len(found))
	for i, e := range found {
		out[i] = e.record()
	}
	return out
}

// Lookup returns the records matching query as Services does, waiting
// until there is at least one.
//
// Errors: ErrBadQuery, ErrClosed, or ctx.Err() when ctx ends first.
func (r *Registry) Lookup(ctx context.Context, query string) ([]Record, error) {
	q, err := ParseQuery(query)
	if err != nil {
		return nil, err
	}
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, ErrClosed
		}
		if found := r.match(&q); len(found) > 0 {
			r.mu.Unlock()
			return found, nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.closing:
		}
	}
}

// Shutdown leaves the cluster gracefully: it sends every peer a "leaving"
// state, which frees this node's records everywhere at once, waits until
// that state is written on every link or ctx ends, then closes as Close
// does. It returns ctx.Err() when ctx ended before every link took the
// state (the registry is closed all the same), else nil. Calls after the
// first wait for the first to finish.
func (r *Registry) Shutdown(ctx context.Context) error { return r.close(ctx.Done(), ctx.Err) }

// Close closes the registry at once: it closes every link without a
// goodbye (peers free this node's records as soon as its links end),
// which makes the Serve calls return ErrClosed, closes the Watch channels
// and waits for every goroutine the registry started and every Serve call
// to end. It is idempotent and returns nil.
func (r *Registry) Close() error {
	now := make(chan struct{})
	close(now)
	r.close(now, nil)
	return nil
}

// close sends the leaving state (written before the links abort unless
// giveUp is closed already) and closes the registry; it returns cause()
// when giveUp ended the wait for the state to be written.
func (r *Registry) close(giveUp <-chan struct{}, cause func() error) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.closeDone
		return nil
	}
	r.closed = true
	close(r.closing)
	o := r.self
	o.leaving = true
	o.beat++
	frame, err := r.ownState(false)
	var links []*link
	for _, ls := range r.links {
		for _, l := range ls {
			if err == nil && l.ready {
				l.enqueue(frame)
			}
			l.finish()
			links = append(links, l)
		}
	}
	bus := r.busLeave() // the other sites free this node's records at once
	for w := range r.watchers {
		if w.stop() {
			r.wg.Done()
		}
		r.closeWatcher(w)
	}
	r.mu.Unlock()

	var cut error
	for _, l := range links {
		select {
		case <-l.flushed:
			continue
		case <-giveUp:
			if cause != nil {
				cut = cause()
			}
		}
		break
	}
	if bus != nil {
		bus.waitFlushed(giveUp)
		bus.abort()
	}
	for _, l := range links {
		l.abort()
	}
	close(r.done)
	r.serving.Wait()
	close(r.evstop)
	r.wg.Wait()
	close(r.closeDone)
	return cut
}

func cloneMeta(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
