package node

import (
	"bytes"
	"encoding/json"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Args writes every field so that Main's flags read it back as it was.
func TestConfigArgsRoundTrip(t *testing.T) {
	for _, c := range []Config{
		{Cluster: "c"},
		{
			Cluster: "c", ID: "n1", Secret: "s", Listen: "10.0.0.1:0", Ifaces: []string{"ts0", "ts1"},
			Timers: "default", KeepAlive: time.Second, WriteTimeout: 2 * time.Second, Heartbeat: 3 * time.Second,
			Lifetime: 4 * time.Second, FallbackDelay: 10 * time.Minute, NoMDNS: true,
			DNSServer: "10.0.0.1:53", DNSName: "_tallship._tcp.x", DNSInterval: 100 * time.Millisecond,
			DiscoveryEvents: true, Connect: []string{"10.0.0.2:7000"}, Roles: []string{"a@1.0.0", "b@2.0.0"},
			Meta: []string{"k=v", "x=a=b"}, Debug: true,
		},
		{Proxy: "listen=10.0.0.1:0,to=10.0.0.2:7000,delay=100ms"},
	} {
		args := c.Args()
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		var got Config
		bind(fs, &got)
		if err := fs.Parse(args); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("Args %q read back as\n%+v, want\n%+v", args, got, c)
		}
	}
	if args := (Config{Cluster: "c"}).Args(); !reflect.DeepEqual(args, []string{"-cluster=c"}) {
		t.Errorf("Args of a Config with only a cluster: %q, want only -cluster", args)
	}
}

// Outside the tests' private namespace the node refuses to start, before
// it sends anything, and says so.
func TestRefusesOutsidePrivateNamespace(t *testing.T) {
	t.Setenv("TALLSHIP_NETNS", "") // what netns.Inside reads: not inside
	for _, args := range [][]string{{"-cluster=c"}, {"-proxy=listen=127.0.0.1:0,to=127.0.0.1:1,delay=1ms"}} {
		var out bytes.Buffer
		err := run(args, &printer{enc: json.NewEncoder(&out)})
		if err == nil || !strings.Contains(err.Error(), "refusing to run outside a private network namespace") {
			t.Errorf("%q: %v, want a refusal", args, err)
		}
		if out.Len() != 0 {
			t.Errorf("%q printed %q before refusing", args, out.String())
		}
	}
}
