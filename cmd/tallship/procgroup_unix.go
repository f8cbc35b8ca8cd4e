//go:build unix

package main

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// setProcessGroup runs cmd in a process group of its own, so that a
// terminal's Ctrl-C reaches it once, through this command, and a signal
// reaches whatever it started too. On Linux, cmd is also killed if this
// process dies without stopping it.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if runtime.GOOS == "linux" {
		setParentDeathSignal(cmd.SysProcAttr)
	}
}

// signalGroup sends sig to cmd's process group.
func signalGroup(cmd *exec.Cmd, sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		if err := syscall.Kill(-cmd.Process.Pid, s); err == nil {
			return
		}
	}
	cmd.Process.Signal(sig)
}
