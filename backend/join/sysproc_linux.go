//go:build linux

package join

import "syscall"

// sysProcAttr starts the child in its own process group, so that signals
// meant for the wrapper (a terminal's Ctrl-C goes to the whole foreground
// group) reach the child only when the wrapper passes them on, after the
// drain; and has the kernel send it SIGTERM should the wrapper die without
// stopping it (SIGKILL, a crash), so no unsupervised child lingers.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
