//go:build unix && !linux

package join

import "syscall"

// sysProcAttr starts the child in its own process group, so that signals
// meant for the wrapper reach the child only when the wrapper passes them
// on, after the drain.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
