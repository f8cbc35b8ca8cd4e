package registry

import (
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Query selects records by role name and a semantic-version range.
//
// Its text form is "name", "name@range" or "" (every record). The range is a
// Masterminds/semver/v3 constraint: "1.2.3" (exactly), "^1.2", "~1.2",
// ">=1.0 <2", "1.x", "1.2.x", "*", alternatives joined by "||". As in
// that library, a range without a prerelease part does not match prerelease
// versions; a bare "name" matches every version, prereleases included.
type Query struct {
	// Name is the role name; empty matches every name (only in the query "").
	Name string
	// Range is the version constraint as written; empty matches every
	// version.
	Range string

	c *semver.Constraints
}

// ParseQuery parses a query. A malformed name or range is an error wrapping
// ErrBadQuery, never a query that silently matches nothing.
func ParseQuery(s string) (Query, error) {
	if s == "" {
		return Query{}, nil
	}
	name, rng, hasRange := strings.Cut(s, "@")
	if err := checkName(name); err != nil {
		return Query{}, fmt.Errorf("%w %q: %v", ErrBadQuery, s, err)
	}
	q := Query{Name: name}
	if !hasRange {
		return q, nil
	}
	if strings.TrimSpace(rng) == "" {
		return Query{}, fmt.Errorf("%w %q: empty version range after '@'", ErrBadQuery, s)
	}
	c, err := semver.NewConstraint(rng)
	if err != nil {
		return Query{}, fmt.Errorf("%w %q: range %q: %v", ErrBadQuery, s, rng, err)
	}
	q.Range, q.c = rng, c
	return q, nil
}

// String returns the query's text form.
func (q Query) String() string {
	if q.Range == "" {
		return q.Name
	}
	return q.Name + "@" + q.Range
}

// Match reports whether the record r satisfies the query.
func (q Query) Match(r Record) bool {
	if q.Name != "" && q.Name != r.Name {
		return false
	}
	if q.c == nil {
		return true
	}
	v, err := semver.NewVersion(r.Version)
	return err == nil && q.c.Check(v)
}

// matches is Match for a stored entry (its version already parsed).
func (q *Query) matches(e *entry) bool {
	if q.Name != "" && q.Name != e.rec.Name {
		return false
	}
	return q.c == nil || q.c.Check(e.ver)
}
