// Package cputime reads the process's CPU time, for benchmarks that
// report CPU per operation beside wall time: on a shared machine, time
// spent waiting for a core moves ns/op a great deal and CPU time little.
package cputime

// Process is the process's user and system CPU time so far, in
// nanoseconds; 0 where it cannot be read.
func Process() int64 {
	user, system := Split()
	return user + system
}
