// Package join is `hopgate join`: it runs an unmodified server process
// (any language, no Consul code in it), registers it with the local Consul
// agent through a backend.Registrar once its port answers, keeps it
// registered while it runs, and stops it without failing requests:
//
//	hopgate join -service tornado -port 8000 -route / -- python3 app.py
//
// The lifecycle:
//
//  1. Flags, the Consul environment and the registration are checked, and
//     the command is looked up, before anything starts (exit 2 on a mistake).
//  2. The command starts in its own process group with the wrapper's stdin,
//     stdout and stderr. The wrapper's own logs go to stderr, named
//     "hopgate.join". Its own process group keeps a terminal's Ctrl-C (sent
//     to the whole foreground group) from reaching the child before the
//     drain; the price is that a child reading stdin from a terminal is
//     stopped (SIGTTIN), which servers do not do.
//  3. Once the port accepts TCP connections (or, with -check-path, answers
//     that path with a 2xx), the instance is registered, with a TCP check
//     (or an HTTP check on -check-path) and the Registrar's re-registration
//     when the agent loses it. If the port does not open within
//     -start-timeout, the child is killed and the exit status is 2; if the
//     child exits before, its status is passed on.
//  4. On SIGTERM or SIGINT: deregister, keep the child serving for -drain
//     while gateways converge, then pass the signal on to the child's
//     process group and wait, escalating to SIGKILL after -kill-timeout. A
//     child that then ends because of that signal (or exits 0, or with 128
//     plus it) stopped cleanly: exit status 0. A further signal ends the
//     drain early and is passed on at once.
//  5. If the child exits on its own, the instance is deregistered at once and
//     the wrapper exits with the child's status (128+N if signal N killed it).
package join

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/backend"
	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/telemetry"
)

// name prefixes the one-line errors; LoggerName names the log lines.
const (
	name       = "hopgate join"
	LoggerName = "hopgate.join"
)

// Defaults of the flags.
const (
	DefaultDrain        = 3 * time.Second
	DefaultKillTimeout  = 10 * time.Second
	DefaultStartTimeout = 30 * time.Second
)

// config is the parsed command line.
type config struct {
	*backend.InstanceFlags
	port         int
	checkPath    string
	drain        time.Duration
	killTimeout  time.Duration
	startTimeout time.Duration
	log          *telemetry.LogFlags
	command      []string
}

// Main runs `hopgate join` with args (the words after "join") and returns
// the exit code. signals must already receive SIGTERM and SIGINT
// (signal.Notify) before Main is called, so that a signal arriving while the
// child starts is not lost (or, worse, kills the wrapper alone). The child
// gets stdin, stdout and stderr; when they are *os.File (os.Stdin...) the
// child uses them directly.
func Main(args []string, signals <-chan os.Signal, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, fs, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(fs, stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	consul, err := discovery.ConsulConfig()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	return run(cfg, consul, signals, stdin, stdout, stderr)
}

func parseFlags(args []string) (*config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := &config{drain: DefaultDrain, killTimeout: DefaultKillTimeout, startTimeout: DefaultStartTimeout}
	lf, err := telemetry.RegisterLogFlags(fs)
	if err != nil {
		return nil, fs, err
	}
	cfg.log = lf
	cfg.InstanceFlags = backend.RegisterInstanceFlags(fs, "")
	fs.Func("port", "the `port` the command listens on (required); registered, and probed before registering", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return errors.New("want a port number from 1 to 65535")
		}
		cfg.port = n
		return nil
	})
	fs.StringVar(&cfg.checkPath, "check-path", "", "HTTP `path` that answers 2xx when healthy: the readiness probe and the Consul check become HTTP GETs of it (default: none, the port accepting TCP connections is enough)")
	duration := func(dst *time.Duration, positive bool) func(string) error {
		return func(s string) error {
			d, err := time.ParseDuration(s)
			if err != nil {
				return errors.New("want a duration such as 3s or 500ms")
			}
			if d < 0 || positive && d == 0 {
				if positive {
					return errors.New("must be positive")
				}
				return errors.New("must not be negative")
			}
			*dst = d
			return nil
		}
	}
	fs.Func("drain", "`duration` the command keeps serving after deregistration on SIGTERM/SIGINT, before it gets the signal (default 3s)", duration(&cfg.drain, false))
	fs.Func("kill-timeout", "`duration` the command may take to exit after the signal before it is killed with SIGKILL (default 10s)", duration(&cfg.killTimeout, true))
	fs.Func("start-timeout", "`duration` the port may take to open after the start; then the command is killed and the exit status is 2 (default 30s)", duration(&cfg.startTimeout, true))

	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	cfg.command = fs.Args()
	if len(cfg.command) == 0 || cfg.command[0] == "" {
		return nil, fs, errors.New("no command to run: want hopgate join [flags] -- command [args...]")
	}
	if err := cfg.Check(); err != nil {
		return nil, fs, err
	}
	if cfg.port == 0 {
		return nil, fs, errors.New("-port is required: the port the command listens on")
	}
	if cfg.checkPath != "" && (!strings.HasPrefix(cfg.checkPath, "/") || strings.ContainsFunc(cfg.checkPath, func(r rune) bool { return r <= ' ' || r == 0x7f })) {
		return nil, fs, fmt.Errorf("invalid value %q for flag -check-path: want an absolute path without spaces, e.g. /healthz", cfg.checkPath)
	}
	return cfg, fs, nil
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, `Usage: %s -service NAME -port PORT [flags] -- command [args...]

Runs command (an unmodified server listening on PORT), registers it with the
Consul agent named by the standard CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN...
variables once PORT accepts connections, and keeps it registered while it
runs. On SIGTERM or SIGINT it deregisters, lets the command serve for -drain,
then passes the signal on. The command's stdin, stdout, stderr and exit
status pass through; a stop requested by SIGTERM/SIGINT exits 0.

Flags:
`, name)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// joiner is one run of the wrapper.
type joiner struct {
	cfg     *config
	log     hclog.Logger
	stderr  io.Writer
	signals <-chan os.Signal
	child   *child
}

