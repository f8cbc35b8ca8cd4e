package discovery

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// Interop with python-zeroconf, both ways, in the test's private network
// namespace: a python-zeroconf process (testdata/zeroconf_peer.py, run
// by Debian's /usr/bin/python3 with python3-zeroconf) browses and
// resolves tallship nodes, and registers a service tallship nodes see.
//
// What python-zeroconf 0.47 does that shapes these tests: it binds port
// 5353 with SO_REUSEADDR and SO_REUSEPORT beside tallship's sockets; its
// browser's first query asks for unicast answers (QU) and the later ones
// list known answers; it resolves a service by asking for SRV, TXT, A
// and AAAA by name (QU first, then QM at doubling intervals); a service
// it registers is probed for (three queries with the records in the
// authority section), announced three times, and withdrawn with three
// goodbyes. Its answer to a browse carries, besides SRV, TXT and A, an
// NSEC record saying the host has no AAAA (RFC 6762 §6.1) — in a form
// miekg/dns refuses ("empty NSEC(3) block in type bitmap": it writes the
// bitmap's window and length as two 16-bit words, so the first block
// reads as window 0 of length 0). IPv6 multicast does not arrive on lo,
// so mDNS over IPv6 runs on a veth pair (TestZeroconfOverIPv6).

// zeroconfPython is Debian's python, which imports python3-zeroconf;
// the python3 on PATH may be another.
const zeroconfPython = "/usr/bin/python3"

// requireZeroconf skips t unless it runs in a private network namespace
// and Debian's python3 imports zeroconf.
func requireZeroconf(t *testing.T) {
	t.Helper()
	netns.Require(t)
	out, err := exec.Command(zeroconfPython, "-c", "import zeroconf; print(zeroconf.__version__)").CombinedOutput()
	if err != nil {
		t.Skipf("needs python-zeroconf imported by %s (apt-get install python3-zeroconf): %v: %s",
			zeroconfPython, err, bytes.TrimSpace(out))
	}
}

// zcLine is one line zeroconf_peer.py prints.
type zcLine struct {
	Ev        string   `json:"ev"`
	Type      string   `json:"type"`
	Name      string   `json:"name"`
	Server    string   `json:"server"`
	Port      int      `json:"port"`
	Addresses []string `json:"addresses"`
	TXT       []string `json:"txt"`
}

func (l zcLine) String() string {
	if l.Ev == "resolved" {
		return fmt.Sprintf("{%s %s %s %s:%d %v %q}", l.Ev, l.Type, l.Name, l.Server, l.Port, l.Addresses, l.TXT)
	}
	return fmt.Sprintf("{%s %s %s}", l.Ev, l.Type, l.Name)
}

// is matches a line of event ev about instance name under type typ.
func (l zcLine) is(ev, typ, name string) bool {
	return l.Ev == ev && sameName(l.Type, typ) && sameName(l.Name, name)
}

// zeroconfPeer is a running zeroconf_peer.py.
type zeroconfPeer struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *watched[zcLine]
	stderr syncBuffer
	exited chan struct{}
	once   sync.Once
}

// startZeroconf runs zeroconf_peer.py with iface ("127.0.0.1", or
// "v6:INDEX") and args (a mode and its arguments) until stop or the end
// of the test.
func startZeroconf(t *testing.T, iface string, args ...string) *zeroconfPeer {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("testdata", "zeroconf_peer.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(zeroconfPython, append([]string{script, iface}, args...)...)
	// Killed with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &zeroconfPeer{cmd: cmd, lines: newWatched[zcLine](), exited: make(chan struct{})}
	cmd.Stderr = &p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := netns.Spawn(cmd); err != nil {
		t.Fatalf("python-zeroconf: %v", err)
	}
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l zcLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = zcLine{Ev: "garbled", Name: sc.Text()}
			}
			p.lines.add(l)
		}
		cmd.Wait() // after the last read of stdout
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop closes the peer's stdin, which ends it gracefully (a registered
// service says goodbye), and waits for it to exit; it kills it after 5 s.
func (p *zeroconfPeer) stop(t *testing.T) {
	t.Helper()
	p.once.Do(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("python-zeroconf did not exit 5 s after its stdin closed")
		}
		if s := strings.TrimSpace(p.stderr.String()); s != "" {
			t.Logf("python-zeroconf's stderr:\n%s", s)
		}
	})
}

// waitLine waits until the peer prints a line for which match holds, and
// returns it.
func (p *zeroconfPeer) waitLine(t *testing.T, timeout time.Duration, what string, match func(zcLine) bool) zcLine {
	t.Helper()
	var found zcLine
	p.lines.waitFor(t, timeout, what, func(ls []zcLine) bool {
		i := slices.IndexFunc(ls, match)
		if i >= 0 {
			found = ls[i]
		}
		return i >= 0
	})
	return found
}

