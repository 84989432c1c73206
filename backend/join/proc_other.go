//go:build !unix

package join

import (
	"os"
	"syscall"
)

// Without process groups and POSIX signals, hopgate join still builds but
// can only stop the child by killing it.

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(p *os.Process, sig os.Signal) {
	if err := p.Signal(sig); err != nil {
		_ = p.Kill()
	}
}

func exitCode(ps *os.ProcessState) int { return ps.ExitCode() }

func exitSignal(*os.ProcessState) (syscall.Signal, bool) { return 0, false }

func requestedStop(ps *os.ProcessState) bool { return ps.ExitCode() == 0 }
