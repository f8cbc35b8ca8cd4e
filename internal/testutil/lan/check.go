package lan

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/node"
)

// Eventually polls cond until it returns nil and returns how long that
// took. When d passes first it fails t with cond's last error.
func Eventually(t testing.TB, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("lan: after %v, still not %s: %v", d, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// IDs returns the procs' node ids, sorted.
func IDs(procs ...*Proc) []string {
	var ids []string
	for _, p := range procs {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return ids
}

// FullMesh returns nil when each proc is linked with exactly the others.
func FullMesh(procs ...*Proc) error {
	const most = 10 // nodes named in the error
	var bad []string
	for _, p := range procs {
		got, err := p.Peers()
		if err != nil {
			return err
		}
		var lacks, extra []string
		for _, o := range procs {
			if o != p && !slices.Contains(got, o.ID) {
				lacks = append(lacks, node.Short(o.ID))
			}
		}
		for _, id := range got {
			if !slices.ContainsFunc(procs, func(o *Proc) bool { return o.ID == id }) {
				extra = append(extra, node.Short(id))
			}
		}
		if len(lacks) > 0 || len(extra) > 0 {
			bad = append(bad, fmt.Sprintf("%s lacks %v, has others %v", p, lacks, extra))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	n, more := len(bad), ""
	if n > most {
		more = fmt.Sprintf("\n  and %d more", n-most)
		bad = bad[:most]
	}
	return fmt.Errorf("%d of %d nodes short of a full mesh:\n  %s%s", n, len(procs), strings.Join(bad, "\n  "), more)
}

// SeeExactly returns nil when every proc sees exactly the records want
// (compared by id, role and owner), each once.
func SeeExactly(procs []*Proc, want []node.Record) error {
	w := recordKeys(want)
	for _, p := range procs {
		got, err := p.Services("")
		if err != nil {
			return err
		}
		if g := recordKeys(got); !slices.Equal(g, w) {
			return fmt.Errorf("%s sees %d records, want %d:\n  got  %s\n  want %s", p, len(g), len(w), strings.Join(g, " "), strings.Join(w, " "))
		}
	}
	return nil
}

func recordKeys(rs []node.Record) []string {
	var keys []string
	for _, r := range rs {
		keys = append(keys, fmt.Sprintf("%s/%s/%s", node.Short(r.Owner), r.Role, node.Short(r.ID)))
	}
	slices.Sort(keys)
	return keys
}
