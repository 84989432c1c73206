package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/discovery/consultest"
	"github.com/hopgate/hopgate/telemetry"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// helloBinary builds the command once per test run (without -race: it is
// the program under test, not the test).
func helloBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "hello-test"); buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "hello"), ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "hello")
}

// cleanEnv is the test's environment without the variables hello reads.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONSUL_") && !strings.HasPrefix(kv, "HOPGATE_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// proc is a running hello.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *consultest.Buffer
	exited         chan struct{}
}

func startHello(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{
		cmd:    exec.Command(helloBinary(t), args...),
		stdout: &consultest.Buffer{},
		stderr: &consultest.Buffer{},
		exited: make(chan struct{}),
	}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("hello stderr:\n%s", p.stderr)
		}
	})
	return p
}

// wait waits for the exit and returns the exit code.
func (p *proc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("hello still running after %v", within)
		return -1
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	p := startHello(t, cleanEnv(), "-h")
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if out := p.stdout.String(); !strings.HasPrefix(out, "Usage: hello") || !strings.Contains(out, "-listen") {
		t.Errorf("stdout:\n%s", out)
	}
	if e := p.stderr.String(); e != "" {
		t.Errorf("stderr: %q", e)
	}
}

func TestBadFlagsAndConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"-listen", "nonsense"}, nil, `hello: invalid value "nonsense" for flag -listen: want host:port`},
		{[]string{"-listen", ":99999"}, nil, `invalid value ":99999" for flag -listen: port "99999"`},
		{[]string{"-listen"}, nil, `hello: flag needs an argument: -listen`},
		{[]string{"-route", "example.com"}, nil, `invalid value "example.com" for flag -route: route "example.com" has no path`},
		{[]string{"-route", "/ok", "-route", "/a/../b"}, nil, `invalid value "/a/../b" for flag -route`},
		{[]string{"-drain", "soon"}, nil, `invalid value "soon" for flag -drain: want a duration`},
		{[]string{"-drain", "-1s"}, nil, `invalid value "-1s" for flag -drain: must not be negative`},
		{[]string{"-service", ""}, nil, `-service is required`},
		{[]string{"-id", "a b"}, nil, `invalid value "a b" for flag -id`},
		{[]string{"-advertise", "10.0.0.1:80"}, nil, `invalid value "10.0.0.1:80" for flag -advertise`},
		{[]string{"-log-format", "xml"}, nil, `invalid value "xml" for flag -log-format: want text or json`},
		{[]string{"-log-level", "loud"}, nil, `invalid value "loud" for flag -log-level`},
		{[]string{"-bogus"}, nil, `hello: flag provided but not defined: -bogus`},
		{[]string{"stray"}, nil, `hello: unexpected argument "stray"`},
		{nil, []string{"CONSUL_HTTP_ADDR=ftp://consul:8500"}, `hello: CONSUL_HTTP_ADDR="ftp://consul:8500": unknown scheme`},
		{nil, []string{"CONSUL_HTTP_ADDR=127.0.0.1:port"}, `hello: CONSUL_HTTP_ADDR="127.0.0.1:port"`},
		{nil, []string{"CONSUL_HTTP_SSL_VERIFY=perhaps"}, `hello: CONSUL_HTTP_SSL_VERIFY="perhaps": want true or false`},
		{nil, []string{"CONSUL_CACERT=/nonexistent/ca.pem"}, `hello: CONSUL_CACERT: stat /nonexistent/ca.pem`},
		{nil, []string{"HOPGATE_LOG_LEVEL=loud"}, `hello: HOPGATE_LOG_LEVEL="loud"`},
		{[]string{"-fail-status", "99"}, nil, `invalid value "99" for flag -fail-status`},
		{[]string{"-latency", "-1s"}, nil, `invalid value "-1s" for flag -latency`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append(tt.env, tt.args...), " "), func(t *testing.T) {
			// Point at a port where no agent runs: a bad value must fail
			// before anything is contacted.
			env := cleanEnv(append([]string{"CONSUL_HTTP_ADDR=127.0.0.1:1"}, tt.env...)...)
			p := startHello(t, env, tt.args...)
			if code := p.wait(t, 10*time.Second); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			stderr := p.stderr.String()
			if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
				t.Errorf("stderr is not one line: %q", stderr)
			}
			if !strings.HasPrefix(stderr, "hello: ") || !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.want)
			}
			if out := p.stdout.String(); out != "" {
				t.Errorf("stdout: %q", out)
			}
		})
	}
}

