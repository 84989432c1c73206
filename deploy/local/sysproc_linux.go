//go:build linux

package main

import "syscall"

// sysProcAttr puts a child in its own process group, and has the kernel
// send it SIGTERM should the runner die without stopping it (killed, or
// crashed), so no stray Consul or hello outlives a lost terminal.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
