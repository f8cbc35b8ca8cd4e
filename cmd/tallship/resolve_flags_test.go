package main

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// TestAddressFlagsTakeNames: --advertise and --dns-server take host names
// (here "localhost", from /etc/hosts), resolved as the node starts; a
// value that is not an address, or a name that does not resolve, is a
// usage error that names it.
func TestAddressFlagsTakeNames(t *testing.T) {
	netns.Require(t) // a name that does not resolve is asked of the system's resolver
	for _, tc := range []struct {
		name      string
		flags     nodeFlags
		advertise []netip.AddrPort
		dnsServer string
		err       string // the usage error's text; empty: none
	}{
		{
			name:      "advertise a name",
			flags:     nodeFlags{advertise: stringList{"localhost:7946", "10.0.0.1:7000"}},
			advertise: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7946"), netip.MustParseAddrPort("10.0.0.1:7000")},
		},
		{
			name:      "DNS server by name",
			flags:     nodeFlags{dns: stringList{"tallship.service.consul"}, dnsServer: "localhost:8600"},
			dnsServer: "127.0.0.1:8600",
		},
		{
			name:      "DNS server by name, default port",
			flags:     nodeFlags{dns: stringList{"tallship.service.consul"}, dnsServer: "localhost"},
			dnsServer: "127.0.0.1:53",
		},
		{
			name:      "DNS server by address",
			flags:     nodeFlags{dns: stringList{"tallship.service.consul"}, dnsServer: "[::1]"},
			dnsServer: "[::1]:53",
		},
		{
			name:  "advertise a bad address",
			flags: nodeFlags{advertise: stringList{"local host:7946"}},
			err:   `--advertise "local host:7946": want ip:port or name:port`,
		},
		{
			name:  "advertise a name that does not resolve",
			flags: nodeFlags{advertise: stringList{"nowhere.invalid:7946"}},
			err:   `--advertise "nowhere.invalid:7946": cannot resolve "nowhere.invalid"`,
		},
		{
			name:  "DNS server that does not resolve",
			flags: nodeFlags{dns: stringList{"tallship.service.consul"}, dnsServer: "nowhere.invalid"},
			err:   `--dns-server "nowhere.invalid": cannot resolve "nowhere.invalid"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tc.flags.logLevel = "off"
			cfg, err := tc.flags.config(ctx, io.Discard)
			if tc.err != "" {
				var usage *usageError
				if !errors.As(err, &usage) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("config = %v, want a usage error %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Advertise, tc.advertise) {
				t.Errorf("Advertise = %v, want %v", cfg.Advertise, tc.advertise)
			}
			server := ""
			for _, d := range cfg.Discovery {
				if d, ok := d.(*discovery.DNS); ok {
					server = d.Server
				}
			}
			if server != tc.dnsServer {
				t.Errorf("DNS server %q, want %q", server, tc.dnsServer)
			}
		})
	}
}
