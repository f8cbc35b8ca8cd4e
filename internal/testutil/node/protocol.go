package node

import (
	"time"

	"github.com/tallship-go/tallship/registry"
)

// Event is one line a harness node prints: a JSON object, unset fields
// left out. The package doc lists each Ev and what it carries.
type Event struct {
	// Ev says what happened: start, peer-up, peer-down, synced,
	// id-conflict, discovery-error, nats-up, nats-down, remote-up,
	// remote-down, registered, updated, freed,
	// overflowed, found, lost, msg, stream-read, stream-sent, reply or
	// fatal.
	Ev string `json:"ev"`
	// T is when it happened, in the node's clock (Unix nanoseconds).
	T int64 `json:"t"`
	// ID is the node's own id (start).
	ID string `json:"id,omitempty"`
	// Addrs are the node's addresses (start), the proxy's (a proxy's
	// start), or where discovery found a peer (found, lost).
	Addrs []string `json:"addrs,omitempty"`
	// Peer is the peer (peer-*, synced, id-conflict, found, lost, msg,
	// stream-*) or the record's owner (registered, updated, freed).
	Peer string `json:"peer,omitempty"`
	// Err is what went wrong: why a peer went down, a failed command's
	// error, why a stream ended early (stream-*), why the node could not
	// start (fatal).
	Err string `json:"err,omitempty"`
	// Rec is the record of a service event or of a register's reply.
	Rec *Record `json:"rec,omitempty"`
	// Data is a message's text (msg) or a stream's protocol (stream-*).
	Data string `json:"data,omitempty"`
	// Undelivered counts the messages a peer gone did not acknowledge
	// (peer-down, remote-down).
	Undelivered int `json:"undelivered,omitempty"`
	// Bytes and Sum are how many bytes a stream carried and their
	// SHA-256 in hex (stream-*).
	Bytes int64  `json:"bytes,omitempty"`
	Sum   string `json:"sum,omitempty"`
	// Seq is a reply's command number.
	Seq int `json:"seq,omitempty"`
	// Peers are the linked peers' ids, sorted (a peers reply).
	Peers []string `json:"peers,omitempty"`
	// Records are the records of a services reply (sorted by id), or
	// those the node registered for its -role flags (start).
	Records []Record `json:"records,omitempty"`
}

// Time returns T as a time.Time.
func (e Event) Time() time.Time { return time.Unix(0, e.T) }

// Record is a registry record as a node prints it.
type Record struct {
	ID    string            `json:"id"`
	Role  string            `json:"role"`
	Owner string            `json:"owner"`
	Host  string            `json:"host,omitempty"`
	Port  int               `json:"port,omitempty"`
	Meta  map[string]string `json:"meta,omitempty"`
	Inc   uint64            `json:"inc"`
	Seq   uint64            `json:"seq"`
	Site  string            `json:"site,omitempty"`
}

func toRecord(r registry.Record) Record {
	return Record{ID: r.ID, Role: r.Role(), Owner: r.Owner, Host: r.Host, Port: r.Port, Meta: r.Meta, Inc: r.Rev.Incarnation, Seq: r.Rev.Seq, Site: r.Site}
}
