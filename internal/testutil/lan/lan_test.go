package lan_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/lan"
	"github.com/tallship-go/tallship/internal/testutil/netns"
	"github.com/tallship-go/tallship/internal/testutil/node"
)

func TestMain(m *testing.M) { netns.Main(m) }

// Two hosts find each other over the LAN, one's service reaches the
// other, and a message goes through.
func TestTwoHosts(t *testing.T) {
	l := lan.New(t, 2)
	a := l.Start(l.Host(0), node.Config{Cluster: "two"})
	b := l.Start(l.Host(1), node.Config{Cluster: "two"})
	d := lan.Eventually(t, 10*time.Second, "linked", func() error { return lan.FullMesh(a, b) })
	t.Logf("linked in %v", d)
	rec := a.Register("web@1.0.0")
	lan.Eventually(t, 5*time.Second, "seen", func() error { return lan.SeeExactly([]*lan.Proc{a, b}, []node.Record{rec}) })
	if err := a.Send(b.ID, "hello there"); err != nil {
		t.Fatal(err)
	}
	e, ok := b.WaitEvent(5*time.Second, func(e node.Event) bool { return e.Ev == "msg" })
	if !ok || e.Data != "hello there" || e.Peer != a.ID {
		t.Fatalf("message: %+v, %v", e, ok)
	}
	if !strings.HasPrefix(a.Addrs[0], l.Host(0).IP.String()+":") {
		t.Errorf("a's addresses %v, want on %s", a.Addrs, l.Host(0).IP)
	}
}

// The LAN leaves nothing in the test's own namespace, and its namespaces
// end with it.
func TestTeardownLeavesNothing(t *testing.T) {
	netns.Require(t)
	before, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Skip(err)
	}
	var holders []string
	t.Run("lan", func(t *testing.T) {
		l := lan.New(t, 3)
		for _, h := range l.Hosts() {
			holders = append(holders, lan.NamespacePath(h))
		}
		for _, p := range holders {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("namespace %s: %v", p, err)
			}
		}
	})
	for _, p := range holders {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("namespace %s outlived its LAN", p)
		}
	}
	after, _ := os.ReadDir("/sys/class/net")
	if len(after) != len(before) {
		t.Errorf("interfaces in the test's namespace: %d before, %d after", len(before), len(after))
	}
}
