package mesh

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxClusterBytes is the longest cluster name, in bytes: the most a link's
// handshake carries (a longer name would join a cluster no node can link
// in).
const MaxClusterBytes = 4096

// ErrBadCluster: a cluster name CheckClusterName refuses, so New and Join
// refuse it too. An empty name is also ErrNoCluster.
var ErrBadCluster = errors.New("mesh: bad cluster name")

// clusterRule says what CheckClusterName allows.
var clusterRule = fmt.Sprintf("want 1 to %d bytes of UTF-8 letters, digits, punctuation or symbols, no spaces or control characters", MaxClusterBytes)

// CheckClusterName returns nil if name can name a cluster, or an error
// wrapping ErrBadCluster that says why not.
//
// A cluster name is 1 to MaxClusterBytes bytes of UTF-8, each character
// a letter, mark, digit, punctuation or symbol: "demo", "shop-eu.prod",
// "équipe_2". Discovery would carry any bytes (mDNS browses a hash of the
// name), but the name is also one word in the command line's output,
// logs and JSON, which spaces, control characters and invalid UTF-8 would
// garble.
func CheckClusterName(name string) error {
	switch {
	case name == "":
		return &clusterNameError{msg: "mesh: empty cluster name; " + clusterRule, empty: true}
	case len(name) > MaxClusterBytes:
		return &clusterNameError{msg: fmt.Sprintf("%v of %d bytes; %s", ErrBadCluster, len(name), clusterRule)}
	}
	for i, r := range name {
		bad := ""
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(name[i:]); size == 1 {
				bad = fmt.Sprintf("invalid UTF-8 at byte %d", i)
			}
		case unicode.IsSpace(r):
			bad = fmt.Sprintf("space %q at byte %d", r, i)
		case !unicode.IsPrint(r):
			bad = fmt.Sprintf("control or invisible character %U at byte %d", r, i)
		}
		if bad != "" {
			return &clusterNameError{msg: fmt.Sprintf("%v %q: %s; %s", ErrBadCluster, name, bad, clusterRule)}
		}
	}
	return nil
}

// clusterNameError is the error of CheckClusterName.
type clusterNameError struct {
	msg   string
	empty bool // also ErrNoCluster
}

func (e *clusterNameError) Error() string { return e.msg }

func (e *clusterNameError) Unwrap() []error {
	if e.empty {
		return []error{ErrBadCluster, ErrNoCluster}
	}
	return []error{ErrBadCluster}
}
