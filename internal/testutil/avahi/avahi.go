// Package avahi runs avahi-daemon, the mDNS responder of most Linux
// systems, with a dbus-daemon of its own, inside a private network
// namespace of a test, and avahi-browse and avahi-publish against it: the
// interop peer of discovery's avahi tests.
//
//	l := lan.New(t, 2)
//	d := avahi.Start(t, l.Host(1), avahi.Config{HostName: "avahi-h1"})
//	b := d.Browse(t, "_tallship._tcp")
//	b.WaitFor(t, 5*time.Second, "a tallship node", func(es []avahi.Entry) bool { ... })
//	d.Publish(t, avahi.Service{Name: "printer", Type: "_ipp._tcp", Port: 631})
//
// Nothing runs on the machine's own network: Start takes the host to run
// on (a lan.Host, a netns.Namespace), which must be a network namespace
// the test made inside its own private one (internal/testutil/netns). The
// daemons share nothing with the machine's either: the dbus-daemon is a
// bus of its own (its socket in a temporary directory, its own
// configuration), and avahi-daemon runs in a mount namespace of its own
// with an empty /run, where it keeps its pid file and socket, so a
// daemon on the machine (or in another host of the test) is never in its
// way. Every process is started with a parent-death signal from
// netns.Spawn's thread, and killed and waited for when the test ends.
//
// It needs root in the test's namespace (netns.Main gives an ordinary user
// a user namespace in which it is root) and avahi-daemon, avahi-utils,
// dbus and util-linux's unshare; where one is missing, Require skips the
// test and says which.
package avahi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// Host is where a daemon runs: a network namespace the test made
// (*lan.Host, *netns.Namespace).
type Host interface {
	Command(name string, args ...string) *exec.Cmd
}

// Config is an avahi-daemon's configuration. Its zero value is a daemon
// named "avahi" on every interface avahi takes (never loopback: avahi
// ignores it), over IPv4 and IPv6.
type Config struct {
	// HostName is the daemon's host name (host-name=): it publishes
	// HostName.local. Empty means "avahi". Give each daemon of a LAN its
	// own, or they rename themselves after a conflict.
	HostName string
	// Interfaces are the interfaces avahi runs on (allow-interfaces=);
	// none means every one it takes.
	Interfaces []string
	// DisableIPv6 runs mDNS over IPv4 only (use-ipv6=no).
	DisableIPv6 bool
}

// Daemon is an avahi-daemon and its dbus-daemon running on a host.
type Daemon struct {
	// HostName is the name the daemon publishes itself under, without
	// .local.
	HostName string

	host  Host
	bus   string // the dbus address, DBUS_SYSTEM_BUS_ADDRESS for avahi's tools
	avahi *proc
}

// Timeouts of the harness.
const (
	// StartTimeout bounds how long a daemon takes to start: avahi-daemon
	// says "Server startup complete" once it has probed for its host name.
	StartTimeout = 10 * time.Second
	// killTimeout bounds the end of a process sent SIGKILL.
	killTimeout = 5 * time.Second
)

// tools are the programs the harness runs, by package.
var tools = []struct{ name, pkg string }{
	{"avahi-daemon", "avahi-daemon"},
	{"avahi-browse", "avahi-utils"},
	{"avahi-publish", "avahi-utils"},
	{"avahi-resolve", "avahi-utils"},
	{"dbus-daemon", "dbus"},
	{"unshare", "util-linux"},
	{"mount", "mount"},
	{"sh", "dash"},
}

