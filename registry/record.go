package registry

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// MaxNameBytes bounds a role's name.
const MaxNameBytes = 128

// maxVersionBytes bounds a role's version string.
const maxVersionBytes = 128

// Service describes a service to register.
type Service struct {
	// Role is "name@version", e.g. "web@1.2.3". A bare "name" means
	// version 0.0.0. See ParseRole for the rules.
	Role string
	// Host is where the service is reached. Empty means Config.Host.
	Host string
	// Port is the service's TCP port, 0 to 65535; 0 means none (a role
	// without a listener). A node cannot register the same non-zero port
	// twice.
	Port int
	// Meta is small key/value metadata, copied by Register. Its size, the
	// sum of the lengths of keys and values, is at most
	// Config.MaxMetadataBytes.
	Meta map[string]string
}

// Rev is the owner-issued version of a record: the owner's incarnation (the
// time it started, in Unix nanoseconds, so a restarted node's records
// replace its old ones) and the owner's change counter within it.
type Rev struct {
	Incarnation uint64
	Seq         uint64
}

// Compare returns -1, 0 or +1 as r is older than, equal to or newer than o.
func (r Rev) Compare(o Rev) int {
	if c := cmp.Compare(r.Incarnation, o.Incarnation); c != 0 {
		return c
	}
	return cmp.Compare(r.Seq, o.Seq)
}

// Record is one registered service instance as every node sees it. Records
// returned by the registry are copies: the caller may keep and change them.
type Record struct {
	// ID identifies the record cluster-wide. The owner issues it; it is
	// opaque (do not parse it).
	ID string
	// Name and Version form the role: Name@Version. Version is the
	// canonical semantic version ("1.2.3", "2.0.0-rc.1").
	Name    string
	Version string
	// Owner is the id of the node that registered the record; only it may
	// update or free the record.
	Owner string
	// Host and Port tell where to reach the service.
	Host string
	Port int
	// Meta is the record's metadata (never nil on records the registry
	// returns).
	Meta map[string]string
	// Rev is the owner-issued version of the record's last change.
	Rev Rev
	// Site is the owner's site (Config.Site): this node's own for the
	// records its links bring, another's for those a bus brings
	// (ServeBus). Empty when sites are not named.
	Site string
}

// Role returns "name@version".
func (r Record) Role() string { return r.Name + "@" + r.Version }

// Addr returns "host:port", ready for net.Dial.
func (r Record) Addr() string { return net.JoinHostPort(r.Host, strconv.Itoa(r.Port)) }

// ParseRole splits a role "name@version" into its name and canonical
// version. A bare "name" has version "0.0.0".
//
// A name is 1 to MaxNameBytes bytes of ASCII letters, digits, '.', '-' and
// '_', starting with a letter or a digit; names are case-sensitive. The
// version is a semantic version (a leading "v" and missing minor or patch
// parts are accepted: "v1.2" is 1.2.0). Errors wrap ErrBadRole.
func ParseRole(role string) (name, version string, err error) {
	name, ver, hasVer := strings.Cut(role, "@")
	if err := checkName(name); err != nil {
		return "", "", fmt.Errorf("%w %q: %v", ErrBadRole, role, err)
	}
	if !hasVer {
		return name, "0.0.0", nil
	}
	v, err := parseVersion(ver)
	if err != nil {
		return "", "", fmt.Errorf("%w %q: %v", ErrBadRole, role, err)
	}
	return name, v.String(), nil
}

func parseVersion(s string) (*semver.Version, error) {
	if s == "" {
		return nil, fmt.Errorf("empty version")
	}
	if len(s) > maxVersionBytes {
		return nil, fmt.Errorf("version longer than %d bytes", maxVersionBytes)
	}
	v, err := semver.NewVersion(s)
	if err != nil {
		return nil, fmt.Errorf("version %q: %v", s, err)
	}
	return v, nil
}

// checkName reports why name is not a valid role name, or nil.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("empty name")
	}
	if len(name) > MaxNameBytes {
		return fmt.Errorf("name longer than %d bytes", MaxNameBytes)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '-' || c == '_') && i > 0:
		default:
			return fmt.Errorf("name %q: character %q at %d not allowed (letters, digits, '.', '-', '_'; first a letter or digit)", name, c, i)
		}
	}
	return nil
}

// metaSize is the size of metadata as the limits count it.
func metaSize(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// entry is a record as the registry stores it: the Record (whose Meta the
// registry owns and never hands out) and its parsed version.
type entry struct {
	rec Record
	ver *semver.Version
	// sum is the record's digest, when summed (see entry.digest): only
	// owners that sign need it.
	sum    [32]byte
	summed bool
}

// record returns a copy of e's record for a caller.
func (e *entry) record() Record {
	r := e.rec
	r.Meta = maps.Clone(e.rec.Meta)
	if r.Meta == nil {
		r.Meta = map[string]string{}
	}
	return r
}

// compareEntries orders records by name, version, owner and id.
func compareEntries(a, b *entry) int {
	if c := strings.Compare(a.rec.Name, b.rec.Name); c != 0 {
		return c
	}
	if c := a.ver.Compare(b.ver); c != 0 {
		return c
	}
	if c := strings.Compare(a.rec.Owner, b.rec.Owner); c != 0 {
		return c
	}
	return strings.Compare(a.rec.ID, b.rec.ID)
}
