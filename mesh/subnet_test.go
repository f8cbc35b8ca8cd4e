package mesh

// The harness of the tests across subnets: nodes in network namespaces of
// their own, on two private subnets joined by the test's namespace as a
// router (which forwards unicast and no multicast). They find each other
// through a DNS server of the test (subnet_dns_test.go); mDNS runs on the
// interfaces it is told to, only (subnet_iface_test.go).
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

	"github.com/tallship-go/tallship/discovery"
	"github.com/tallship-go/tallship/internal/testutil/netns"
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