// run is everything after the flags; it returns the exit code.
func run(cfg *config, consul *api.Config, signals <-chan os.Signal, stdin io.Reader, stdout, stderr io.Writer) int {
	j := &joiner{cfg: cfg, stderr: stderr, signals: signals,
		log: telemetry.NewLogger(LoggerName, cfg.log, stderr)}

	reg, err := backend.NewRegistrar(consul, backend.Registration{
		Service:   cfg.Service,
		ID:        cfg.ID,
		Address:   cfg.Advertise,
		Port:      cfg.port,
		Routes:    cfg.Routes,
		CheckPath: cfg.checkPath,
		CheckTCP:  cfg.checkPath == "",
	}, j.log)
	if err != nil {
		return j.fail(2, err.Error())
	}
	target := net.JoinHostPort(probeHost(cfg.Advertise, consul), strconv.Itoa(cfg.port))

	cmd := exec.Command(cfg.command[0], cfg.command[1:]...)
	if err := cmd.Err; err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			err = ee.Err
		}
		return j.fail(2, fmt.Sprintf("command %q: %v", cfg.command[0], err))
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.SysProcAttr = sysProcAttr()
	// Only matters when stdout/stderr are not files (tests): do not wait
	// forever for a grandchild that keeps the pipe open.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // not "fork/exec <path>: ..."
		}
		return j.fail(2, fmt.Sprintf("command %q: %v", cfg.command[0], err))
	}
	j.child = newChild(cmd)
	j.log.Info("started", "command", strings.Join(cfg.command, " "), "pid", cmd.Process.Pid,
		"service", cfg.Service, "id", reg.ID(), "port", cfg.port)

	// 1. Wait for the port.
	p := &prober{target: target, path: cfg.checkPath}
	readyCtx, stopProbe := context.WithCancel(context.Background())
	defer stopProbe()
	ready := make(chan struct{})
	go func() {
		if p.wait(readyCtx) {
			close(ready)
		}
	}()
	startTimer := time.NewTimer(cfg.startTimeout)
	select {
	case <-ready:
		startTimer.Stop()
	case <-j.child.done:
		stopProbe()
		code := j.child.exitCode()
		if code == 0 {
			code = 2
		}
		return j.fail(code, fmt.Sprintf("%s %s before %s", cfg.command[0], j.child.describe(), p.what()))
	case <-startTimer.C:
		stopProbe()
		j.child.signal(syscall.SIGKILL)
		<-j.child.done
		return j.fail(2, fmt.Sprintf("%s not within -start-timeout %v (last probe: %v); killed %s",
			p.what(), cfg.startTimeout, p.lastError(), cfg.command[0]))
	case sig := <-signals:
		startTimer.Stop()
		stopProbe()
		j.log.Info("signal before the port opened: passing it on, nothing to deregister", "signal", sig)
		return j.stopChild(sig)
	}

	// 2. Registered while the child runs.
	j.log.Info("port open; registering", "probe", p.describe())
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	runDone := make(chan error, 1)
	go func() { runDone <- reg.Run(runCtx) }()
	leave := func() {
		// Run must have returned first: it would otherwise take the
		// vanished registration for an agent restart.
		stopRun()
		<-runDone
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := reg.Deregister(ctx); err != nil {
			j.log.Error("deregistration failed; the agent will reap the instance once its check fails", "error", err)
		}
	}

	var sig os.Signal
	select {
	case <-j.child.done:
		leave()
		return j.childExited("exited on its own; deregistered")
	case sig = <-signals:
		j.log.Info("stopping: deregistering first", "signal", sig)
		leave()
	}

	// 3. Drain, then pass the signal on.
	if cfg.drain > 0 && reg.Registered() {
		j.log.Info("draining before passing the signal on", "drain", cfg.drain)
		t := time.NewTimer(cfg.drain)
		select {
		case <-t.C:
		case <-j.child.done:
			t.Stop()
			return j.childExited("exited on its own during the drain")
		case sig = <-signals:
			t.Stop()
			j.log.Info("another signal: ending the drain early", "signal", sig)
		}
	}
	return j.stopChild(sig)
}