func TestListenFailureExits1(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := startHello(t, cleanEnv("CONSUL_HTTP_ADDR=127.0.0.1:1"), "-listen", ln.Addr().String())
	if code := p.wait(t, 10*time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(p.stderr.String(), "address already in use") {
		t.Errorf("stderr: %s", p.stderr)
	}
}

// The whole life of a hello against a real agent: it registers its real
// port, answers with the registered ID, and on SIGTERM leaves the catalog
// while it still answers every request, then exits 0.
func TestRegistersAnswersAndDrains(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	c := a.Client()
	p := startHello(t, cleanEnv(a.Env()...),
		"-drain", "1s", "-version", "1.2.3", "-log-format", "json",
		"-route", "/", "-route", "api.example.com/v1 strip=/v1")

	// Registered, healthy.
	var inst *api.ServiceEntry
	consultest.Eventually(t, 15*time.Second, "hello passing in Consul", func() error {
		entries, _, err := c.Health().Service("hello", "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != 1 {
			return fmt.Errorf("%d passing instances", len(entries))
		}
		inst = entries[0]
		return nil
	})
	svc := inst.Service
	id := svc.ID
	if svc.Address != "127.0.0.1" || svc.Port == 0 {
		t.Errorf("registered %s:%d, want 127.0.0.1 (detected) and the real port", svc.Address, svc.Port)
	}
	if want := []string{"gateway.route=/", "gateway.route=api.example.com/v1 strip=/v1"}; !slices.Equal(svc.Tags, want) {
		t.Errorf("tags = %q, want %q", svc.Tags, want)
	}
	if svc.Meta["version"] != "1.2.3" || svc.Meta["host"] == "" {
		t.Errorf("meta = %v", svc.Meta)
	}
	base := "http://" + net.JoinHostPort(svc.Address, strconv.Itoa(svc.Port))

	// The startup log line, in JSON, names the same instance.
	var startup struct {
		Message string `json:"@message"`
		ID      string `json:"id"`
		Listen  string `json:"listen"`
	}
	line, _, _ := strings.Cut(p.stderr.String(), "\n")
	if err := json.Unmarshal([]byte(line), &startup); err != nil || startup.Message != "listening" || startup.ID != id ||
		!strings.HasSuffix(startup.Listen, ":"+strconv.Itoa(svc.Port)) {
		t.Errorf("first log line %q (%v): want a JSON \"listening\" line with id %s", line, err, id)
	}

	// Plain text: the instance ID is the last word.
	body, resp := get(t, base+"/", nil)
	if words := strings.Fields(body); len(words) == 0 || words[len(words)-1] != id || !strings.HasPrefix(body, "Hello from ") {
		t.Errorf("GET / = %q, want \"Hello from %s\"", body, id)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}

	// JSON, continuing the caller's trace.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	body, resp = get(t, base+"/some/path", http.Header{
		"Accept":      {"text/html, application/json;q=0.9"},
		"Traceparent": {"00-" + traceID + "-00f067aa0ba902b7-01"},
	})
	var got info
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("JSON answer %q: %v", body, err)
	}
	if want := (info{Instance: id, Service: "hello", Version: "1.2.3", TraceID: traceID}); got != want {
		t.Errorf("JSON = %+v, want %+v", got, want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	body, _ = get(t, base+"/", http.Header{"Accept": {"application/json"}})
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.TraceID != "" || got.Instance != id {
		t.Errorf("JSON without traceparent = %q (%v), want an empty trace_id", body, err)
	}
	if body, _ = get(t, base+"/healthz", nil); strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %q", body)
	}

	// SIGTERM while clients hammer it.
	type result struct {
		start time.Time
		err   error
	}
	var (
		mu      sync.Mutex
		results []result
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second}
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				err := func() error {
					resp, err := client.Get(base + "/")
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					b, err := io.ReadAll(resp.Body)
					if err != nil {
						return err
					}
					if resp.StatusCode != 200 || !strings.HasSuffix(strings.TrimSpace(string(b)), id) {
						return fmt.Errorf("%d %q", resp.StatusCode, b)
					}
					return nil
				}()
				mu.Lock()
				results = append(results, result{start, err})
				mu.Unlock()
			}
		})
	}
	var stopOnce sync.Once
	stopHammer := func() { stopOnce.Do(func() { close(stop); wg.Wait() }) }
	defer stopHammer()
	consultest.Eventually(t, 5*time.Second, "requests flowing", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(results) < 20 {
			return fmt.Errorf("%d requests", len(results))
		}
		return nil
	})

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var deregistered time.Time
	consultest.Eventually(t, 5*time.Second, "hello gone from the catalog", func() error {
		entries, _, err := c.Catalog().Service("hello", "", nil)
		if err != nil {
			return err
		}
		if len(entries) != 0 {
			return errors.New("still in the catalog")
		}
		deregistered = time.Now()
		return nil
	})
	select {
	case <-p.exited:
		t.Fatal("hello exited before it was seen deregistered")
	default:
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	stopHammer()

	var before, during int
	for _, r := range results {
		if !r.start.After(deregistered) {
			before++
			if r.err != nil {
				t.Errorf("request started %v before the deregistration was seen failed: %v",
					deregistered.Sub(r.start).Round(time.Millisecond), r.err)
			}
		} else if r.err == nil {
			during++
		}
	}
	t.Logf("%d requests until the deregistration was seen, all answered; %d more answered while draining", before, during)
	if during == 0 {
		t.Error("no request answered after the deregistration: no drain")
	}
	logs := p.stderr.String()
	if i, j := strings.Index(logs, "deregistered from the Consul agent"), strings.Index(logs, "stopped cleanly"); i < 0 || j < i {
		t.Errorf("want the deregistration logged, then the clean stop:\n%s", logs)
	}
}

