package mesh

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckClusterName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster string
		want    string // in the error; "" for none
	}{
		{"word", "demo", ""},
		{"dashes, dots, underscores", "shop-eu.prod_2", ""},
		{"punctuation and symbols", "team/blue:prod+1!", ""},
		{"letters of any script", "équipe-東京", ""},
		{"longest", strings.Repeat("c", MaxClusterBytes), ""},
		{"empty", "", "empty cluster name"},
		{"spaces", "bad cluster name!", `mesh: bad cluster name "bad cluster name!": space ' ' at byte 3`},
		{"tab", "a\tb", `space '\t' at byte 1`},
		{"no-break space", "a\u00a0b", `space '\u00a0' at byte 1`},
		{"newline", "demo\n", `space '\n' at byte 4`},
		{"control", "de\x00mo", "control or invisible character U+0000 at byte 2"},
		{"zero-width", "de\u200bmo", "control or invisible character U+200B at byte 2"},
		{"invalid UTF-8", "de\xffmo", "invalid UTF-8 at byte 2"},
		{"too long", strings.Repeat("c", MaxClusterBytes+1), "mesh: bad cluster name of 4097 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckClusterName(tc.cluster)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckClusterName(%q) = %v, want nil", tc.cluster, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckClusterName(%q) = nil, want an error", tc.cluster)
			}
			if !errors.Is(err, ErrBadCluster) {
				t.Errorf("%v: not ErrBadCluster", err)
			}
			if errors.Is(err, ErrNoCluster) != (tc.cluster == "") {
				t.Errorf("%v: errors.Is(ErrNoCluster) = %v for %q", err, !(tc.cluster == ""), tc.cluster)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "want 1 to 4096 bytes of UTF-8 letters, digits, punctuation or symbols") {
				t.Errorf("error %q, want it to contain %q and say what is allowed", msg, tc.want)
			}
			if strings.Contains(msg, "\n") || len(msg) > 300 {
				t.Errorf("error is not one short line: %q", msg)
			}
		})
	}
}

// TestClusterNameRefused: New and Join refuse a bad name with
// CheckClusterName's error, starting nothing.
func TestClusterNameRefused(t *testing.T) {
	if _, err := New("bad cluster name!", testConfig("a")); !errors.Is(err, ErrBadCluster) {
		t.Errorf("New: %v, want ErrBadCluster", err)
	}
	if _, err := New("", testConfig("a")); !errors.Is(err, ErrNoCluster) {
		t.Errorf("New with no name: %v, want ErrNoCluster", err)
	}
	if n, err := testConfig("a").Join(t.Context(), "bad\x00name"); !errors.Is(err, ErrBadCluster) {
		if n != nil {
			n.Close()
		}
		t.Errorf("Join: %v, want ErrBadCluster", err)
	}
}

// TestLongestClusterNameLinks: two nodes of a cluster whose name has
// MaxClusterBytes bytes link and talk: the limit is what a handshake
// carries.
func TestLongestClusterNameLinks(t *testing.T) {
	cluster := strings.Repeat("é", MaxClusterBytes/2)
	a := start(t, cluster, testConfig("a"))
	b := start(t, cluster, testConfig("b"))
	linkPair(t, b, a)
	if err := b.Send(t.Context(), "a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, a); m.From != "b" || string(m.Data) != "hello" {
		t.Fatalf("a got %+v", m)
	}
}
