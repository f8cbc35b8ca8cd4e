package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
)

// Identity proves what a node says about itself to every node that
// relays it (see Config.Identity): a credential that binds a key to the
// node's id, and signatures by that key. In the mesh, with TLS, the
// credential is the node's certificate chain, checked as the link
// handshake checks it. Its methods may be called concurrently.
type Identity interface {
	// Credential returns this node's public credential, sent to peers
	// ahead of what it signs. The registry does not change it.
	Credential() []byte
	// Sign returns this node's signature of msg.
	Sign(msg []byte) ([]byte, error)
	// Verifier checks that cred is a valid credential of node id owner,
	// and returns what checks that owner's signatures: verify(msg, sig)
	// reports whether sig is the owner's signature of msg. It returns an
	// error, saying why, for a credential that is not valid: one wrapping
	// ErrUntrusted when it cannot be proven here (its chain does not
	// verify: expired, an authority not trusted here), which another
	// node may have taken in good faith; any other for one that is
	// proven not to be the owner's (it names another id) or malformed.
	// It must not keep cred.
	Verifier(owner string, cred []byte) (verify func(msg, sig []byte) bool, err error)
}

// What an owner signs: the bytes below, each opened by its own label so
// that no signature of one kind passes for another.
const (
	labelState   = "tallship registry state v1\x00"
	labelRecords = "tallship registry records v1\x00"
	labelCred    = "tallship registry credential v1\x00"
)

// stateSigned returns what the owner of a state signs: the whole state
// that results, whichever form it goes in (whole, or a delta on the
// adjacency issued at an earlier beat), so that a relay may send either.
// peers is the whole adjacency, in order; adjAt the beat it was issued at.
func stateSigned(owner string, inc, seq, beat uint64, leaving bool, adjAt uint64, peers []peerRef, lifetime time.Duration) []byte {
	b := make([]byte, 0, len(labelState)+40+len(owner)+len(peers)*(12+36))
	b = append(b, labelState...)
	b = appendOwner(b, owner, inc, seq)
	b = binary.AppendUvarint(b, beat)
	if leaving {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, adjAt)
	b = binary.AppendUvarint(b, uint64(len(peers)))
	for _, p := range peers {
		b = appendString(b, p.id)
		b = binary.AppendUvarint(b, p.inc)
	}
	return binary.AppendUvarint(b, uint64(max(lifetime.Milliseconds(), 0)))
}

// recordsSigned returns what an owner signs for its records at (inc,
// seq): their digest (see recordsDigest). Every Put, Del and snapshot
// carries the signature of the record set it leaves, so a relay can
// send the set in a snapshot of its own making, and cannot leave a
// record out, bring back a freed one or change one.
func recordsSigned(owner string, inc, seq uint64, digest [sha256.Size]byte) []byte {
	b := make([]byte, 0, len(labelRecords)+30+len(owner)+len(digest))
	b = append(b, labelRecords...)
	b = appendOwner(b, owner, inc, seq)
	return append(b, digest[:]...)
}

// credSigned returns what an owner signs for its credential in its run
// inc: that run is its own, so that nobody can announce a later run of
// it with its credential.
func credSigned(owner string, inc uint64, cred []byte) []byte {
	sum := sha256.Sum256(cred)
	b := make([]byte, 0, len(labelCred)+20+len(owner)+len(sum))
	b = append(b, labelCred...)
	b = appendString(b, owner)
	b = binary.AppendUvarint(b, inc)
	return append(b, sum[:]...)
}

// digest returns the hash of e's record as its owner issued it (the
// metadata in the order of its keys), computed once.
func (e *entry) digest() [sha256.Size]byte {
	if e.summed {
		return e.sum
	}
	b := appendRecordMeta(make([]byte, 0, recordSize(e)), e, true)
	e.sum, e.summed = sha256.Sum256(b), true
	return e.sum
}

