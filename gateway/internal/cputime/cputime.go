// Package cputime reads the process's CPU time, for benchmarks that
// report CPU per operation beside wall time: on a shared machine, time
// spent waiting for a core moves ns/op a great deal and CPU time little.
package cputime

import "syscall"

// Process is the process's user and system CPU time so far, in
// nanoseconds; 0 where it cannot be read.
func Process() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