func get(t *testing.T, url string, h http.Header) (string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %q", url, resp.Status, b)
	}
	return string(b), resp
}

func TestWantsJSON(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                                   false,
		"*/*":                                false,
		"text/plain":                         false,
		"application/json":                   true,
		"application/json; charset=utf-8":    true,
		"text/html, application/json;q=0.5":  true,
		"text/html, application/json;q=0":    false,
		"application/jsonx, application/xml": false,
	} {
		if got := wantsJSON([]string{accept}); got != want {
			t.Errorf("wantsJSON(%q) = %v, want %v", accept, got, want)
		}
	}
}

func TestHandler(t *testing.T) {
	if _, err := telemetry.Setup(t.Context(), telemetry.Options{ServiceName: "hello"}); err != nil {
		t.Fatal(err)
	}
	h := newHandler(info{Instance: "hello-x-1-abcdef", Service: "hello", Version: "v"}, faults{},
		hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: t.Output()}))
	// Faults leave /healthz alone: Consul keeps seeing a healthy instance.
	faulty := newHandler(info{Instance: "x"}, faults{status: 500, latency: time.Millisecond}, hclog.NewNullLogger())
	for path, want := range map[string]int{"/": 500, "/healthz": 200} {
		rec := httptest.NewRecorder()
		faulty.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("faulty %s = %d, want %d", path, rec.Code, want)
		}
	}
	for _, tt := range []struct{ method, path, want string }{
		{"GET", "/", "Hello from hello-x-1-abcdef\n"},
		{"GET", "/deep/path", "Hello from hello-x-1-abcdef\n"},
		{"GET", "/healthz", "ok\n"},
		{"HEAD", "/", ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if tt.method == "HEAD" {
			rec.Body.Reset() // the server, not the handler, drops a HEAD body
		}
		if rec.Code != 200 || rec.Body.String() != tt.want {
			t.Errorf("%s %s = %d %q, want 200 %q", tt.method, tt.path, rec.Code, rec.Body, tt.want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", rec.Code)
	}
}
