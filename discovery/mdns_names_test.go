package discovery

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestInstanceLabel(t *testing.T) {
	for _, tc := range []struct {
		id    string
		plain bool
	}{
		{"0b0ab5a4-9b0c-4f51-9c64-2b1a0a8f6d11", true},
		{"node-1", true},
		{strings.Repeat("a", 56), true},
		{strings.Repeat("a", 57), false},
		{"Node-1", false}, // DNS ignores case; ids do not
		{"node-1.", false},
		{"-node", false},
		{"node-", false},
		{"h-abc", false}, // the hashed form's prefix
		{"nœud", false},
		{"\x00", false},
	} {
		label := instanceLabel("c", tc.id)
		if plain := label == tc.id+"-"+clusterHash("c")[:6]; plain != tc.plain {
			t.Errorf("instanceLabel(c, %q) = %q; plain = %v, want %v", tc.id, label, plain, tc.plain)
		}
		if label == instanceLabel("d", tc.id) {
			t.Errorf("instanceLabel(%q) is the same in two clusters: %q", tc.id, label)
		}
		if _, ok := dns.IsDomainName(label + ".local."); !ok || len(label) > maxLabelLen {
			t.Errorf("instanceLabel(%q) = %q is not a DNS label", tc.id, label)
		}
		if !tc.plain && (!strings.HasPrefix(label, hashedPrefix) || label == instanceLabel("c", tc.id+"x")) {
			t.Errorf("instanceLabel(%q) = %q, want a hash label distinct from another id's", tc.id, label)
		}
	}
}

func TestServiceName(t *testing.T) {
	for _, cluster := range []string{"a", "my-cluster", strings.Repeat("c", 5000), "\x00\xff. _"} {
		name := serviceName(cluster)
		if _, ok := dns.IsDomainName(name); !ok || !strings.HasSuffix(name, "._sub._tallship._tcp.local.") {
			t.Errorf("serviceName(%.20q) = %q", cluster, name)
		}
		if label := strings.SplitN(name, ".", 2)[0]; len(label) != 17 || label != strings.ToLower(label) {
			t.Errorf("serviceName(%.20q) label %q, want _ and 16 lower-case characters", cluster, label)
		}
		if name == serviceName(cluster+"x") {
			t.Errorf("serviceName(%.20q) equals another cluster's", cluster)
		}
	}
}
