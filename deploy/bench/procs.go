package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process the benchmark started, in a process group of its own
// so stopping it stops its children too (nginx's workers).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string // combined stdout and stderr
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// tail is the last lines of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM to the process's group and reports whether it
// exited within grace; it is killed if not.
func (p *proc) stop(grace time.Duration) bool {
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		return false
	}
}

// procs is every process started, for cleanup.
type procs struct {
	dir  string
	mu   sync.Mutex
	list []*proc
}

func (ps *procs) start(name string, env []string, path string, args ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); close(p.done) }()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// stopAll sends SIGTERM to every process group started, then SIGKILL to
// what is still there after a grace period.
func (ps *procs) stopAll(grace time.Duration) {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for _, p := range list {
		_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	}
	deadline := time.After(grace)
	for _, p := range list {
		select {
		case <-p.done:
		case <-deadline:
		}
	}
	for _, p := range list {
		// The group, not only the leader: a worker may outlive its master.
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
}

// freePort returns a loopback port free for TCP and UDP at the time of the
// call (Consul's serf ports use both).
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("no free port found")
}

func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for len(out) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

var probe = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// fetch GETs url and returns its body (its first MiB), or an error that
// says what came instead of a 200.
func fetch(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := probe.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %q", resp.Status, firstLine(string(b)))
	}
	return string(b), err
}

// waitFor polls url until ok accepts the answer body (status 200), the
// process exits, or the timeout passes.
func waitFor(ctx context.Context, p *proc, url string, timeout time.Duration, ok func(body string) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "no answer"
	for {
		if p != nil && !p.alive() {
			return fmt.Errorf("%s exited while starting:\n%s", p.name, p.tail())
		}
		b, err := fetch(ctx, url)
		if err == nil && ok(b) {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("200 OK: %q", firstLine(b))
		}
		select {
		case <-ctx.Done():
			name := url
			if p != nil {
				name = p.name + " at " + url
			}
			return fmt.Errorf("%s not ready after %v (last: %s)", name, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// cleanEnv is the environment without the variables that would change what a
// child does: OTEL_* (tracing is on only where asked) and CONSUL_*.
func cleanEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OTEL_") || strings.HasPrefix(kv, "CONSUL_") ||
			strings.HasPrefix(kv, "GOMAXPROCS=") || strings.HasPrefix(kv, "HOPGATE_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, extra...)
}
