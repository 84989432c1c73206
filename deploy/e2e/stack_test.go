package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// binDir holds the hopgate and hello binaries built once for all tests.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "hopgate-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		root, err := consultest.ModuleRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for name, pkg := range map[string]string{"hopgate": "./gateway/cmd/hopgate", "hello": "./backend/cmd/hello"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
				return 1
			}
		}
		binDir = dir
		return m.Run()
	}())
}

// proc is one child process whose output is kept for the test log.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *consultest.Buffer
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, out: &consultest.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(within time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		p.t.Fatalf("%s still running after %v", p.name, within)
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stack is a Consul agent, optionally Jaeger, one gateway and any number of
// hellos, all real processes on free loopback ports.
type stack struct {
	t       *testing.T
	consul  *consultest.Agent
	jaeger  *jaeger
	gateway *proc
	public  string // host:port
	admin   string // host:port
	hellos  map[string]*proc
	n       int
	client  *http.Client
	// adminToken is sent to the admin API when the gateway requires one.
	adminToken string
}

func newStack(t *testing.T, withJaeger bool) *stack {
	t.Helper()
	s := &stack{t: t, consul: consultest.Start(t), hellos: map[string]*proc{},
		client: &http.Client{Timeout: 10 * time.Second}}
	if withJaeger {
		s.jaeger = startJaeger(t)
	}
	return s
}

func (s *stack) env(service string) []string {
	env := append(s.consul.Env(), "OTEL_SERVICE_NAME="+service, "HOPGATE_LOG_LEVEL=debug")
	if s.jaeger != nil {
		env = append(env,
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+s.jaeger.otlpHTTP,
			"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
			"OTEL_BSP_SCHEDULE_DELAY=100")
	}
	return env
}

func (s *stack) startGateway(extra ...string) {
	s.t.Helper()
	ports := consultest.FreePorts(s.t, 2)
	s.public = "127.0.0.1:" + strconv.Itoa(ports[0])
	s.admin = "127.0.0.1:" + strconv.Itoa(ports[1])
	s.gateway = startProc(s.t, "gateway", filepath.Join(binDir, "hopgate"), s.env("hopgate"),
		append([]string{"-listen", s.public, "-admin", s.admin}, extra...)...)
	// The ports were free when chosen, not reserved: until the gateway
	// holds them, a process started next (a hello on port 0) may take one.
	consultest.Eventually(s.t, 30*time.Second, "gateway listening on "+s.public+" and "+s.admin, func() error {
		if s.gateway.exited() {
			s.t.Fatal("the gateway exited at start")
		}
		for _, addr := range []string{s.public, s.admin} {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
}

// startHello starts one more hello and returns its instance id.
func (s *stack) startHello(extra ...string) string {
	s.t.Helper()
	s.n++
	id := fmt.Sprintf("hello-e2e-%d", s.n)
	args := append([]string{"-listen", "127.0.0.1:0", "-id", id, "-drain", "2s"}, extra...)
	s.hellos[id] = startProc(s.t, id, filepath.Join(binDir, "hello"), s.env("hello"), args...)
	return id
}

// routes reads the gateway's /routes document.
func (s *stack) routes() (routesDoc, error) {
	var doc routesDoc
	req, err := http.NewRequest("GET", "http://"+s.admin+"/routes", nil)
	if err != nil {
		return doc, err
	}
	if s.adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.adminToken)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return doc, err
	}
	defer resp.Body.Close()
	return doc, json.NewDecoder(resp.Body).Decode(&doc)
}

type routesDoc struct {
	Ready     bool `json:"ready"`
	Discovery struct {
		Stale     bool   `json:"stale"`
		LastError string `json:"last_error"`
	} `json:"discovery"`
	Routes []struct {
		Route     string `json:"route"`
		Service   string `json:"service"`
		Inflight  int64  `json:"inflight"`
		Instances []struct {
			ID string `json:"id"`
		} `json:"instances"`
	} `json:"routes"`
}

// instancesOn returns the sorted instance ids the gateway routes "/" to.
func (d routesDoc) instancesOn(route string) []string {
	var ids []string
	for _, r := range d.Routes {
		if r.Route == route {
			for _, in := range r.Instances {
				ids = append(ids, in.ID)
			}
		}
	}
	return ids
}

// waitInstances polls /routes until route "/" has exactly the given ids.
func (s *stack) waitInstances(within time.Duration, ids ...string) {
	s.t.Helper()
	want := fmt.Sprint(sorted(ids))
	consultest.Eventually(s.t, within, "gateway routes / to "+want, func() error {
		doc, err := s.routes()
		if err != nil {
			return err
		}
		if got := fmt.Sprint(sorted(doc.instancesOn("/"))); got != want {
			return fmt.Errorf("routes / to %s", got)
		}
		return nil
	})
}

// get sends one request through the gateway and returns the status and body.
func (s *stack) get(path string, header ...string) (int, string, error) {
	req, err := http.NewRequest("GET", "http://"+s.public+path, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// load sends GET / through the gateway from several workers until stop is
// called, counting answers per instance and every failure.
type load struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ok, fail atomic.Int64
	mu       sync.Mutex
	byID     map[string]int
	failures []string
}

func (s *stack) startLoad(workers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, byID: map[string]int{}}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ctx.Err() == nil && n < 200000; n++ {
				code, body, err := s.get("/")
				if err != nil || code != 200 {
					l.fail.Add(1)
					l.mu.Lock()
					if len(l.failures) < 10 {
						l.failures = append(l.failures, fmt.Sprintf("%d %q %v", code, body, err))
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
				l.mu.Lock()
				l.byID[lastWord(body)]++
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond) // pace: steady load, not a benchmark
			}
		}()
	}
	return l
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) count(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byID[id]
}

// waitAnswers waits until the load has had n more successful answers, so a
// test observes traffic rather than a clock.
func (l *load) waitAnswers(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	consultest.Eventually(t, 30*time.Second, fmt.Sprintf("%d more answers", n), func() error {
		if got := l.ok.Load(); got < target {
			return fmt.Errorf("%d of %d", got, target)
		}
		return nil
	})
}

func lastWord(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

func sorted(ids []string) []string {
	out := append([]string(nil), ids...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// jaeger is a real Jaeger all-in-one with in-memory storage, on free ports.
type jaeger struct {
	query    string // host:port of the query API
	otlpHTTP string
}

func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	root, err := consultest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("JAEGER_BIN")
	if bin == "" {
		bin = filepath.Join(root, "bin", "jaeger")
	}
	ports := consultest.FreePorts(t, 5)
	j := &jaeger{
		query:    "127.0.0.1:" + strconv.Itoa(ports[0]),
		otlpHTTP: "127.0.0.1:" + strconv.Itoa(ports[1]),
	}
	startProc(t, "jaeger", bin, []string{
		"JAEGER_QUERY_PORT=" + strconv.Itoa(ports[0]),
		"JAEGER_OTLP_HTTP_PORT=" + strconv.Itoa(ports[1]),
		"JAEGER_OTLP_GRPC_PORT=" + strconv.Itoa(ports[2]),
		"JAEGER_QUERY_GRPC_PORT=" + strconv.Itoa(ports[3]),
		"JAEGER_HEALTH_PORT=" + strconv.Itoa(ports[4]),
	}, "--config", filepath.Join(root, "deploy", "local", "jaeger.yaml"))
	consultest.Eventually(t, 30*time.Second, "jaeger query API answers", func() error {
		resp, err := http.Get("http://" + j.query + "/api/services")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return j
}

// freeAddr is a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