// Require skips t unless avahi can run in a private network namespace
// here: the test runs in one (netns.Main), as root there, and the tools
// are installed.
func Require(t testing.TB) {
	t.Helper()
	netns.Require(t)
	if os.Geteuid() != 0 {
		t.Skip("avahi: needs root in the test's namespace (netns.Main) for a mount namespace with a private /run")
	}
	for _, tool := range tools {
		if _, err := lookPath(tool.name); err != nil {
			t.Skipf("avahi: needs %s (apt-get install %s): %v", tool.name, tool.pkg, err)
		}
	}
	mountNS.once.Do(func() {
		unshare, _ := lookPath("unshare")
		if out, err := exec.Command(unshare, "--mount", "--propagation", "private", "true").CombinedOutput(); err != nil {
			mountNS.err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
	})
	if mountNS.err != nil {
		t.Skipf("avahi: cannot make a mount namespace for avahi-daemon's private /run: %v", mountNS.err)
	}
}

// mountNS is whether this process can make mount namespaces, tried once.
var mountNS struct {
	once sync.Once
	err  error
}

// lookPath finds a program on PATH or in the system directories an
// ordinary user's PATH may lack (avahi-daemon is in /usr/sbin).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}

// Start starts a dbus-daemon and an avahi-daemon on h and waits until
// avahi has started (Launch, then WaitStarted).
func Start(t testing.TB, h Host, cfg Config) *Daemon {
	t.Helper()
	d := Launch(t, h, cfg)
	d.WaitStarted(t)
	return d
}

// Launch starts a dbus-daemon and an avahi-daemon on h and returns once
// the bus is up and avahi-daemon runs, without waiting for avahi's
// start-up (its host name probed and announced, about a second), so that
// several daemons start at once. Both are killed when the test ends. It
// fails t when they cannot start.
func Launch(t testing.TB, h Host, cfg Config) *Daemon {
	t.Helper()
	Require(t)
	if cfg.HostName == "" {
		cfg.HostName = "avahi"
	}
	// A directory of its own, with a short path: a unix socket's path is
	// at most 107 bytes.
	dir, err := os.MkdirTemp("", "tallship-avahi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after the processes' cleanups
	d := &Daemon{HostName: cfg.HostName, host: h, bus: "unix:path=" + filepath.Join(dir, "bus")}
	busConf, avahiConf := filepath.Join(dir, "bus.conf"), filepath.Join(dir, "avahi-daemon.conf")
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	if err := errors.Join(
		os.WriteFile(busConf, []byte(busConfig(filepath.Join(dir, "bus"))), 0o644),
		os.WriteFile(avahiConf, []byte(avahiConfig(cfg)), 0o644),
		os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\navahi:x:0:0:avahi:/run/avahi-daemon:/usr/sbin/nologin\n"), 0o644),
		os.WriteFile(group, []byte("root:x:0:\navahi:x:0:\n"), 0o644),
	); err != nil {
		t.Fatal(err)
	}

	dbus := start(t, "dbus-daemon", d.command("dbus-daemon", "--config-file="+busConf, "--nofork", "--nopidfile", "--print-address"))
	dbus.waitLine(t, StartTimeout, "dbus-daemon's address", func(l string) bool { return strings.HasPrefix(l, "unix:") })

	// avahi-daemon keeps its pid file and socket in /run/avahi-daemon, a
	// path built in: it gets an empty /run in a mount namespace of its
	// own. It gives that directory to the user avahi even when it keeps
	// root, and in the user namespace of an ordinary user's test (one uid
	// mapped) no other uid exists: there, avahi is root (/etc/passwd and
	// /etc/group of its own). unshare and sh exec, so the process is
	// avahi-daemon's.
	daemon, err := lookPath("avahi-daemon")
	if err != nil {
		t.Fatal(err)
	}
	script := `mount -t tmpfs -o mode=0755 avahi-run /run &&
mount --bind "$2" /etc/passwd && mount --bind "$3" /etc/group &&
exec "$0" --file="$1" --no-drop-root --no-chroot --no-rlimits --no-proc-title`
	d.avahi = start(t, "avahi-daemon "+cfg.HostName, d.command("unshare", "--mount", "--propagation", "private",
		"sh", "-c", script, daemon, avahiConf, passwd, group))
	return d
}

// WaitStarted waits until avahi-daemon says its start-up is complete:
// its sockets are bound, its host name probed and announced. It fails t
// after StartTimeout, or if the daemon exits.
func (d *Daemon) WaitStarted(t testing.TB) {
	t.Helper()
	d.avahi.waitLine(t, StartTimeout, "avahi-daemon's start-up", func(l string) bool {
		return strings.Contains(l, "Server startup complete")
	})
}

// command returns a command that runs name on the daemon's host, with
// the daemon's bus as the system bus.
func (d *Daemon) command(name string, args ...string) *exec.Cmd {
	if p, err := lookPath(name); err == nil {
		name = p
	}
	cmd := d.host.Command(name, args...)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+d.bus)
	return cmd
}

// Log returns what avahi-daemon has logged so far, one line each.
func (d *Daemon) Log() []string { return d.avahi.snapshot() }

// busConfig is a bus of its own on socket, open to everyone on it.
func busConfig(socket string) string {
	return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path=` + socket + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
`
}

// avahiConfig is avahi-daemon.conf for cfg: mDNS on the link only (no
// wide-area DNS-SD, no reflector), sharing port 5353 with other
// responders of the host (disallow-other-stacks=no, the default, said),
// publishing its host name and addresses only.
func avahiConfig(cfg Config) string {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[server]\nhost-name=%s\ndomain-name=local\nuse-ipv4=yes\nuse-ipv6=%s\n", cfg.HostName, yes(!cfg.DisableIPv6))
	if len(cfg.Interfaces) > 0 {
		fmt.Fprintf(&b, "allow-interfaces=%s\n", strings.Join(cfg.Interfaces, ","))
	}
	b.WriteString("enable-dbus=yes\ndisallow-other-stacks=no\n")
	b.WriteString("[wide-area]\nenable-wide-area=no\n")
	b.WriteString("[publish]\npublish-hinfo=no\npublish-workstation=no\n")
	b.WriteString("[reflector]\nenable-reflector=no\n")
	return b.String()
}

// Service is a service to Publish.
type Service struct {
	Name     string   // instance name
	Type     string   // service type, such as _ipp._tcp
	Port     int      // port
	Subtypes []string // subtypes to publish it under too, each a full "_x._sub.<Type>"
	TXT      []string // TXT strings
	// Host is the SRV target (x.local), for a service of another host
	// (avahi-publish --host); empty means the daemon's own host name.
	Host string
}

// Publish publishes services through the daemon, each with an
// avahi-publish of its own, all at once, and waits until avahi has
// established every one (probed for its name and announced it). They
// stay published until the test ends.
func (d *Daemon) Publish(t testing.TB, services ...Service) {
	t.Helper()
	var procs []*proc
	for _, s := range services {
		args := []string{"--service"}
		for _, st := range s.Subtypes {
			args = append(args, "--subtype="+st)
		}
		if s.Host != "" {
			args = append(args, "--host="+s.Host)
		}
		args = append(args, s.Name, s.Type, fmt.Sprint(s.Port))
		args = append(args, s.TXT...)
		procs = append(procs, start(t, "avahi-publish "+s.Name, d.command("avahi-publish", args...)))
	}
	for i, p := range procs {
		p.waitLine(t, StartTimeout, "avahi-publish's "+services[i].Name+" established", func(l string) bool {
			return strings.HasPrefix(l, "Established under name")
		})
	}
}

// PublishAddress publishes an address record, host (x.local) → addr,
// through the daemon with avahi-publish --address --no-reverse (for
// services of another host, Service.Host), and waits until avahi has
// established it. It stays published until the test ends.
func (d *Daemon) PublishAddress(t testing.TB, host string, addr netip.Addr) {
	t.Helper()
	p := start(t, "avahi-publish "+host, d.command("avahi-publish", "--address", "--no-reverse", host, addr.String()))
	p.waitLine(t, StartTimeout, "avahi-publish's "+host+" established", func(l string) bool {
		return strings.HasPrefix(l, "Established under name")
	})
}

// ResolveHost resolves a host name (x.local) to an address of IP
// version v6 (AAAA) or IPv4 (A) with avahi-resolve --name, through the
// daemon, and returns it; it fails t when avahi cannot resolve it within
// its own timeout (5 s).
func (d *Daemon) ResolveHost(t testing.TB, name string, v6 bool) netip.Addr {
	t.Helper()
	version := "-4"
	if v6 {
		version = "-6"
	}
	p := start(t, "avahi-resolve "+version+" "+name, d.command("avahi-resolve", "--name", version, name))
	l := p.waitLine(t, StartTimeout, "avahi-resolve's answer", func(l string) bool {
		return strings.Contains(l, "\t") || strings.HasPrefix(l, "Failed")
	})
	_, addr, ok := strings.Cut(l, "\t")
	a, err := netip.ParseAddr(addr)
	if !ok || err != nil {
		t.Fatalf("avahi-resolve %s %s: %s", version, name, l)
	}
	return a
}

// proc is a process the harness started, and the lines it wrote to
// standard output and error.
type proc struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	wake   chan struct{} // closed and replaced on every line, and at the end
	exited chan struct{}
	err    error // Wait's, once exited is closed
}

