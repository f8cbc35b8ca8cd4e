package node

import (
	"flag"
	"strings"
	"time"
)

// Config is a harness node's command line: Args writes it, Main reads it,
// both through one definition of the flags (bind). Its zero value, with a
// Cluster, is a node of mesh.LocalConfig's timers on every address with
// mDNS on every multicast interface.
type Config struct {
	// Cluster to join (-cluster). Required.
	Cluster string
	// ID is the node id (-id); empty means a random one.
	ID string
	// Secret is the cluster secret (-secret); empty means none.
	Secret string
	// Listen is the address links are accepted on (-listen); empty means
	// mesh's default, ":0".
	Listen string
	// Ifaces are the interfaces mDNS runs on (-iface, repeatable); none
	// means mDNS's own choice.
	Ifaces []string
	// Timers is the preset (-timers): "local" (mesh.LocalConfig, the
	// default) or "default" (the zero mesh.Config).
	Timers string
	// KeepAlive, WriteTimeout, Heartbeat, Lifetime and FallbackDelay
	// (-keepalive, -write-timeout, -heartbeat, -lifetime, -fallback)
	// override the preset's when not zero.
	KeepAlive, WriteTimeout, Heartbeat, Lifetime, FallbackDelay time.Duration
	// NoMDNS runs no mDNS (-no-mdns): links come from DNS, Connect and
	// peer exchange only.
	NoMDNS bool
	// DNSServer and DNSName add discovery by DNS SRV records of DNSName
	// asked of DNSServer (host:port) every DNSInterval (-dns-server,
	// -dns-name, -dns-interval; zero: discovery.DNS's default). Empty
	// DNSName means no DNS discovery.
	DNSServer, DNSName string
	DNSInterval        time.Duration
	// DiscoveryEvents prints what each discoverer reports (found, lost)
	// before the node takes it (-discovery-events).
	DiscoveryEvents bool
	// Connect are addresses the node links to, and keeps, before it says
	// it has started (-connect, repeatable).
	Connect []string
	// Roles are registered before the node says it has started (-role
	// NAME@VER, repeatable), each with Meta (-meta KEY=VALUE,
	// repeatable); the start event carries their records.
	Roles, Meta []string
	// Debug logs at Debug level to standard error (-debug); otherwise
	// Warn and above.
	Debug bool
	// NATS joins the node to the NATS servers at these URLs,
	// comma-separated (-nats), as a node of Site (-site). Empty means
	// none.
	NATS, Site string
	// NATSServer, set, makes the process a NATS server instead of a
	// node (-nats-server listen=HOST:PORT, port 0 for a free one):
	// nats-server embedded, printing a start event with its address.
	// It ignores the other fields.
	NATSServer string
	// Proxy, set, makes the process a TCP proxy instead of a node
	// (-proxy listen=ADDR,to=ADDR,delay=D): it forwards each connection
	// to ADDR on to the other, holding what crosses back for D in each
	// direction (the kernel has no netem), and prints a start event with
	// its address. It ignores the other fields.
	Proxy string
}

// Args returns the command line of c, the flags that differ from their
// defaults.
func (c Config) Args() []string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var bound Config
	bind(fs, &bound) // every flag at its default
	bound = c
	var args []string
	fs.VisitAll(func(f *flag.Flag) {
		if l, ok := f.Value.(*list); ok {
			for _, v := range *l {
				args = append(args, "-"+f.Name+"="+v)
			}
		} else if v := f.Value.String(); v != f.DefValue {
			args = append(args, "-"+f.Name+"="+v)
		}
	})
	return args
}

// bind defines the node's flags on fs, each writing a field of c, and
// sets c to their defaults: the zero Config.
func bind(fs *flag.FlagSet, c *Config) {
	*c = Config{}
	fs.StringVar(&c.Cluster, "cluster", "", "cluster to join (required)")
	fs.StringVar(&c.ID, "id", "", "node id (empty: a random UUID)")
	fs.StringVar(&c.Secret, "secret", "", "cluster secret")
	fs.StringVar(&c.Listen, "listen", "", "address to accept links on (empty: :0)")
	fs.Var((*list)(&c.Ifaces), "iface", "interface to run mDNS on (repeatable; none: mDNS's choice)")
	fs.StringVar(&c.Timers, "timers", "", "timer preset: local (mesh.LocalConfig; empty too) or default (zero Config)")
	fs.DurationVar(&c.KeepAlive, "keepalive", 0, "link keepalive interval (0: the preset's)")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 0, "link write and ping timeout (0: the preset's)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 0, "registry heartbeat (0: the preset's)")
	fs.DurationVar(&c.Lifetime, "lifetime", 0, "registry record lifetime (0: the preset's)")
	fs.DurationVar(&c.FallbackDelay, "fallback", 0, "Config.FallbackDelay (0: the preset's)")
	fs.BoolVar(&c.NoMDNS, "no-mdns", false, "run no mDNS")
	fs.StringVar(&c.DNSServer, "dns-server", "", "DNS server (host:port) to ask for -dns-name")
	fs.StringVar(&c.DNSName, "dns-name", "", "discover peers by the DNS SRV records of this name")
	fs.DurationVar(&c.DNSInterval, "dns-interval", 0, "how often to ask for -dns-name (0: the default)")
	fs.BoolVar(&c.DiscoveryEvents, "discovery-events", false, "print what discovery reports (found, lost)")
	fs.Var((*list)(&c.Connect), "connect", "address of a node to link to at start (repeatable)")
	fs.Var((*list)(&c.Roles), "role", "role name@version to register at start (repeatable)")
	fs.Var((*list)(&c.Meta), "meta", "key=value metadata of every -role (repeatable)")
	fs.BoolVar(&c.Debug, "debug", false, "log at Debug level to standard error")
	fs.StringVar(&c.NATS, "nats", "", "join the NATS servers at these URLs (comma-separated)")
	fs.StringVar(&c.Site, "site", "", "the node's site (mesh.Config.Site)")
	fs.StringVar(&c.NATSServer, "nats-server", "", "run as a NATS server instead: listen=HOST:PORT")
	fs.StringVar(&c.Proxy, "proxy", "", "run as a delaying TCP proxy instead: listen=ADDR,to=ADDR,delay=D")
}

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }
