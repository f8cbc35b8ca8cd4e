package mesh

// Tests across subnets: nodes in network namespaces of their own, on two
// private subnets joined by the test's namespace as a router (which
// forwards unicast and no multicast), find each other through a DNS
// server of the test; and mDNS runs on the interfaces it is told to, only.
//
//	ns A: ts-a 10.61.1.2, .3/24 ── ts-ra 10.61.1.1 ┐
//	                                               ├ the test's namespace
//	ns B: ts-b 10.61.2.2, .3/24 ── ts-rb 10.61.2.1 ┘ (router, DNS server)
//
// A node in A or B is this test binary run again (TestSubnetNode) inside
// the namespace; it prints what it finds and whom it links with.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/netns"
)

// subnetEnv carries a node's spec (JSON) into TestSubnetNode.
const subnetEnv = "TALLSHIP_SUBNET_NODE"

// subnetSpec configures a node process.
type subnetSpec struct {
	Cluster string
	ID      string
	Listen  string
	// DNSServer and DNSName: discovery by DNS only, every 100 ms.
	DNSServer, DNSName string
	// MDNSIface: discovery by mDNS on this interface only.
	MDNSIface string
}

// subnetLine is one line a node process prints.
type subnetLine struct {
	Addr  string   `json:"addr,omitempty"`
	Kind  string   `json:"kind,omitempty"` // a discovery event: found, lost
	ID    string   `json:"id,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
	Peers []string `json:"peers,omitempty"`
	Err   string   `json:"err,omitempty"`
	At    int64    `json:"at"` // Unix nanoseconds
}

// TestSubnetNode is the body of a node process; run by itself, it skips.
// It prints its address, every discovery event and its peers whenever
// they change, and runs until its standard input closes.
func TestSubnetNode(t *testing.T) {
	raw := os.Getenv(subnetEnv)
	if raw == "" {
		t.Skip("the node process of the subnet tests; runs only when they start it")
	}
	netns.Require(t)
	var spec subnetSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	var outMu sync.Mutex
	out := json.NewEncoder(os.Stdout)
	print := func(l subnetLine) {
		l.At = time.Now().UnixNano()
		outMu.Lock()
		defer outMu.Unlock()
		out.Encode(l)
	}
	cfg := testConfig(spec.ID)
	var d discovery.Discoverer
	switch {
	case spec.DNSName != "":
		d = &discovery.DNS{Name: spec.DNSName, Server: spec.DNSServer, Interval: 100 * time.Millisecond, Timeout: time.Second, Logger: cfg.Logger}
	case spec.MDNSIface != "":
		ifi, err := net.InterfaceByName(spec.MDNSIface)
		if err != nil {
			t.Fatal(err)
		}
		d = &discovery.MDNS{Interfaces: []net.Interface{*ifi}, Logger: cfg.Logger}
	}
	cfg.Listen = spec.Listen
	cfg.Discovery = []discovery.Discoverer{printing{d, print}}
	n, err := cfg.Join(context.Background(), spec.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	print(subnetLine{Addr: addr(t, n)})
	eof := make(chan struct{})
	go func() {
		bufio.NewReader(os.Stdin).ReadString(0)
		close(eof)
	}()
	var last []string
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-eof:
			return
		case <-tick.C:
		}
		if ids := peerIDs(n); !slices.Equal(ids, last) {
			print(subnetLine{Peers: append([]string{}, ids...)})
			last = ids
		}
	}
}

// printing prints a discoverer's events before the node takes them.
type printing struct {
	d     discovery.Discoverer
	print func(subnetLine)
}

func (p printing) Run(ctx context.Context, self discovery.Self, report func(discovery.Event)) error {
	return p.d.Run(ctx, self, func(e discovery.Event) {
		l := subnetLine{Kind: e.Kind.String(), ID: e.Peer.ID}
		for _, a := range e.Peer.Addrs {
			l.Addrs = append(l.Addrs, a.String())
		}
		if e.Err != nil {
			l.Err = e.Err.Error()
		}
		p.print(l)
		report(e)
	})
}

// subnets is the topology above.
type subnets struct {
	a, b *subnetNS
}

// subnetNS is a network namespace of its own, held by a sleeping process.
type subnetNS struct {
	holder *exec.Cmd
	done   chan struct{}
}

func (ns *subnetNS) path() string { return "/proc/" + strconv.Itoa(ns.holder.Process.Pid) + "/ns/net" }

// run runs a shell script in the namespace.
func (ns *subnetNS) run(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+ns.path(), "--", "sh", "-ec", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("in namespace: %v: %s\nscript:\n%s", err, out, script)
	}
}

// spawner starts processes from one thread that lives as long as the test
// binary: their parent-death signal fires when that thread ends, so that
// nothing outlives the binary, even one that crashes.
var spawner struct {
	once sync.Once
	reqs chan func()
}

func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked
			for f := range spawner.reqs {
				f()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- func() { done <- cmd.Start() }
	return <-done
}

// newSubnetNS makes a namespace that is gone when the test ends.
func newSubnetNS(t *testing.T) *subnetNS {
	t.Helper()
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		t.Fatalf("namespace holder: %v", err)
	}
	ns := &subnetNS{holder: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(ns.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-ns.done })
	self, _ := os.Readlink("/proc/self/ns/net")
	if its, err := os.Readlink(ns.path()); err != nil || its == self {
		t.Fatalf("the holder is not in a namespace of its own (%v)", err)
	}
	return ns
}

// ipRun runs ip in the test's namespace.
func ipRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func writeSysctl(t *testing.T, key, value string) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
		t.Fatalf("sysctl %s: %v", key, err)
	}
}

// newSubnets builds the topology, or skips t when it cannot.
func newSubnets(t *testing.T) *subnets {
	t.Helper()
	netns.Require(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root in the test's namespace to make namespaces")
	}
	for _, tool := range []string{"ip", "nsenter", "sleep", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	// The test's namespace is private: these settings end with it.
	writeSysctl(t, "net/ipv4/ip_forward", "1")
	writeSysctl(t, "net/ipv6/conf/default/accept_dad", "0")
	s := &subnets{a: newSubnetNS(t), b: newSubnetNS(t)}
	for i, side := range []struct {
		ns          *subnetNS
		here, there string
		prefix      string
		addrs       []string
	}{
		{s.a, "ts-ra", "ts-a", "10.61.1", []string{"2", "3"}},
		{s.b, "ts-rb", "ts-b", "10.61.2", []string{"2", "3"}},
	} {
		side.ns.run(t, "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; ip link set lo up")
		ipRun(t, "link", "add", side.here, "type", "veth", "peer", "name", side.there, "netns", strconv.Itoa(side.ns.holder.Process.Pid))
		t.Cleanup(func() { exec.Command("ip", "link", "del", side.here).Run() })
		ipRun(t, "addr", "add", side.prefix+".1/24", "dev", side.here)
		ipRun(t, "link", "set", side.here, "up", "multicast", "on")
		ipRun(t, "route", "add", "224.0.0.0/4", "dev", side.here, "metric", strconv.Itoa(10+i))
		script := ""
		for _, a := range side.addrs {
			script += fmt.Sprintf("ip addr add %s.%s/24 dev %s\n", side.prefix, a, side.there)
		}
		script += fmt.Sprintf("ip link set %s up multicast on\nip route add default via %s.1\nip route add 224.0.0.0/4 dev %s\n", side.there, side.prefix, side.there)
		side.ns.run(t, script)
	}
	return s
}

// subnetProc is a node process.
type subnetProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu     sync.Mutex
	lines  []subnetLine
	wake   chan struct{}
	stderr bytes.Buffer
}

// startSubnetNode runs a node in ns and waits for its address. The node
// ends with the test: its input closes, then it is killed.
func startSubnetNode(t *testing.T, ns *subnetNS, spec subnetSpec) *subnetProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(spec)
	cmd := exec.Command("nsenter", "--net="+ns.path(), "--", self, "-test.run=^TestSubnetNode$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), subnetEnv+"="+string(raw))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &subnetProc{name: spec.ID, cmd: cmd, done: make(chan struct{}), wake: make(chan struct{})}
	cmd.Stderr = &p.stderr
	if err := spawn(cmd); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l subnetLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue // the test binary's own lines
			}
			p.mu.Lock()
			p.lines = append(p.lines, l)
			close(p.wake)
			p.wake = make(chan struct{})
			p.mu.Unlock()
		}
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() || os.Getenv("TALLSHIP_DEBUG") != "" {
			t.Logf("node %s: %v; stderr:\n%s", p.name, cmd.ProcessState, p.stderr.String())
		}
	})
	p.await(t, 30*time.Second, "its address", func(l subnetLine) bool { return l.Addr != "" })
	return p
}

// await returns the first line, from the start, for which match holds.
func (p *subnetProc) await(t *testing.T, d time.Duration, what string, match func(subnetLine) bool) subnetLine {
	t.Helper()
	deadline := time.After(d)
	seen := 0
	for {
		p.mu.Lock()
		lines, wake := p.lines, p.wake
		p.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if match(lines[seen]) {
				return lines[seen]
			}
		}
		select {
		case <-wake:
		case <-p.done:
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if n == seen {
				t.Fatalf("node %s ended waiting for %s: %s", p.name, what, p.stderr.String())
			}
		case <-deadline:
			t.Fatalf("node %s: no %s within %v; it printed:\n%s", p.name, what, d, p.dump())
		}
	}
}

func (p *subnetProc) addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lines[0].Addr
}

// peers returns the node's peers as it last printed them.
func (p *subnetProc) peers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.lines) - 1; i >= 0; i-- {
		if p.lines[i].Peers != nil {
			return p.lines[i].Peers
		}
	}
	return nil
}

func (p *subnetProc) linesWhere(match func(subnetLine) bool) []subnetLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []subnetLine
	for _, l := range p.lines {
		if match(l) {
			out = append(out, l)
		}
	}
	return out
}

func (p *subnetProc) dump() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines {
		raw, _ := json.Marshal(l)
		b.Write(raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// awaitPeers waits until the node's peers are ids.
func (p *subnetProc) awaitPeers(t *testing.T, d time.Duration, ids ...string) time.Time {
	t.Helper()
	want := slices.Sorted(slices.Values(ids))
	l := p.await(t, d, fmt.Sprintf("peers %v", want), func(l subnetLine) bool { return l.Peers != nil && slices.Equal(l.Peers, want) })
	return time.Unix(0, l.At)
}

// srvZone is a DNS server of the test: one SRV name, whose targets it
// serves with their A records in the additional section, as Consul and
// Kubernetes do.
type srvZone struct {
	addr string
	name string

	mu      sync.Mutex
	targets map[string]srvTarget // by host name
}

type srvTarget struct {
	port  uint16
	addrs []netip.Addr
}

func startSRVZone(t *testing.T, listen, name string) *srvZone {
	t.Helper()
	z := &srvZone{name: dns.Fqdn(name), targets: map[string]srvTarget{}}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	z.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: z}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	served := make(chan struct{})
	go func() { srv.ActivateAndServe(); close(served) }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-served; pc.Close() })
	return z
}

// set makes host a target at port, with addrs in order; no addrs
// removes it.
func (z *srvZone) set(host string, port uint16, addrs ...netip.Addr) {
	z.mu.Lock()
	defer z.mu.Unlock()
	host = dns.Fqdn(host)
	if len(addrs) == 0 {
		delete(z.targets, host)
		return
	}
	z.targets[host] = srvTarget{port, addrs}
}

// setAt makes host a target at ap.
func (z *srvZone) setAt(host string, ap netip.AddrPort) { z.set(host, ap.Port(), ap.Addr()) }

func (z *srvZone) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	z.mu.Lock()
	defer z.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeSRV && strings.EqualFold(q.Question[0].Name, z.name) {
		for _, host := range slices.Sorted(func(yield func(string) bool) {
			for h := range z.targets {
				if !yield(h) {
					return
				}
			}
		}) {
			tg := z.targets[host]
			m.Answer = append(m.Answer, &dns.SRV{
				Hdr:  dns.RR_Header{Name: z.name, Rrtype: dns.TypeSRV, Class: dns.ClassINET},
				Port: tg.port, Target: host,
			})
			for _, a := range tg.addrs {
				m.Extra = append(m.Extra, &dns.A{
					Hdr: dns.RR_Header{Name: host, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   a.AsSlice(),
				})
			}
		}
	}
	w.WriteMsg(m)
}

// TestDNSAcrossSubnets runs three nodes on two subnets, joined by a router
// that forwards no multicast, with DNS as their only discovery: they form
// one mesh as soon as their records are served. A record removed is
// reported Lost.
func TestDNSAcrossSubnets(t *testing.T) {
	s := newSubnets(t)
	const name = "_tallship._tcp.mesh.test"
	z := startSRVZone(t, "10.61.1.1:0", name)
	spec := func(id, listen string) subnetSpec {
		return subnetSpec{Cluster: "subnets", ID: id, Listen: listen, DNSServer: z.addr, DNSName: name}
	}
	a1 := startSubnetNode(t, s.a, spec("a1", "10.61.1.2:0"))
	a2 := startSubnetNode(t, s.a, spec("a2", "10.61.1.3:0"))
	b1 := startSubnetNode(t, s.b, spec("b1", "10.61.2.2:0"))
	// Nothing to find yet: no links.
	time.Sleep(300 * time.Millisecond)
	for _, p := range []*subnetProc{a1, a2, b1} {
		if ps := p.peers(); len(ps) != 0 {
			t.Fatalf("%s linked with %v before any record was served", p.name, ps)
		}
	}
	served := time.Now()
	for _, p := range []*subnetProc{a1, a2, b1} {
		z.setAt(p.name+".mesh.test", netip.MustParseAddrPort(p.addr()))
	}
	var last time.Time
	for _, p := range []*subnetProc{a1, a2, b1} {
		var others []string
		for _, o := range []string{"a1", "a2", "b1"} {
			if o != p.name {
				others = append(others, o)
			}
		}
		if at := p.awaitPeers(t, 10*time.Second, others...); at.After(last) {
			last = at
		}
	}
	t.Logf("full mesh across the subnets %v after the records were served (discovery every 100 ms)", last.Sub(served))

	// a1 may have been dialed by b1 before it asked itself: wait until
	// it found b1 through DNS too.
	a1.await(t, 5*time.Second, "b1 found", func(l subnetLine) bool {
		return l.Kind == "found" && slices.Equal(l.Addrs, []string{b1.addr()})
	})
	z.set("b1.mesh.test", 0)
	removed := time.Now()
	l := a1.await(t, 5*time.Second, "b1 lost", func(l subnetLine) bool {
		return l.Kind == "lost" && slices.Equal(l.Addrs, []string{b1.addr()})
	})
	t.Logf("a1 reported b1 Lost %v after its record was removed", time.Unix(0, l.At).Sub(removed))
	// Its link stays: DNS lists where to find nodes, not who is alive.
	time.Sleep(200 * time.Millisecond)
	if ps := a1.peers(); !slices.Equal(ps, []string{"a2", "b1"}) {
		t.Fatalf("a1's peers after b1's record went: %v", ps)
	}
}

// TestDNSUnreachableFirstAddress serves a node's name with a first address
// that cannot link (its packets vanish, or a listener there never answers
// the handshake, or it refuses) before the one that can: the node is
// linked within the handshake timeout of the first address, not later.
func TestDNSUnreachableFirstAddress(t *testing.T) {
	netns.Require(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root in the test's namespace to make a veth pair")
	}
	// 10.61.9.2 is on a link where nobody answers ARP: a connect to it
	// hangs (until the neighbour entry fails, after about 3 s).
	ipRun(t, "link", "add", "ts-bh0", "type", "veth", "peer", "name", "ts-bh1")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "ts-bh0").Run() })
	ipRun(t, "addr", "add", "10.61.9.1/24", "dev", "ts-bh0")
	ipRun(t, "link", "set", "ts-bh0", "up")
	ipRun(t, "link", "set", "ts-bh1", "up")

	for _, tc := range []struct {
		name  string
		first string // host of the first address; empty: none
		// silent: a listener at the first address accepts connections
		// and never says a word.
		silent bool
	}{
		{name: "no bad address"},
		{name: "refused", first: "127.0.0.3"},
		{name: "silent listener", first: "127.0.0.2", silent: true},
		{name: "packets vanish", first: "10.61.9.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt := start(t, "unreach", testConfig("t"))
			good := tgt.Addrs()[0]
			accepted := 0
			var acceptMu sync.Mutex
			if tc.silent {
				ln, err := net.Listen("tcp", net.JoinHostPort(tc.first, strconv.Itoa(int(good.Port()))))
				if err != nil {
					t.Skipf("cannot listen at the silent address: %v", err)
				}
				var conns []net.Conn
				done := make(chan struct{})
				go func() {
					defer close(done)
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						acceptMu.Lock()
						accepted++
						conns = append(conns, c)
						acceptMu.Unlock()
					}
				}()
				t.Cleanup(func() {
					ln.Close()
					<-done
					for _, c := range conns {
						c.Close()
					}
				})
			}
			z := startSRVZone(t, "127.0.0.1:0", "_tallship._tcp.unreach.test")
			var addrs []netip.Addr
			if tc.first != "" {
				addrs = append(addrs, netip.MustParseAddr(tc.first))
			}
			z.set("t.unreach.test", good.Port(), append(addrs, good.Addr())...)
			cfg := testConfig("d")
			cfg.Discovery = []discovery.Discoverer{&discovery.DNS{Name: "_tallship._tcp.unreach.test", Server: z.addr, Interval: 250 * time.Millisecond}}
			began := time.Now()
			d := start(t, "unreach", cfg)
			waitFor(t, "linked", 10*time.Second, func() bool { return settled(d, tgt) })
			took := time.Since(began)
			acceptMu.Lock()
			n := accepted
			acceptMu.Unlock()
			t.Logf("linked %v after start (handshake timeout %v); dials that reached the silent listener: %d", took, cfg.HandshakeTimeout, n)
			if limit := cfg.HandshakeTimeout + 750*time.Millisecond; took > limit {
				t.Fatalf("linked after %v, more than the handshake timeout and slack (%v)", took, limit)
			}
		})
	}
}

// capture records the mDNS packets (UDP to or from port 5353) that cross
// one interface, both ways, with an AF_PACKET socket: what a capture on
// the wire would see.
type capture struct {
	fd   int
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	packets []captured
}

type captured struct {
	payload   []byte // the UDP payload
	multicast bool   // sent to a multicast group, not to one host
}

func newCapture(t *testing.T, iface string) *capture {
	t.Helper()
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	const ethPAll = 0x0300 // htons(ETH_P_ALL)
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, ethPAll)
	if err != nil {
		t.Skipf("cannot capture: AF_PACKET socket: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: ethPAll, Ifindex: ifi.Index}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	tv := syscall.NsecToTimeval(int64(50 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	c := &capture{fd: fd, stop: make(chan struct{})}
	c.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			n, _, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // the timeout: look at stop
			}
			if p, ok := parseMDNSPacket(buf[:n]); ok {
				c.mu.Lock()
				c.packets = append(c.packets, p)
				c.mu.Unlock()
			}
		}
	})
	t.Cleanup(func() {
		close(c.stop)
		c.wg.Wait()
		syscall.Close(fd)
	})
	return c
}

// parseMDNSPacket reads an IPv4 or IPv6 packet of UDP from or to port
// 5353.
func parseMDNSPacket(b []byte) (captured, bool) {
	if len(b) < 1 {
		return captured{}, false
	}
	var udp []byte
	var multicast bool
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < ihl+8 || b[9] != syscall.IPPROTO_UDP {
			return captured{}, false
		}
		multicast = b[16]>>4 == 0xe
		udp = b[ihl:]
	case 6:
		if len(b) < 48 || b[6] != syscall.IPPROTO_UDP {
			return captured{}, false
		}
		multicast = b[24] == 0xff
		udp = b[40:]
	default:
		return captured{}, false
	}
	src, dst := int(udp[0])<<8|int(udp[1]), int(udp[2])<<8|int(udp[3])
	if src != 5353 && dst != 5353 {
		return captured{}, false
	}
	return captured{payload: bytes.Clone(udp[8:]), multicast: multicast}, true
}

// mentioning returns how many multicast and unicast packets so far
// contain s.
func (c *capture) mentioning(s string) (multicast, unicast int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.packets {
		if !bytes.Contains(p.payload, []byte(s)) {
			continue
		}
		if p.multicast {
			multicast++
		} else {
			unicast++
		}
	}
	return multicast, unicast
}

// TestMDNSChosenInterfaces runs mDNS on chosen interfaces of the router
// namespace. Across the router, mDNS finds nothing. A node told to use one
// interface sends nothing that names it on the other, as a capture there
// shows, and hears nothing from it. A node announcing on both of its
// interfaces is found on each subnet, at its address there.
func TestMDNSChosenInterfaces(t *testing.T) {
	s := newSubnets(t)
	onRA, onRB := newCapture(t, "ts-ra"), newCapture(t, "ts-rb")
	pa := startSubnetNode(t, s.a, subnetSpec{Cluster: "ifaces", ID: "pa", Listen: "10.61.1.2:0", MDNSIface: "ts-a"})
	pb := startSubnetNode(t, s.b, subnetSpec{Cluster: "ifaces", ID: "pb", Listen: "10.61.2.2:0", MDNSIface: "ts-b"})
	// Multicast stays on its subnet: pa and pb never meet by themselves.
	time.Sleep(1500 * time.Millisecond)
	if ps, qs := pa.peers(), pb.peers(); len(ps) != 0 || len(qs) != 0 {
		t.Fatalf("pa and pb linked across the router by mDNS alone: %v, %v", ps, qs)
	}
	if m, _ := onRA.mentioning("pa"); m == 0 {
		t.Fatal("the capture on ts-ra saw no announcement of pa")
	}
	if m, _ := onRB.mentioning("pb"); m == 0 {
		t.Fatal("the capture on ts-rb saw no announcement of pb")
	}
	ra, err := net.InterfaceByName("ts-ra")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := net.InterfaceByName("ts-rb")
	if err != nil {
		t.Fatal(err)
	}

	// m-one runs mDNS on ts-ra only (and listens on every address).
	one := testConfig("m-one")
	one.Listen = ":0"
	oneMDNS := &counting{d: &discovery.MDNS{Interfaces: []net.Interface{*ra}}, found: map[string]int{}}
	one.Discovery = []discovery.Discoverer{oneMDNS}
	start(t, "ifaces", one)
	pa.await(t, 10*time.Second, "m-one found", func(l subnetLine) bool { return l.Kind == "found" && l.ID == "m-one" })
	// Past its second announcement (1 s) and pb's next queries.
	time.Sleep(2 * time.Second)
	multiA, uniA := onRA.mentioning("m-one")
	multiB, uniB := onRB.mentioning("m-one")
	t.Logf("mDNS packets naming m-one: %d multicast + %d unicast on ts-ra, %d + %d on ts-rb", multiA, uniA, multiB, uniB)
	if multiA == 0 {
		t.Fatal("the capture on ts-ra saw no announcement of m-one: it proves nothing")
	}
	if multiB+uniB != 0 {
		t.Errorf("%d mDNS packets naming m-one crossed ts-rb, an interface it was told not to use", multiB+uniB)
	}
	if ls := pb.linesWhere(func(l subnetLine) bool { return l.ID == "m-one" }); len(ls) != 0 {
		t.Errorf("pb found m-one by mDNS on ts-b: %v", ls)
	}

	// m-both runs mDNS on both.
	both := testConfig("m-both")
	both.Listen = ":0"
	both.Discovery = []discovery.Discoverer{&discovery.MDNS{Interfaces: []net.Interface{*ra, *rb}}}
	began := time.Now()
	mb := start(t, "ifaces", both)
	pa.awaitPeers(t, 10*time.Second, "m-both", "m-one", "pb")
	pb.awaitPeers(t, 10*time.Second, "m-both", "m-one", "pa")
	t.Logf("a node on both interfaces: full mesh of four %v after it started", time.Since(began))
	for _, tc := range []struct {
		p      *subnetProc
		subnet netip.Prefix
	}{{pa, netip.MustParsePrefix("10.61.1.0/24")}, {pb, netip.MustParsePrefix("10.61.2.0/24")}} {
		l := tc.p.await(t, time.Second, "m-both found", func(l subnetLine) bool { return l.Kind == "found" && l.ID == "m-both" })
		for _, a := range l.Addrs {
			ap := netip.MustParseAddrPort(a)
			if ap.Port() != mb.Addrs()[0].Port() || !tc.subnet.Contains(ap.Addr()) && !ap.Addr().IsLinkLocalUnicast() {
				t.Errorf("%s found m-both at %v: %s is not an address on its link", tc.p.name, l.Addrs, a)
			}
		}
		t.Logf("%s found m-both at %v", tc.p.name, l.Addrs)
	}

	// With m-both joined to the mDNS group on ts-rb, that interface's
	// multicast reaches every socket of the namespace bound to the group
	// (Linux's IP_MULTICAST_ALL), m-one's included. A node joining on
	// subnet B now (its first query at once) finds m-both; m-one must
	// still not announce on ts-rb, nor report what it hears there.
	pc := startSubnetNode(t, s.b, subnetSpec{Cluster: "ifaces", ID: "pc", Listen: "10.61.2.3:0", MDNSIface: "ts-b"})
	pc.await(t, 10*time.Second, "m-both found", func(l subnetLine) bool { return l.Kind == "found" && l.ID == "m-both" })
	time.Sleep(2 * time.Second)
	multiB2, uniB2 := onRB.mentioning("m-one")
	found := pc.linesWhere(func(l subnetLine) bool { return l.Kind == "found" && l.ID == "m-one" })
	t.Logf("once pc joined on ts-b: %d more multicast + %d more unicast mDNS packets naming m-one on ts-rb; pc found m-one by mDNS %d times", multiB2-multiB, uniB2-uniB, len(found))
	if multiB2 != multiB {
		t.Errorf("m-one multicast %d packets on ts-rb, an interface it was told not to use", multiB2-multiB)
	}
	if uniB2 != uniB {
		t.Errorf("m-one answered %d queries that came in on ts-rb, an interface it was told not to use", uniB2-uniB)
	}
	if len(found) != 0 {
		t.Errorf("pc found m-one by mDNS on ts-b: %v", found)
	}
	oneMDNS.mu.Lock()
	heard := oneMDNS.found["pb"] + oneMDNS.found["pc"]
	oneMDNS.mu.Unlock()
	if heard != 0 {
		t.Errorf("m-one's mDNS reported pb or pc, heard on ts-rb, %d times", heard)
	}
}
