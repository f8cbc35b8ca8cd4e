// Package netns confines a test binary to a private network namespace, so
// that no multicast or other packet a test sends can leave the machine.
//
// A package whose tests touch the network calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { netns.Main(m) }
//
// Main re-executes the test binary in a new network namespace (and, when not
// root, a new user namespace in which the caller is root), brings loopback up
// with multicast on and a route for 224.0.0.0/4, and runs the tests there.
// Where no namespace can be made, the tests run in the caller's namespace
// and every test that calls Require skips, saying why. Enter does the same
// for a command (the benchmark).
//
// Inside that namespace, tests build topologies of their own from
// Namespace (internal/testutil/lan's LAN, e2e's routed subnets), and Spawn
// starts the processes they run there so that none outlives the binary.
package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

const (
	envKey = "TALLSHIP_NETNS"
	inside = "inside"
	// ready marks a process, and the processes it starts (fuzz workers,
	// helper programs), as running in a namespace already set up.
	ready = "ready"
	// envReason carries, into the tests, why no namespace could be made.
	envReason = "TALLSHIP_NETNS_UNAVAILABLE"
)

// Main runs the tests of m inside a private network namespace and exits
// with their status. It never returns.
func Main(m *testing.M) {
	startSpawner()
	switch os.Getenv(envKey) {
	case inside:
		if err := SetupLoopback(); err != nil {
			os.Setenv(envReason, err.Error())
			os.Unsetenv(envKey)
		} else {
			os.Setenv(envKey, ready)
		}
		os.Exit(m.Run())
	case ready:
		os.Exit(m.Run())
	}
	if os.Getenv(envReason) != "" {
		os.Exit(m.Run())
	}
	code, err := reexec(envKey + "=" + inside)
	if err != nil {
		os.Setenv(envReason, fmt.Sprintf("cannot create a private network namespace: %v", err))
		os.Exit(m.Run())
	}
	os.Exit(code)
}

// Enter is Main for a command (the benchmark). Called first in main, it
// re-executes the binary in a new private network namespace and exits
// with the child's status; in the child it brings loopback up, checks that
// no other interface is there, and returns nil: Inside then reports true
// there and in every process the child starts (the benchmark's helpers).
// A child that cannot set its namespace up exits with status 1. Where no
// namespace can be made, Enter returns why, and the caller runs without
// one.
func Enter() error {
	startSpawner()
	switch os.Getenv(envKey) {
	case ready:
		return nil
	case inside:
		err := SetupLoopback()
		if err == nil {
			err = CheckPrivate()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "private network namespace:", err)
			os.Exit(1)
		}
		os.Setenv(envKey, ready)
		return nil
	}
	code, err := reexec(envKey + "=" + inside)
	if err != nil {
		return fmt.Errorf("cannot create a private network namespace: %w", err)
	}
	os.Exit(code)
	return nil
}

// reexec runs this binary again with the same arguments, in a new network
// namespace (and a new user namespace in which the caller is root, when it
// is not root already), with env added to its environment, and returns its
// exit code. It returns an error only when the child could not be started.
func reexec(env ...string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env...)
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
	if os.Geteuid() != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if exit.ExitCode() < 0 {
			return 1, nil // killed by a signal
		}
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 1, nil
	}
	return 0, nil
}

// SetupLoopback brings lo up with multicast and routes multicast to it;
// call it first in the re-executed process.
func SetupLoopback() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the ip command (iproute2) is not installed")
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up", "multicast", "on"},
		{"route", "add", "224.0.0.0/4", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Inside reports whether this process runs in a private namespace made by
// Main.
func Inside() bool { return os.Getenv(envKey) == ready }

// Require skips t unless it runs inside a private network namespace made
// by Main whose only interfaces are loopback and ones the tests made
// (named with the prefix "ts"). Call it first in every test that sends
// multicast or relies on the namespace.
func Require(t testing.TB) {
	t.Helper()
	if reason := os.Getenv(envReason); reason != "" {
		t.Skipf("needs a private network namespace: %s", reason)
	}
	if !Inside() {
		t.Skip("needs a private network namespace: call netns.Main from TestMain")
	}
	if err := CheckPrivate(); err != nil {
		t.Fatalf("%v; refusing to send", err)
	}
}

// CheckPrivate returns an error unless every interface is loopback or one
// made by the caller (named with the prefix "ts").
func CheckPrivate() error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagLoopback == 0 && !strings.HasPrefix(ifi.Name, "ts") {
			return fmt.Errorf("netns: interface %q in what should be a private namespace", ifi.Name)
		}
	}
	return nil
}

// Loopback returns the loopback interface of the namespace.
func Loopback(t testing.TB) *net.Interface {
	t.Helper()
	ifi, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	return ifi
}
