//go:build unix

package join

import (
	"os"
	"syscall"
)

// signalGroup sends sig to the process group p leads (see sysProcAttr), so a
// shell wrapper's children get it too; to p alone if that fails.
func signalGroup(p *os.Process, sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		if err := syscall.Kill(-p.Pid, s); err == nil {
			return
		}
	}
	_ = p.Signal(sig)
}

// exitCode is the exit status, or 128+N when signal N ended the process, as
// shells report it.
func exitCode(ps *os.ProcessState) int {
	if sig, ok := exitSignal(ps); ok {
		return 128 + int(sig)
	}
	return ps.ExitCode()
}

// exitSignal is the signal that ended the process, if one did.
func exitSignal(ps *os.ProcessState) (syscall.Signal, bool) {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}

// requestedStop reports whether a child that was sent SIGTERM or SIGINT
// ended the way a clean stop does: by that signal, with status 0, or with
// status 128+SIGTERM or 128+SIGINT (how shells and the JVM report them).
func requestedStop(ps *os.ProcessState) bool {
	if sig, ok := exitSignal(ps); ok {
		return sig == syscall.SIGTERM || sig == syscall.SIGINT
	}
	switch ps.ExitCode() {
	case 0, 128 + int(syscall.SIGTERM), 128 + int(syscall.SIGINT):
		return true
	}
	return false
}
