//go:build unix && !linux

package main

import "syscall"

func setParentDeathSignal(a *syscall.SysProcAttr) {}