// stopChild passes sig on to the child's process group and waits for it to
// exit, escalating to SIGKILL after the kill timeout. Further signals are
// passed on too.
func (j *joiner) stopChild(sig os.Signal) int {
	j.log.Info("passing the signal on", "signal", sig, "pid", j.child.pid())
	j.child.signal(sig)
	t := time.NewTimer(j.cfg.killTimeout)
	defer t.Stop()
	for {
		select {
		case <-j.child.done:
			code := j.child.exitCode()
			if requestedStop(j.child.state()) {
				j.log.Info("stopped", "command", j.cfg.command[0], "status", j.child.describe())
				return 0
			}
			j.log.Warn("stopped with a failure", "command", j.cfg.command[0], "status", j.child.describe(), "exit_code", code)
			return code
		case s := <-j.signals:
			j.log.Info("passing another signal on", "signal", s)
			j.child.signal(s)
		case <-t.C:
			j.log.Error("did not exit within -kill-timeout; sending SIGKILL", "kill_timeout", j.cfg.killTimeout)
			j.child.signal(syscall.SIGKILL)
			<-j.child.done
			return j.child.exitCode()
		}
	}
}

// childExited logs the child's end and returns its exit code.
func (j *joiner) childExited(msg string) int {
	code := j.child.exitCode()
	args := []any{"command", j.cfg.command[0], "status", j.child.describe(), "exit_code", code}
	if code == 0 {
		j.log.Info(msg, args...)
	} else {
		j.log.Error(msg, args...)
	}
	return code
}

// fail prints the one-line error and returns code.
func (j *joiner) fail(code int, msg string) int {
	fmt.Fprintf(j.stderr, "%s: %s\n", name, msg)
	return code
}

// probeHost is the host the readiness probe dials: where the agent's check
// will connect, i.e. the advertised address, else the one detected toward
// the agent (as the Registrar does), else loopback.
func probeHost(advertise string, consul *api.Config) string {
	if advertise != "" {
		return advertise
	}
	addr := consul.Address
	if strings.HasPrefix(addr, "unix://") {
		return "127.0.0.1"
	}
	addr = strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://")
	if a, err := backend.DetectAddress(addr); err == nil {
		return a
	}
	return "127.0.0.1"
}

// prober tells when the child is ready: target accepts TCP connections, or,
// with a path, answers GET path with a 2xx.
type prober struct {
	target string // host:port
	path   string

	mu   sync.Mutex
	last error
}

const probeInterval = 100 * time.Millisecond

func (p *prober) what() string {
	if p.path != "" {
		return "http://" + p.target + p.path + " answered 2xx"
	}
	return p.target + " accepted connections"
}

func (p *prober) describe() string {
	if p.path != "" {
		return "GET http://" + p.target + p.path
	}
	return "TCP " + p.target
}

func (p *prober) lastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		return errors.New("none yet")
	}
	return p.last
}

// wait probes until the child is ready (true) or ctx is done (false).
func (p *prober) wait(ctx context.Context) bool {
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	for {
		err := p.once(ctx, client)
		if err == nil {
			return true
		}
		p.mu.Lock()
		p.last = err
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-time.After(probeInterval):
		}
	}
}

func (p *prober) once(ctx context.Context, client *http.Client) error {
	if p.path == "" {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", p.target)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+p.target+p.path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", p.path, resp.Status)
	}
	return nil
}

// child is the started command.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait returned
}

func newChild(cmd *exec.Cmd) *child {
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// state is the exit state; only after done.
func (c *child) state() *os.ProcessState { return c.cmd.ProcessState }

// signal sends sig to the child's process group (the child and what it
// started), unless the child has been reaped.
func (c *child) signal(sig os.Signal) {
	select {
	case <-c.done:
		return
	default:
	}
	signalGroup(c.cmd.Process, sig)
}

// exitCode is the child's exit status, 128+N when signal N ended it; only
// after done.
func (c *child) exitCode() int { return exitCode(c.cmd.ProcessState) }

// describe says how the child ended; only after done.
func (c *child) describe() string {
	if sig, ok := exitSignal(c.cmd.ProcessState); ok {
		return fmt.Sprintf("died from signal %d, %s (exit status %d)", int(sig), sig, c.exitCode())
	}
	return fmt.Sprintf("exited with status %d", c.exitCode())
}