// recordsDigest returns the digest of the record set recs, with the
// record id replaced by put, or removed when put is nil (id "": recs as
// they are): the hash of its records' hashes in the order of their ids.
func recordsDigest(recs map[string]*entry, id string, put *entry) [sha256.Size]byte {
	ids := make([]string, 0, len(recs)+1)
	for k := range recs {
		if k != id {
			ids = append(ids, k)
		}
	}
	if put != nil {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, k := range ids {
		e := recs[k]
		if k == id {
			e = put
		}
		s := e.digest()
		h.Write(s[:])
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// cred is an owner's credential for one of its runs, checked.
type cred struct {
	inc    uint64
	frame  []byte                     // the Cred message, for peers that lack it
	verify func(msg, sig []byte) bool // nil for this node's own
}

// credOf returns o's credential for its run inc, if held, and whether
// a later run's is held (a message of run inc is then stale).
func (o *owner) credOf(inc uint64) (c *cred, later bool) {
	for _, c := range o.creds {
		if c != nil && c.inc == inc {
			return c, false
		}
		if c != nil && c.inc > inc {
			later = true
		}
	}
	return nil, later
}

// addCred keeps c among o's two latest credentials: the current run's
// and a later one's, whose messages may come before the current run's
// last ones have all arrived.
func (o *owner) addCred(c *cred) {
	if o.creds[0] == nil || c.inc > o.creds[0].inc {
		o.creds[0], o.creds[1] = c, o.creds[0]
	} else if o.creds[1] == nil || c.inc > o.creds[1].inc {
		o.creds[1] = c
	}
}

// signing reports whether owners sign what they issue (Config.Identity).
func (r *Registry) signing() bool { return r.cfg.Identity != nil }

// ownCred makes this node's Cred message. r.mu is held (or r is new).
func (r *Registry) ownCred() error {
	id := r.cfg.Identity
	c := id.Credential()
	sig, err := id.Sign(credSigned(r.self.id, r.self.inc, c))
	if err != nil {
		return fmt.Errorf("registry: sign the credential: %w", err)
	}
	f, err := encodeCred(r.self.id, r.self.inc, c, sig, r.cfg.MaxMessageBytes)
	if err != nil {
		return err
	}
	r.self.addCred(&cred{inc: r.self.inc, frame: f})
	return nil
}

// signRecords returns this node's signature of its records at seq as a
// change leaves them: the record id set to put, or freed (put nil); nil
// when not signing. r.mu is held.
func (r *Registry) signRecords(seq uint64, id string, put *entry) ([]byte, error) {
	if !r.signing() {
		return nil, nil
	}
	d := recordsDigest(r.self.records, id, put)
	sig, err := r.cfg.Identity.Sign(recordsSigned(r.self.id, r.self.inc, seq, d))
	if err != nil {
		return nil, fmt.Errorf("registry: sign a change of records: %w", err)
	}
	return sig, nil
}

// credTo returns o's Cred message for l's peer ahead of a message of o's
// run inc, unless the peer has it (or was sent it) or owners do not sign.
// r.mu is held.
func (r *Registry) credTo(l *link, o *owner, inc uint64) []byte {
	if !r.signing() || l.creds[o.id] == inc {
		return nil
	}
	c, _ := o.credOf(inc)
	if c == nil {
		return nil
	}
	l.noteCred(o.id, inc)
	return c.frame
}

// onCred checks and keeps an owner's credential for one of its runs. A
// credential that is not valid for the owner, or whose run is not signed
// by its key, is a forgery: the link closes (ErrForged). r.mu is held.
func (r *Registry) onCred(l *link, m *message, frame []byte) error {
	if !r.signing() || m.owner == r.self.id {
		return nil
	}
	l.noteCred(m.owner, m.inc)
	if o := r.owners[m.owner]; o != nil {
		c, _ := o.credOf(m.inc)
		if c != nil || m.inc < o.inc || o.creds[1] != nil && m.inc < o.creds[1].inc {
			return nil // held, or of a run that is over
		}
	}
	verify, err := r.cfg.Identity.Verifier(m.owner, m.cred)
	if errors.Is(err, ErrUntrusted) {
		// Not provably forged (a certificate that expired since the
		// relay checked it): nothing of that run applies here, and the
		// link stays. Said once per owner at Warn.
		o := r.owner(m.owner)
		level := slog.LevelDebug
		if o.untrusted == 0 {
			level = slog.LevelWarn
		}
		o.untrusted = m.inc
		r.log.Log(context.Background(), level, "registry: owner's credential not trusted here; nothing of its run applies", "owner", m.owner, "inc", m.inc, "peer", l.peer, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: credential of owner %q from peer %s: %v", ErrForged, m.owner, l.peer, err)
	}
	if !verify(credSigned(m.owner, m.inc, m.cred), m.sig) {
		return fmt.Errorf("%w: credential of owner %q for run %d from peer %s: not signed by its key", ErrForged, m.owner, m.inc, l.peer)
	}
	r.owner(m.owner).addCred(&cred{inc: m.inc, frame: frameOf(frame), verify: verify})
	return nil
}

// checkSigned checks that sig is o's signature of signed, in its run inc.
// It returns true when it is; false, nil when o's credential for that
// run is not held (the message is dropped: stale when a later run's is
// held, else its owner is asked for, as for a gap: the answer brings the
// credential); and an error wrapping ErrForged when the signature fails.
// r.mu is held.
func (r *Registry) checkSigned(l *link, o *owner, inc uint64, what string, signed, sig []byte) (bool, error) {
	c, later := o.credOf(inc)
	if c == nil {
		if !later && o.untrusted != inc {
			r.want(l, o.id)
		}
		return false, nil
	}
	if !c.verify(signed, sig) {
		return false, fmt.Errorf("%w: %s of owner %q run %d from peer %s", ErrForged, what, o.id, inc, l.peer)
	}
	return true, nil
}

// checkState checks the signature of m, a state of o newer than the one
// held, whose delta (if it is one) applies to the adjacency held. r.mu
// is held.
func (r *Registry) checkState(l *link, o *owner, m *message) (bool, error) {
	peers, adjAt := m.peers, m.base
	if m.delta {
		adj := maps.Clone(o.peers)
		if adj == nil {
			adj = map[string]uint64{}
		}
		for _, c := range m.peers {
			if c.inc == 0 {
				delete(adj, c.id)
			} else {
				adj[c.id] = c.inc
			}
		}
		peers = make([]peerRef, 0, len(adj))
		for id, inc := range adj {
			peers = append(peers, peerRef{id: id, inc: inc})
		}
		slices.SortFunc(peers, func(a, b peerRef) int { return strings.Compare(a.id, b.id) })
		adjAt = m.beat
	}
	signed := stateSigned(m.owner, m.inc, m.seq, m.beat, m.leaving, adjAt, peers, m.lifetime)
	return r.checkSigned(l, o, m.inc, "state", signed, m.sig)
}

// checkRecords checks sig, o's signature of its records at (inc, seq)
// whose digest is d. r.mu is held.
func (r *Registry) checkRecords(l *link, o *owner, inc, seq uint64, d [sha256.Size]byte, sig []byte) (bool, error) {
	return r.checkSigned(l, o, inc, "records", recordsSigned(o.id, inc, seq, d), sig)
}

// cloneSig returns a copy of a signature read from a frame.
func cloneSig(sig []byte) []byte { return bytes.Clone(sig) }
