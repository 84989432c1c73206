package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stack is the set of children and the order they stop in.
type stack struct {
	cfg   *config
	out   *syncWriter // the terminal, shared by every lineWriter
	color bool
	log   *lineWriter // the runner's own lines

	consul, jaeger, gateway *proc // jaeger is nil when there is none
	hellos                  []*proc
	noJaeger                string // why Jaeger is not running, when it is not

	consulPorts consulPorts
	jaegerPorts jaegerPorts

	exited chan *proc // every started child, once, when it exits

	// statusTerminal: the live status line is redrawn in place (stdout is
	// a terminal) rather than printed as occasional full lines.
	statusTerminal bool
}

// build finds the binaries, settles the ports and prepares the children; it
// starts nothing.
func build(cfg *config, environ []string, out *syncWriter, color bool) (*stack, error) {
	getenv := envLookup(environ)
	s := &stack{cfg: cfg, out: out, color: color}

	consulBin, err := findBinary("consul", "CONSUL_BIN", cfg.binDir, true, getenv)
	if err != nil {
		return nil, err
	}
	jaegerBin, err := findBinary("jaeger", "JAEGER_BIN", cfg.binDir, true, getenv)
	if err != nil {
		if getenv("JAEGER_BIN") != "" {
			return nil, err // asked for one explicitly: that is a mistake to fix
		}
		s.noJaeger = err.Error()
	}
	if jaegerBin != "" {
		if _, err := os.Stat(cfg.jaegerConfig); err != nil {
			return nil, fmt.Errorf("jaeger config %s not found: run from the repository root or pass -jaeger-config", cfg.jaegerConfig)
		}
	}
	// No PATH fallback for these two: a `hello` on PATH is likely GNU hello.
	gatewayBin, err := findBinary("hopgate", "", cfg.binDir, false, getenv)
	if err != nil {
		return nil, err
	}
	var helloBin string
	if cfg.hellos > 0 {
		if helloBin, err = findBinary("hello", "", cfg.binDir, false, getenv); err != nil {
			return nil, fmt.Errorf("%v (or -hellos 0)", err)
		}
	}

	if err := s.settlePorts(); err != nil {
		return nil, err
	}

	consulAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.consulPort))
	otel := func(service string) map[string]string {
		m := map[string]string{"CONSUL_HTTP_ADDR": consulAddr, "OTEL_SERVICE_NAME": service}
		if jaegerBin != "" {
			m["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.otlpPort))
			m["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
		}
		return m
	}

	names := []string{"stack", "consul", "jaeger", "gateway"}
	for i := 1; i <= cfg.hellos; i++ {
		names = append(names, helloName(i))
	}
	width := 9
	for _, n := range names {
		width = max(width, len(n)+1)
	}
	lw := func(name, color string) *lineWriter {
		if !s.color {
			color = ""
		}
		return newLineWriter(out, prefix(name, width, color))
	}
	s.log = lw("stack", ansiBold)

	s.consul = &proc{name: "consul", path: consulBin, args: s.consulArgs(),
		env: childEnv(environ, nil), out: lw("consul", "\x1b[35m")}
	if jaegerBin != "" {
		logLevel := getenv("JAEGER_LOG_LEVEL")
		if logLevel == "" {
			logLevel = "warn"
		}
		s.jaeger = &proc{name: "jaeger", path: jaegerBin, args: []string{"--config", cfg.jaegerConfig},
			env: childEnv(environ, map[string]string{
				"JAEGER_LOG_LEVEL":       logLevel,
				"JAEGER_LISTEN_HOST":     "127.0.0.1",
				"JAEGER_QUERY_PORT":      strconv.Itoa(cfg.jaegerPort),
				"JAEGER_OTLP_HTTP_PORT":  strconv.Itoa(cfg.otlpPort),
				"JAEGER_QUERY_GRPC_PORT": strconv.Itoa(s.jaegerPorts.queryGRPC),
				"JAEGER_OTLP_GRPC_PORT":  strconv.Itoa(s.jaegerPorts.otlpGRPC),
				"JAEGER_HEALTH_PORT":     strconv.Itoa(s.jaegerPorts.health),
			}),
			out: lw("jaeger", "\x1b[33m")}
	}
	gatewayArgs := []string{"-listen", cfg.gatewayListen, "-admin", cfg.admin}
	if jaegerBin != "" { // the dashboard reads recent traces from Jaeger's query API
		gatewayArgs = append(gatewayArgs, "-jaeger-query", fmt.Sprintf("http://127.0.0.1:%d", cfg.jaegerPort))
	}
	s.gateway = &proc{name: "gateway", path: gatewayBin,
		args: gatewayArgs,
		env:  childEnv(environ, otel("hopgate")), out: lw("gateway", "\x1b[36m")}
	for i := 1; i <= cfg.hellos; i++ {
		s.hellos = append(s.hellos, &proc{name: helloName(i), path: helloBin,
			args: []string{"-listen", "127.0.0.1:0", "-service", "hello", "-route", "/"},
			env:  childEnv(environ, otel("hello")),
			out:  lw(helloName(i), helloColors[(i-1)%len(helloColors)])})
	}
	s.exited = make(chan *proc, len(s.procs()))
	return s, nil
}

func helloName(i int) string { return "hello-" + strconv.Itoa(i) }

// settlePorts fixes Consul's and Jaeger's other ports: their defaults while
// the ports a person names are the defaults, free ports otherwise, so a
// second stack can run beside the first.
func (s *stack) settlePorts() error {
	gwPort, _ := addrPort("gateway-listen", s.cfg.gatewayListen)
	adminPort, _ := addrPort("admin", s.cfg.admin)
	avoid := map[int]bool{gwPort: true, adminPort: true, s.cfg.consulPort: true,
		s.cfg.jaegerPort: true, s.cfg.otlpPort: true}
	n := 0
	if s.cfg.consulPort != defaultConsulPort {
		n += 6
	}
	if !s.cfg.jaegerStandard() {
		n += 3
	}
	free, err := freePorts(n, avoid)
	if err != nil {
		return err
	}
	s.consulPorts, s.jaegerPorts = stdConsulPorts, stdJaegerPorts
	if s.cfg.consulPort != defaultConsulPort {
		s.consulPorts = consulPorts{free[0], free[1], free[2], free[3], free[4], free[5]}
		free = free[6:]
	}
	if !s.cfg.jaegerStandard() {
		s.jaegerPorts = jaegerPorts{free[0], free[1], free[2]}
	}
	return nil
}

// consulArgs is `consul agent -dev -client 127.0.0.1 -log-level warn`, with
// every port spelled out when they are not the defaults. A dev agent keeps
// no data.
func (s *stack) consulArgs() []string {
	args := []string{"agent", "-dev", "-client", "127.0.0.1", "-log-level", "warn"}
	if s.cfg.consulPort == defaultConsulPort {
		return args
	}
	p := s.consulPorts
	for _, kv := range []struct {
		flag string
		port int
	}{
		{"-http-port", s.cfg.consulPort}, {"-server-port", p.server},
		{"-serf-lan-port", p.serfLAN}, {"-serf-wan-port", p.serfWAN},
		{"-grpc-port", p.grpc}, {"-grpc-tls-port", p.grpcTLS}, {"-dns-port", p.dns},
	} {
		args = append(args, kv.flag, strconv.Itoa(kv.port))
	}
	return args
}

// portChecks lists every address the children will listen on.
func (s *stack) portChecks() []portCheck {
	gwHost, _, _ := net.SplitHostPort(s.cfg.gatewayListen)
	gwPort, _ := addrPort("gateway-listen", s.cfg.gatewayListen)
	adminHost, _, _ := net.SplitHostPort(s.cfg.admin)
	adminPort, _ := addrPort("admin", s.cfg.admin)
	const lo = "127.0.0.1"
	checks := []portCheck{
		{host: lo, port: s.cfg.consulPort, flag: "consul-port"},
		{host: gwHost, port: gwPort, flag: "gateway-listen"},
		{host: adminHost, port: adminPort, flag: "admin"},
	}
	if s.jaeger != nil {
		checks = append(checks,
			portCheck{host: lo, port: s.cfg.jaegerPort, flag: "jaeger-port"},
			portCheck{host: lo, port: s.cfg.otlpPort, flag: "otlp-port"})
	}
	for _, p := range s.consulPorts.list() {
		checks = append(checks, portCheck{host: lo, port: p.port, udp: p.udp, role: "Consul " + p.role, flag: "consul-port"})
	}
	if s.jaeger != nil {
		for _, p := range s.jaegerPorts.list() {
			checks = append(checks, portCheck{host: lo, port: p.port, role: "Jaeger " + p.role, flag: "jaeger-port"})
		}
	}
	return checks
}

// procs lists the children in start order.
func (s *stack) procs() []*proc {
	ps := []*proc{s.consul}
	if s.jaeger != nil {
		ps = append(ps, s.jaeger)
	}
	ps = append(ps, s.gateway)
	return append(ps, s.hellos...)
}

// started lists the children that were started.
func (s *stack) started() []*proc {
	var ps []*proc
	for _, p := range s.procs() {
		if p.done != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// start starts every child at once, without waiting for any: each piece
// retries until what it needs is up. A child that cannot be started at all
// is an error, except Jaeger, without which the stack merely has no traces.
func (s *stack) start() error {
	s.logf("starting %s, all at once", joinNames(s.procs()))
	if s.noJaeger != "" {
		s.alertf("running without Jaeger (no traces): %s", s.noJaeger)
	}
	if s.cfg.consulPort != defaultConsulPort {
		p := s.consulPorts
		s.logf("consul's other ports: server %d, serf LAN %d, serf WAN %d, gRPC %d, gRPC-TLS %d, DNS %d",
			p.server, p.serfLAN, p.serfWAN, p.grpc, p.grpcTLS, p.dns)
	}
	for _, p := range s.procs() {
		s.logf("%s: %s", p.name, p.commandLine())
		if err := p.start(s.exited); err != nil {
			if p == s.jaeger {
				s.noJaeger = err.Error()
				s.alertf("jaeger cannot start (%v); running without it", err)
				continue
			}
			return fmt.Errorf("%s cannot start: %v", p.name, err)
		}
	}
	return nil
}

// stop stops the children in dependency order: the hellos first, so they
// deregister while Consul and the gateway still run, then the gateway, then
// Jaeger (after the gateway flushed its spans) and Consul. Each step is
// SIGTERM, a bounded wait, then SIGKILL; closing force kills at once. stop
// reports whether nothing had to be killed.
func (s *stack) stop(force <-chan struct{}) bool {
	s.reportExited()
	clean := true
	for _, step := range []struct {
		procs []*proc
		why   string
	}{
		{s.hellos, "they deregister, drain and exit"},
		{[]*proc{s.gateway}, ""},
		{[]*proc{s.jaeger, s.consul}, ""},
	} {
		if !s.stopStep(step.procs, step.why, force) {
			clean = false
		}
	}
	if clean {
		s.logf("all stopped")
	} else {
		s.alertf("all stopped, some of them killed")
	}
	return clean
}

func (s *stack) stopStep(ps []*proc, why string, force <-chan struct{}) bool {
	var live []*proc
	for _, p := range ps {
		if p.running() {
			p.stopping.Store(true)
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		return true
	}
	msg := "stopping " + joinNames(live)
	if why != "" {
		msg += ": " + why
	}
	s.logf("%s", msg)
	for _, p := range live {
		p.signal(syscall.SIGTERM)
	}

	timer := time.NewTimer(s.cfg.stopTimeout)
	defer timer.Stop()
	clean := true
	for _, p := range live {
		if clean {
			select {
			case <-p.done:
				s.logf("%s stopped (%s)", p.name, p.status())
				continue
			case <-timer.C:
				s.alertf("%s did not stop within %v: killing", joinNames(running(live)), s.cfg.stopTimeout)
			case <-force:
				s.alertf("killing %s", joinNames(running(live)))
			}
			clean = false
			for _, q := range live {
				q.signal(syscall.SIGKILL)
			}
		}
		<-p.done
		s.logf("%s stopped (%s)", p.name, p.status())
	}
	return clean
}

// reportExited reports children that exited unexpectedly and were not yet
// reported.
func (s *stack) reportExited() {
	for {
		select {
		case p := <-s.exited:
			if !p.stopping.Load() {
				s.alertf("%s exited unexpectedly (%s)", p.name, p.status())
			}
		default:
			return
		}
	}
}

func running(ps []*proc) []*proc {
	var r []*proc
	for _, p := range ps {
		if p.running() {
			r = append(r, p)
		}
	}
	return r
}

func joinNames(ps []*proc) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.name
	}
	return strings.Join(names, ", ")
}

func (s *stack) logf(format string, args ...any) { s.log.Printf(format, args...) }

// alertf logs a line meant to be noticed.
func (s *stack) alertf(format string, args ...any) {
	msg := "*** " + fmt.Sprintf(format, args...)
	if s.color {
		msg = ansiBoldRed + msg + ansiReset
	}
	s.log.Printf("%s", msg)
}

// waitReady polls the gateway's admin API until it is ready and routes to
// every hello, then prints the banner. Past the deadline it says what is
// missing and goes on polling quietly, since everything keeps running.
func (s *stack) waitReady(ctx context.Context) {
	pr := newProbe(s.adminAddr())
	start := time.Now()
	deadline := start.Add(s.cfg.readyTimeout)
	nextProgress := start.Add(5 * time.Second)
	late := false
	for {
		if !s.gateway.running() {
			if ctx.Err() == nil {
				s.alertf("the gateway is not running, so the stack will not come up; Ctrl-C stops the rest")
			}
			return
		}
		missing := pr.missing(ctx, s.cfg.hellos)
		if ctx.Err() != nil {
			return
		}
		if missing == "" {
			s.banner()
			s.liveStatus(ctx, s.statusTerminal)
			return
		}
		now := time.Now()
		switch {
		case !late && now.After(deadline):
			late = true
			s.alertf("not up after %v: %s; everything keeps running (see the lines above), and the banner follows if it comes up",
				s.cfg.readyTimeout, missing)
		case !late && now.After(nextProgress):
			s.logf("waiting for the gateway (%v): %s", now.Sub(start).Round(time.Second), missing)
			nextProgress = now.Add(5 * time.Second)
		}
		wait := 500 * time.Millisecond
		if late {
			wait = 2 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// adminAddr is where to reach the admin API from this machine.
func (s *stack) adminAddr() string {
	host, port, _ := net.SplitHostPort(s.cfg.admin)
	return net.JoinHostPort(localHost(host, "127.0.0.1"), port)
}

// localHost turns a listen host into one to connect to.
func localHost(host, wildcard string) string {
	switch host {
	case "", "0.0.0.0", "::":
		return wildcard
	}
	return host
}

func (s *stack) banner() {
	gwHost, gwPort, _ := net.SplitHostPort(s.cfg.gatewayListen)
	gw := net.JoinHostPort(localHost(gwHost, "localhost"), gwPort)
	gwURL := "http://" + gw + "/"
	jaeger := fmt.Sprintf("http://127.0.0.1:%d/api/traces?service=hopgate", s.cfg.jaegerPort)
	if s.jaeger == nil || s.noJaeger != "" {
		jaeger = "not running: " + s.noJaeger
	} else if !s.jaeger.running() {
		jaeger = "not running: jaeger exited (" + s.jaeger.status() + ")"
	}
	title := "hopgate is up:"
	if s.color {
		title = ansiGreen + title + ansiReset
	}
	var b strings.Builder
	fmt.Fprintln(&b, title)
	fmt.Fprintf(&b, "  %-15s%-*s(try: curl %s/)\n", "gateway", max(30, len(gwURL)+2), gwURL, gw)
	fmt.Fprintf(&b, "  %-15shttp://%s/\n", "dashboard", s.adminAddr())
	fmt.Fprintf(&b, "  %-15shttp://%s/routes\n", "admin", s.adminAddr())
	fmt.Fprintf(&b, "  %-15shttp://%s/metrics\n", "metrics", s.adminAddr())
	fmt.Fprintf(&b, "  %-15shttp://127.0.0.1:%d/ui/\n", "consul ui", s.cfg.consulPort)
	fmt.Fprintf(&b, "  %-15s%s\n", "jaeger query", jaeger)
	fmt.Fprintln(&b, "Ctrl-C stops everything.")
	_, _ = s.out.Write([]byte(b.String()))
}

// probe asks the gateway's admin API whether the stack is up.
type probe struct {
	addr   string
	client *http.Client
}

func newProbe(addr string) probe {
	return probe{addr: addr, client: &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}}
}

func (pr probe) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pr.addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := pr.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// missing says what keeps the stack from being up, or "" when it is up.
func (pr probe) missing(ctx context.Context, hellos int) string {
	code, body, err := pr.get(ctx, "/readyz")
	if err != nil {
		return fmt.Sprintf("the gateway's admin API at %s does not answer yet", pr.addr)
	}
	if code != http.StatusOK {
		line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		return fmt.Sprintf("the gateway is not ready (/readyz: %d %s)", code, line)
	}
	code, body, err = pr.get(ctx, "/routes")
	if err != nil {
		return fmt.Sprintf("the gateway's /routes does not answer: %v", err)
	}
	if code != http.StatusOK {
		return fmt.Sprintf("the gateway's /routes answers %d", code)
	}
	return routesMissing(body, hellos)
}

// routesMissing reads the gateway's /routes document and says what is
// missing for route "/" to have want instances, or "" when nothing is.
func routesMissing(body []byte, want int) string {
	if want == 0 {
		return ""
	}
	var doc struct {
		Routes []struct {
			Route      string            `json:"route"`
			Host       string            `json:"host"`
			PathPrefix string            `json:"path_prefix"`
			Instances  []json.RawMessage `json:"instances"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Sprintf("the gateway's /routes is not the JSON expected: %v", err)
	}
	for _, r := range doc.Routes {
		if r.Host == "" && (r.Route == "/" || r.PathPrefix == "/") {
			if n := len(r.Instances); n < want {
				return fmt.Sprintf("route / has %d of %d hello instances", n, want)
			}
			return ""
		}
	}
	return fmt.Sprintf("route / is not in the routing table yet (0 of %d hello instances)", want)
}

// findBinary finds a component's binary: $envVar when set (a path, or a
// name looked up on PATH), else dir/name, else (usePath) name on PATH.
func findBinary(name, envVar, dir string, usePath bool, getenv func(string) string) (string, error) {
	if envVar != "" {
		if v := getenv(envVar); v != "" {
			if !strings.ContainsRune(v, filepath.Separator) {
				p, err := exec.LookPath(v)
				if err != nil {
					return "", fmt.Errorf("%s=%s: not found on PATH", envVar, v)
				}
				return p, nil
			}
			if err := executable(v); err != nil {
				return "", fmt.Errorf("%s=%s: %v", envVar, v, err)
			}
			return v, nil
		}
	}
	p := filepath.Join(dir, name)
	if executable(p) == nil {
		return p, nil
	}
	if usePath {
		if lp, err := exec.LookPath(name); err == nil {
			return lp, nil
		}
		return "", fmt.Errorf("no %s binary at %s nor on PATH: build it first (make run does) or set %s", name, p, envVar)
	}
	return "", fmt.Errorf("no %s binary at %s: build it first (make run does) or pass -bin", name, p)
}

func executable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return errors.New("no such file")
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return errors.New("not a regular file")
	case fi.Mode()&0o111 == 0:
		return errors.New("not executable")
	}
	return nil
}

func envLookup(environ []string) func(string) string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

// childEnv is environ without the variables that could point a child at
// another Consul, another trace collector or other Jaeger ports than this
// stack's, plus set. The rest (OTEL_TRACES_SAMPLER, HOPGATE_LOG_LEVEL, ...)
// passes through.
func childEnv(environ []string, set map[string]string) []string {
	env := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok || strings.HasPrefix(k, "CONSUL_") || strings.HasPrefix(k, "JAEGER_") ||
			strings.HasPrefix(k, "OTEL_EXPORTER_OTLP_") || k == "OTEL_TRACES_EXPORTER" || k == "OTEL_SERVICE_NAME" {
			continue
		}
		env = append(env, kv)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+set[k])
	}
	return env
}