// start starts cmd from netns.Spawn's thread with a parent-death signal,
// so that it ends with the test binary whatever happens, and kills it
// and waits for it when the test ends.
func start(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, wake: make(chan struct{}), exited: make(chan struct{})}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Spawn(cmd); err != nil {
		t.Fatalf("avahi: start %s: %v", name, err)
	}
	var readers sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		readers.Go(func() {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				p.add(sc.Text())
			}
		})
	}
	go func() {
		readers.Wait() // every read of the pipes is done before Wait
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill(t) })
	return p
}

func (p *proc) add(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, line)
	close(p.wake)
	p.wake = make(chan struct{})
}

func (p *proc) snapshot() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

// kill kills the process, if it still runs, and waits for it. Its
// output is logged when the test failed.
func (p *proc) kill(t testing.TB) {
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(killTimeout):
		t.Errorf("avahi: %s did not exit %v after SIGKILL", p.name, killTimeout)
	}
	if t.Failed() || os.Getenv("TALLSHIP_DEBUG") != "" {
		t.Logf("avahi: %s wrote:\n%s", p.name, strings.Join(p.snapshot(), "\n"))
	}
}

// waitFor waits until cond holds for the lines so far and returns them;
// it fails t after timeout, or when the process ends first.
func (p *proc) waitFor(t testing.TB, timeout time.Duration, what string, cond func([]string) bool) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		lines, wake := slices.Clone(p.lines), p.wake
		p.mu.Unlock()
		if cond(lines) {
			return lines
		}
		select {
		case <-p.exited:
			p.mu.Lock()
			lines = slices.Clone(p.lines)
			p.mu.Unlock()
			if cond(lines) {
				return lines
			}
			t.Fatalf("avahi: %s exited (%v) while waiting for %s; it wrote:\n%s", p.name, p.err, what, strings.Join(lines, "\n"))
		case <-wake:
		case <-deadline.C:
			t.Fatalf("avahi: after %v, still waiting for %s from %s; it wrote:\n%s", timeout, what, p.name, strings.Join(lines, "\n"))
		}
	}
}

// waitLine waits for a line for which match holds and returns it.
func (p *proc) waitLine(t testing.TB, timeout time.Duration, what string, match func(string) bool) string {
	t.Helper()
	lines := p.waitFor(t, timeout, what, func(ls []string) bool { return slices.ContainsFunc(ls, match) })
	return lines[slices.IndexFunc(lines, match)]
}
