package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Namespace is a network namespace of its own, for the topologies the
// tests build inside the private namespace of Main (internal/testutil/lan's
// hosts and bridge, e2e's routed subnets). A "sleep" process cloned into a
// new network namespace holds it open, so it holds only loopback and what
// the test puts there, and nothing is named under /var/run/netns: it ends
// with Close, or with the test binary (the holder's parent-death signal).
// Deleting a namespace does not kill what runs in it: kill that first.
type Namespace struct {
	holder *exec.Cmd
	done   chan struct{}
}

// NewNamespace makes a network namespace of its own. It needs root in the
// test's namespace, and sleep.
func NewNamespace() (*Namespace, error) {
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := Spawn(cmd); err != nil {
		return nil, err
	}
	ns := &Namespace{holder: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(ns.done)
	}()
	// It must be a namespace of its own, not the caller's.
	self, err1 := os.Readlink("/proc/self/ns/net")
	its, err2 := os.Readlink(ns.Path())
	if err := errors.Join(err1, err2); err != nil || self == its {
		ns.Close()
		if err == nil {
			err = errors.New("the holder shares the caller's network namespace")
		}
		return nil, err
	}
	return ns, nil
}

// Pid is the process id of the namespace's holder, for
// "ip link set X netns PID".
func (ns *Namespace) Pid() int { return ns.holder.Process.Pid }

// Path is the namespace's file, for nsenter --net=PATH.
func (ns *Namespace) Path() string { return "/proc/" + strconv.Itoa(ns.Pid()) + "/ns/net" }

// Command returns a command that runs name in the namespace.
func (ns *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--", name}, args...)...)
}

// Run runs name in the namespace with stdin as its input; the error says
// what it printed.
func (ns *Namespace) Run(stdin string, name string, args ...string) error {
	cmd := ns.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// IP runs ip commands ("link set lo up") in the namespace, in one batch,
// stopping at the first that fails.
func (ns *Namespace) IP(cmds ...string) error {
	if err := ns.Run(strings.Join(cmds, "\n")+"\n", "ip", "-batch", "-"); err != nil {
		return fmt.Errorf("%w\nbatch:\n%s", err, strings.Join(cmds, "\n"))
	}
	return nil
}

// Sysctl sets /proc/sys entries (keys relative to /proc/sys) in the
// namespace: /proc/sys/net is the writer's namespace's.
func (ns *Namespace) Sysctl(kv map[string]string) error {
	var script strings.Builder
	for k, v := range kv {
		fmt.Fprintf(&script, "echo %s > /proc/sys/%s || exit 1\n", v, k)
	}
	return ns.Run(script.String(), "sh", "-s")
}

// Close kills the holder and waits for it: with its last process, the
// namespace and its interfaces are gone.
func (ns *Namespace) Close() {
	ns.holder.Process.Kill()
	<-ns.done
}

// spawner starts every process from one goroutine locked to its thread
// for the life of the binary: a parent-death signal fires when the thread
// that started the child ends, so that thread must not end before the
// binary does.
var spawner struct {
	once sync.Once
	reqs chan spawnRequest
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// Spawn starts cmd (cmd.Start) from a thread that lives as long as this
// binary, so that a parent-death signal in cmd.SysProcAttr fires when the
// binary ends and not before: nothing it starts outlives it, even when it
// crashes or a test times out.
func Spawn(cmd *exec.Cmd) error {
	startSpawner()
	done := make(chan error, 1)
	spawner.reqs <- spawnRequest{cmd, done}
	return <-done
}

// startSpawner starts the spawner's goroutine, once. Main and Enter start
// it before anything else runs, so that it is there before any test's
// goroutine count (leakcheck).
func startSpawner() {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the binary
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
}
