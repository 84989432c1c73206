// Package cputime reads the process's CPU time, for benchmarks that
// report CPU per operation beside wall time: on a shared machine, time
// spent waiting for a core moves ns/op a great deal and CPU time little.
package cputime

import "syscall"

// Process is the process's user and system CPU time so far, in
// nanoseconds; 0 where it cannot be read.
func Process() int64 {
	user, system := Split()
	return user + system
}

// Split is the process's user and system CPU time so far, apart, in
// nanoseconds; zeros where they cannot be read. User time is the part the
// process's own code decides: on loopback, system time is mostly the
// network stack's, the same for any proxy making the same calls.
func Split() (user, system int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return ru.Utime.Nano(), ru.Stime.Nano()
}
