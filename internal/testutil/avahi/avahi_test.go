package avahi_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/avahi"
	"github.com/tallship-go/tallship/internal/testutil/lan"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

func TestMain(m *testing.M) { netns.Main(m) }

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		line string
		want avahi.Entry
		bad  bool
	}{
		{line: "+;ts0;IPv4;printer;_ipp._tcp;local",
			want: avahi.Entry{Event: "+", Iface: "ts0", Protocol: "IPv4", Name: "printer", Type: "_ipp._tcp", Domain: "local"}},
		{line: `-;ts0;IPv6;Node\0321\.a\\b;_tallship._tcp;local`,
			want: avahi.Entry{Event: "-", Iface: "ts0", Protocol: "IPv6", Name: `Node 1.a\b`, Type: "_tallship._tcp", Domain: "local"}},
		{line: `=;ts0;IPv4;n;_tallship._tcp;local;n.tallship.local;10.77.0.1;7946;"v=1" "c=a;b \"q\"" "i=\195\169"`,
			want: avahi.Entry{Event: "=", Iface: "ts0", Protocol: "IPv4", Name: "n", Type: "_tallship._tcp", Domain: "local",
				Host: "n.tallship.local", Addr: "10.77.0.1", Port: 7946, TXT: []string{"v=1", `c=a;b "q"`, "i=é"}}},
		{line: "=;ts0;IPv6;n;_x._tcp;local;h.local;fe80::1;1;",
			want: avahi.Entry{Event: "=", Iface: "ts0", Protocol: "IPv6", Name: "n", Type: "_x._tcp", Domain: "local",
				Host: "h.local", Addr: "fe80::1", Port: 1}},
		{line: "Failed to resolve service 'x'", bad: true},
		{line: "+;ts0;IPv4;n;_x._tcp", bad: true},
		{line: `=;ts0;IPv4;n;_x._tcp;local;h.local;10.0.0.1;port;""`, bad: true},
		{line: `=;ts0;IPv4;n;_x._tcp;local;h.local;10.0.0.1;1;"open`, bad: true},
		{line: `+;ts0;IPv4;n\;_x._tcp;local`, bad: true},
	} {
		got, err := avahi.ParseEntry(tc.line)
		switch {
		case tc.bad && err == nil:
			t.Errorf("ParseEntry(%q) = %v, want an error", tc.line, got)
		case !tc.bad && err != nil:
			t.Errorf("ParseEntry(%q): %v", tc.line, err)
		case !tc.bad && (got.String() != tc.want.String() || !slices.Equal(got.TXT, tc.want.TXT)):
			t.Errorf("ParseEntry(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

// Two daemons on a private LAN: what one publishes, the other's
// avahi-browse finds and resolves, over IPv4 and IPv6.
func TestPublishBrowse(t *testing.T) {
	avahi.Require(t)
	l := lan.New(t, 2)
	a := avahi.Launch(t, l.Host(0), avahi.Config{HostName: "avahi-a", Interfaces: []string{lan.HostIface}})
	b := avahi.Start(t, l.Host(1), avahi.Config{HostName: "avahi-b", Interfaces: []string{lan.HostIface}})
	a.WaitStarted(t)
	a.Publish(t, avahi.Service{Name: "printer 1", Type: "_ipp._tcp", Port: 631, TXT: []string{"rp=queue", "note=x"}})
	br := b.Browse(t, "_ipp._tcp")
	resolved := func(proto string) func(avahi.Entry) bool {
		return func(e avahi.Entry) bool { return e.Event == "=" && e.Protocol == proto && e.Name == "printer 1" }
	}
	es := br.WaitFor(t, 5*time.Second, "the printer resolved over IPv4 and IPv6", func(es []avahi.Entry) bool {
		return slices.ContainsFunc(es, resolved("IPv4")) && slices.ContainsFunc(es, resolved("IPv6"))
	})
	// avahi publishes its host's AAAA record (link-local) over IPv4 too,
	// and resolves to whichever address it has first.
	e := es[slices.IndexFunc(es, resolved("IPv4"))]
	addr, err := netip.ParseAddr(e.Addr)
	if e.Host != "avahi-a.local" || e.Port != 631 || err != nil || addr != l.Host(0).IP && !addr.IsLinkLocalUnicast() {
		t.Errorf("resolved %v, want avahi-a.local [%s or link-local] port 631", e, l.Host(0).IP)
	}
	if a := b.ResolveHost(t, "avahi-a.local", false); a != l.Host(0).IP {
		t.Errorf("avahi-a.local resolves to %v, want %v", a, l.Host(0).IP)
	}
	txt := slices.Sorted(slices.Values(e.TXT))
	if want := []string{"note=x", "rp=queue"}; !slices.Equal(txt, want) {
		t.Errorf("TXT %q, want %q in any order", e.TXT, want)
	}
}
