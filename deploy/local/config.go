package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Standard ports: the defaults of each component.
const (
	defaultConsulPort = 8500
	defaultJaegerPort = 16686 // query HTTP API
	defaultOTLPPort   = 4318  // OTLP/HTTP receiver
	maxHellos         = 50
)

// config is the parsed command line.
type config struct {
	binDir        string
	jaegerConfig  string
	gatewayListen string
	admin         string
	hellos        int
	consulPort    int
	jaegerPort    int
	otlpPort      int
	readyTimeout  time.Duration
	stopTimeout   time.Duration
}

func newFlagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.binDir, "bin", "bin", "`directory` holding hopgate and hello (and consul and jaeger unless $CONSUL_BIN/$JAEGER_BIN say otherwise)")
	fs.StringVar(&c.jaegerConfig, "jaeger-config", "deploy/local/jaeger.yaml", "Jaeger config `file`")
	fs.StringVar(&c.gatewayListen, "gateway-listen", ":8080", "gateway public listen `address`")
	fs.StringVar(&c.admin, "admin", "127.0.0.1:9901", "gateway admin API listen `address`")
	intVar(fs, &c.hellos, "hellos", 3, 0, maxHellos, "`number` of hello backends")
	intVar(fs, &c.consulPort, "consul-port", defaultConsulPort, 1, 65535, "Consul HTTP API and UI `port`")
	intVar(fs, &c.jaegerPort, "jaeger-port", defaultJaegerPort, 1, 65535, "Jaeger query API `port`")
	intVar(fs, &c.otlpPort, "otlp-port", defaultOTLPPort, 1, 65535, "Jaeger OTLP/HTTP `port` the gateway and hellos send traces to")
	durationVar(fs, &c.readyTimeout, "ready-timeout", 90*time.Second, "`duration` to wait for the gateway to route to every hello before saying what is missing")
	durationVar(fs, &c.stopTimeout, "stop-timeout", 15*time.Second, "`duration` each step of the shutdown may take before its processes are killed")
	return fs
}

// parseFlags parses and validates the command line. Every error is one line
// that names the flag.
func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := newFlagSet(c)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only; see -h)", fs.Arg(0))
	}
	if c.binDir == "" {
		return nil, errors.New("invalid value \"\" for flag -bin: want a directory")
	}
	if c.jaegerConfig == "" {
		return nil, errors.New("invalid value \"\" for flag -jaeger-config: want a file")
	}
	gwPort, err := addrPort("gateway-listen", c.gatewayListen)
	if err != nil {
		return nil, err
	}
	adminPort, err := addrPort("admin", c.admin)
	if err != nil {
		return nil, err
	}

	// Every port the stack binds must be its own, or one of the children
	// fails in a way that is hard to read. Fixed ports count too.
	type use struct {
		port int
		what string
	}
	uses := []use{
		{gwPort, "-gateway-listen"},
		{adminPort, "-admin"},
		{c.consulPort, "-consul-port"},
		{c.jaegerPort, "-jaeger-port"},
		{c.otlpPort, "-otlp-port"},
	}
	if c.consulPort == defaultConsulPort {
		for _, p := range stdConsulPorts.list() {
			uses = append(uses, use{p.port, "Consul's " + p.role + " port"})
		}
	}
	if c.jaegerStandard() {
		for _, p := range stdJaegerPorts.list() {
			uses = append(uses, use{p.port, "Jaeger's " + p.role + " port"})
		}
	}
	seen := map[int]string{}
	for _, u := range uses {
		if other, ok := seen[u.port]; ok {
			return nil, fmt.Errorf("port %d is taken twice: by %s and %s; give each its own", u.port, other, u.what)
		}
		seen[u.port] = u.what
	}
	return c, nil
}

// jaegerStandard reports whether Jaeger's fixed ports are its defaults.
func (c *config) jaegerStandard() bool {
	return c.jaegerPort == defaultJaegerPort && c.otlpPort == defaultOTLPPort
}

// addrPort checks a host:port flag value and returns the port, which must be
// a real one: the banner and the readiness check need to know it.
func addrPort(name, addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("invalid value %q for flag -%s: want host:port or :port", addr, name)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid value %q for flag -%s: want a port from 1 to 65535", addr, name)
	}
	return n, nil
}

func intVar(fs *flag.FlagSet, p *int, name string, def, lo, hi int, usage string) {
	*p = def
	fs.Func(name, fmt.Sprintf("%s (default %d)", usage, def), func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("want a whole number from %d to %d", lo, hi)
		}
		*p = n
		return nil
	})
}

func durationVar(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Func(name, fmt.Sprintf("%s (default %v)", usage, def), func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 90s or 2m")
		}
		*p = d
		return nil
	})
}