// syncBuffer is a bytes.Buffer that a process writes to while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// zcNode is a tallship node a python-zeroconf peer should see.
type zcNode struct {
	cluster, id string
	port        int
}

func (n zcNode) names() names { return newNames(n.cluster, n.id) }

// checkResolved checks what python-zeroconf resolved for n: the host,
// port, addresses and TXT strings n announces.
func checkResolved(t *testing.T, l zcLine, n zcNode, addrs ...string) {
	t.Helper()
	if !sameName(l.Server, n.names().host) {
		t.Errorf("%s: server = %q, want %q", n.id, l.Server, n.names().host)
	}
	if l.Port != n.port {
		t.Errorf("%s: port = %d, want %d", n.id, l.Port, n.port)
	}
	for _, a := range addrs {
		if !slices.Contains(l.Addresses, a) {
			t.Errorf("%s: addresses = %v, want %s among them", n.id, l.Addresses, a)
		}
	}
	if want := []string{"v=1", "c=" + n.cluster, "i=" + n.id}; !slices.Equal(l.TXT, want) {
		t.Errorf("%s: TXT = %q, want %q", n.id, l.TXT, want)
	}
}

// TestZeroconfBrowsesTallship runs three tallship nodes on loopback, two
// of one cluster and one of another, and browses them with
// python-zeroconf once their start-up announcements are over, so that
// all it learns comes from the nodes' answers to its queries:
//   - service type enumeration (_services._dns-sd._udp) lists
//     _tallship._tcp;
//   - the base type _tallship._tcp lists all three nodes, the cluster
//     subtype only the cluster's two, and each resolves to the node's
//     host, port, IPv4 and IPv6 addresses and TXT strings;
//   - a node that stops is removed under both types (its goodbye);
//   - a fresh python-zeroconf, its cache empty, resolves a node by asking
//     for its SRV, TXT and addresses by name.
func TestZeroconfBrowsesTallship(t *testing.T) {
	requireZeroconf(t)
	const cluster = "zc-browse"
	nodes := []zcNode{
		{cluster, "6f1c2a7e-3b8d-4e29-9a51-0c7d2e8f4b13", 7501},
		{cluster, "Node B", 7502}, // no DNS label: its instance label is a hash
		{"zc-browse-other", "zc-other", 7503},
	}
	subtype := serviceName(cluster)
	p := newProbe(t)
	running := map[string]*node{}
	for _, n := range nodes {
		running[n.id] = startNode(t, &MDNS{}, Self{Cluster: n.cluster, ID: n.id, Port: n.port})
	}
	// Both start-up announcements of every node (at 0 and 1 s); the next
	// comes at half the TTL, a minute later.
	heard := map[string]int{}
	p.await(t, 5*time.Second, "both start-up announcements of every node", func(pk probed) bool {
		for _, n := range nodes {
			if announces(n.cluster, n.id)(pk) {
				heard[n.id]++
			}
		}
		return !slices.ContainsFunc(nodes, func(n zcNode) bool { return heard[n.id] < 2 })
	})

	zc := startZeroconf(t, "127.0.0.1", "browse", serviceType, subtype, servicesName)
	zc.waitLine(t, 5*time.Second, "service type enumeration lists "+serviceType, func(l zcLine) bool {
		return l.is("added", servicesName, serviceType)
	})
	for _, n := range nodes {
		types := []string{serviceType}
		if n.cluster == cluster {
			types = append(types, subtype)
		}
		for _, typ := range types {
			l := zc.waitLine(t, 5*time.Second, fmt.Sprintf("%s resolved under %s", n.id, typ), func(l zcLine) bool {
				return l.is("resolved", typ, n.names().instance)
			})
			// mDNS runs over IPv4 on lo, but a node announces every
			// address of the interface.
			checkResolved(t, l, n, "127.0.0.1", "::1")
		}
	}

	gone := nodes[0]
	running[gone.id].stop(t)
	for _, typ := range []string{serviceType, subtype} {
		zc.waitLine(t, 3*time.Second, fmt.Sprintf("%s removed under %s", gone.id, typ), func(l zcLine) bool {
			return l.is("removed", typ, gone.names().instance)
		})
	}
	zc.stop(t)
	other := nodes[2]
	for _, l := range zc.lines.snapshot() {
		if sameName(l.Type, subtype) && sameName(l.Name, other.names().instance) {
			t.Errorf("the cluster subtype lists a node of another cluster: %v", l)
		}
		if l.Ev == "unresolved" || l.Ev == "garbled" {
			t.Errorf("python-zeroconf: %v", l)
		}
	}

	// A fresh python-zeroconf (the browser has ended: no one else caches
	// or asks) resolves a running node by name.
	n := nodes[1]
	res := startZeroconf(t, "127.0.0.1", "resolve", serviceType, n.names().instance, "3000")
	l := res.waitLine(t, 5*time.Second, "the resolve's result", func(l zcLine) bool { return l.Ev != "" })
	if l.Ev != "resolved" {
		t.Fatalf("python-zeroconf could not resolve %s by name: %v", n.names().instance, l)
	}
	checkResolved(t, l, n, "127.0.0.1", "::1")
}

