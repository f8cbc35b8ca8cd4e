package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// The benchmark runs inside a private network namespace that it makes for
// itself: it re-executes its own binary with CLONE_NEWNET (and, when not
// root, CLONE_NEWUSER), so that no packet it sends, multicast or not, can
// leave the machine. The helper processes it starts inherit the namespace.
const (
	envNS   = "TALLSHIP_BENCH_NETNS"
	nsChild = "child" // set for the re-executed process, before setup
	nsReady = "ready" // set once loopback is up; inherited by helpers
)

// enterNamespace re-executes the benchmark in a new network namespace and
// returns its exit code, or an error when no namespace could be made.
func enterNamespace(args []string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envNS+"="+nsChild)
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
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
			return 1, nil
		}
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 1, nil
	}
	return 0, nil
}

// setupNamespace brings loopback up with multicast and a multicast route,
// then checks that loopback is the only interface.
func setupNamespace() error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up", "multicast", "on"},
		{"route", "add", "224.0.0.0/4", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return checkPrivate()
}

// checkPrivate refuses to go on unless loopback is the only interface.
func checkPrivate() error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("interface %q in what should be a private namespace", ifi.Name)
		}
	}
	return nil
}
