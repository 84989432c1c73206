// Command hopgate-stack is what `make run` runs: a local hopgate stack of
// plain processes. It starts a Consul dev agent, Jaeger, the gateway and N
// hello backends all at once (each retries until what it needs is up),
// prefixes every output line with the process name, prints where everything
// is once the gateway routes to every hello, and on Ctrl-C stops them in
// dependency order: hellos first (they deregister and drain), then the
// gateway, then Jaeger and Consul.
//
// Run it from the repository root: go run ./deploy/local [flags].
//
// Exit codes: 0 clean stop, 1 runtime failure (a binary missing, a port in
// use, a child that had to be killed on the way out), 2 bad flags; with one
// line on stderr saying what was wrong.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

const progName = "hopgate-stack"

func main() {
	// Children get SIGTERM if this process dies without stopping them
	// (Pdeathsig, Linux). The kernel ties that to the thread that started
	// them, so start them all from the main thread, which lives as long as
	// the process.
	runtime.LockOSThread()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 2
	}

	color := colorWanted(stdout)
	out := &syncWriter{w: stdout}
	s, err := build(cfg, os.Environ(), out, color)
	if s != nil {
		s.statusTerminal = isTerminal(os.Stdout) && stdout == io.Writer(os.Stdout)
	}
	if err == nil {
		err = checkPorts(s.portChecks())
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 1
	}

	// Signals first, so a Ctrl-C during start-up still stops what started.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	// With SIGPIPE handled, a closed stdout (`make run | head`) makes writes
	// fail instead of killing this process before it has stopped the rest.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	if err := s.start(); err != nil {
		s.stop(nil)
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.waitReady(ctx)

	running := len(s.started())
	for {
		select {
		case sig := <-sigs:
			cancel()
			out.stopStatus()
			s.logf("%v: stopping everything (send it again to kill everything at once)", sig)
			force := make(chan struct{})
			go func() {
				<-sigs
				close(force)
			}()
			if !s.stop(force) {
				return 1
			}
			return 0
		case p := <-s.exited:
			running--
			s.alertf("%s exited unexpectedly (%s); the rest keeps running", p.name, p.status())
			if running == 0 {
				s.alertf("every process has exited; nothing left to run")
				return 1
			}
		}
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `Usage: go run ./deploy/local [flags]   (or bin/%s; run from the repository root)

Starts a Consul dev agent, Jaeger, the hopgate gateway and N hello backends
as child processes, all at once, and stops them in dependency order on Ctrl-C.

Binaries: hopgate and hello come from -bin; consul and jaeger from $CONSUL_BIN
and $JAEGER_BIN when set, else from -bin, else from PATH. Without a jaeger
binary the stack runs without tracing.

Consul's other ports (server 8300, serf 8301-8302, gRPC 8502-8503, DNS 8600)
are Consul's defaults while -consul-port is 8500, and free ports otherwise;
likewise Jaeger's OTLP/gRPC 4317, query gRPC 16685 and health 13133 while
-jaeger-port and -otlp-port are 16686 and 4318. So a second stack beside the
first needs only different -consul-port, -jaeger-port, -otlp-port,
-gateway-listen and -admin.

Flags:
`, progName)
	fs := newFlagSet(&config{})
	fs.SetOutput(w)
	fs.PrintDefaults()
}