// TestZeroconfOverIPv6 runs a tallship node on one end of a veth pair
// and python-zeroconf over IPv6 only on the other: python-zeroconf
// browses the node's cluster subtype over IPv6 multicast and resolves it
// to its port, TXT strings, IPv6 link-local and IPv4 addresses.
func TestZeroconfOverIPv6(t *testing.T) {
	requireZeroconf(t)
	ifA, ifB := vethPair(t, "ts8", "ts9", "10.98.0.8/24")
	n := zcNode{"zc-six", "six", 7511}
	startNode(t, &MDNS{Interfaces: []net.Interface{*ifA}}, Self{Cluster: n.cluster, ID: n.id, Port: n.port})
	zc := startZeroconf(t, "v6:"+strconv.Itoa(ifB.Index), "browse", serviceName(n.cluster))
	l := zc.waitLine(t, 5*time.Second, n.id+" resolved over IPv6", func(l zcLine) bool {
		return l.is("resolved", serviceName(n.cluster), n.names().instance)
	})
	checkResolved(t, l, n, ifaceLinkLocal(t, ifA).String(), "10.98.0.8")
}

// TestZeroconfServiceSeenByTallship registers, with python-zeroconf, a
// service under a cluster's subtype with a valid tallship TXT, and
// checks that a tallship node of the cluster reports it as a peer (named
// by the TXT's id, at the SRV's port and the A record's address) beside
// a tallship companion, with no discovery error, and reports it Lost
// when python-zeroconf unregisters it (its goodbye):
//   - registered while the node runs: the node learns of it from
//     python-zeroconf's announcements;
//   - registered before the node starts: python-zeroconf has announced
//     already, so the node learns of it only from python-zeroconf's
//     answers to its browse, whose additional records hold an NSEC record
//     (python-zeroconf's, which miekg/dns cannot parse): a record the
//     node cannot parse must not cost it the packet (SPEC: tolerant of
//     records it can't parse).
func TestZeroconfServiceSeenByTallship(t *testing.T) {
	requireZeroconf(t)
	const (
		zcID = "zc-peer"
		port = 7521
	)
	for i, tc := range []struct {
		name          string
		registerFirst bool
	}{
		{"announced while the node runs", false},
		{"answering the node's browse, NSEC included", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster := fmt.Sprintf("zc-seen-%d", i)
			register := func() *zeroconfPeer {
				zc := startZeroconf(t, "127.0.0.1", "register", serviceName(cluster), "zc-peer."+serviceType,
					strconv.Itoa(port), "zc-host.local.", "127.0.0.1", "v=1", "c="+cluster, "i="+zcID)
				zc.waitLine(t, 5*time.Second, "python-zeroconf registered its service", func(l zcLine) bool {
					return l.Ev == "registered"
				})
				return zc
			}
			var zc *zeroconfPeer
			if tc.registerFirst {
				zc = register() // probed and announced: it sends nothing more unasked
			}
			p := newProbe(t)
			logs := logLines{newWatched[string]()}
			t.Cleanup(func() {
				if !t.Failed() {
					return
				}
				for _, l := range logs.snapshot() {
					if strings.Contains(l, "undecodable") || strings.Contains(l, "bad record") {
						t.Logf("observer: %s", l)
					}
				}
			})
			// QueryMin: the observer browses at once, then 200 ms later.
			observer := startNode(t, &MDNS{
				QueryMin: 200 * time.Millisecond,
				Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			}, Self{Cluster: cluster, ID: "observer"})
			if !tc.registerFirst {
				p.awaitRunning(t, observer)
				zc = register()
			}
			startNode(t, &MDNS{}, Self{Cluster: cluster, ID: "companion"})
			observer.rec.waitFor(t, 5*time.Second, "the observer finds the tallship companion", knows("companion"))
			observer.rec.waitFor(t, 5*time.Second, "the observer finds the python-zeroconf service", knows(zcID))

			got := peers(observer.rec.snapshot())[zcID].Addrs
			if want := fmt.Sprint([]string{"127.0.0.1:" + strconv.Itoa(port)}); fmt.Sprint(got) != want {
				t.Errorf("observer reports %s at %v, want %s", zcID, got, want)
			}
			zc.stop(t)
			observer.rec.waitFor(t, 3*time.Second, "the observer reports the python-zeroconf service Lost after its goodbye", lost(zcID))
			for _, ev := range observer.rec.snapshot() {
				if ev.Err != nil {
					t.Errorf("observer reported %v", ev)
				}
			}
		})
	}
}
