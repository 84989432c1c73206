package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// tornadoApp is the classic Tornado hello world, unmodified except that it
// takes its port from argv, so that two can run side by side.
const tornadoApp = `import tornado.ioloop, tornado.web
class MainHandler(tornado.web.RequestHandler):
    def get(self): self.write("Hello, Tornado!")
app = tornado.web.Application([(r"/", MainHandler)])
import sys; app.listen(int(sys.argv[1])); tornado.ioloop.IOLoop.current().start()
`

// pythonWithTornado returns a python3 that can import tornado: the first
// python3 on PATH, else Debian's /usr/bin/python3, where the python3-tornado
// package installs it (.ci/run installs the package when neither can).
func pythonWithTornado(t *testing.T) string {
	t.Helper()
	var tried []string
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append([]string{p}, candidates...)
	}
	for _, py := range candidates {
		if err := exec.Command(py, "-c", "import tornado").Run(); err == nil {
			return py
		}
		tried = append(tried, py)
	}
	t.Fatalf("no python3 that imports tornado (tried %s): apt-get install python3-tornado", strings.Join(tried, ", "))
	return ""
}

// startJoin runs `hopgate join` for one instance of service with the given
// id on port, wrapping command. The drain is 2s, as for the hellos.
func (s *stack) startJoin(service, id string, port int, flags []string, command ...string) *proc {
	s.t.Helper()
	args := append([]string{"join", "-service", service, "-id", id, "-port", strconv.Itoa(port), "-drain", "2s"}, flags...)
	args = append(append(args, "--"), command...)
	return startProc(s.t, id, filepath.Join(binDir, "hopgate"), s.env(service), args...)
}

var childPidRE = regexp.MustCompile(`hopgate\.join: started: .* pid=(\d+)`)

// childPid is the pid of the command a join wrapper started, read from the
// wrapper's log.
func (p *proc) childPid() int {
	p.t.Helper()
	m := childPidRE.FindStringSubmatch(p.out.String())
	if m == nil {
		p.t.Fatalf("%s: no \"started\" log line with the child's pid:\n%s", p.name, p.out.String())
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// upstreamCounts counts, per upstream port, the requests the gateway's
// debug log says it proxied.
func (s *stack) upstreamCounts() map[int]int {
	counts := map[int]int{}
	for _, m := range regexp.MustCompile(`upstream=127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(s.gateway.out.String(), -1) {
		port, _ := strconv.Atoi(m[1])
		counts[port]++
	}
	return counts
}

// refused reports whether nothing listens on 127.0.0.1:port any more.
func refused(port int) error {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return nil
	}
	c.Close()
	return fmt.Errorf("127.0.0.1:%d still accepts connections", port)
}

func TestJoinTornadoBalancesAndSIGTERMUnderLoadLosesNoRequest(t *testing.T) {
	py := pythonWithTornado(t)
	app := filepath.Join(t.TempDir(), "app.py")
	if err := os.WriteFile(app, []byte(tornadoApp), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, false)
	s.startGateway()
	ports := consultest.FreePorts(t, 2)
	a := s.startJoin("tornado", "tornado-1", ports[0], []string{"-route", "/"}, py, app, strconv.Itoa(ports[0]))
	b := s.startJoin("tornado", "tornado-2", ports[1], []string{"-route", "/"}, py, app, strconv.Itoa(ports[1]))
	s.waitInstances(30*time.Second, "tornado-1", "tornado-2")

	// Both answer through the gateway. How evenly depends on the balancing
	// policy, so this asks only that each answers a few times.
	consultest.Eventually(t, 20*time.Second, "both instances answered through the gateway", func() error {
		for range 20 {
			code, body, err := s.get("/")
			if err != nil || code != 200 || body != "Hello, Tornado!" {
				t.Fatalf("GET / = %d %q %v", code, body, err)
			}
		}
		if c := s.upstreamCounts(); c[ports[0]] < 3 || c[ports[1]] < 3 {
			return fmt.Errorf("gateway logged answers per port %v", c)
		}
		return nil
	})

	// SIGTERM to one wrapper under load: it leaves the rotation first, its
	// Tornado keeps serving through the drain, and no request fails.
	atLoadStart := s.upstreamCounts()[ports[0]]
	l := s.startLoad(4)
	l.waitAnswers(t, 200)
	if s.upstreamCounts()[ports[0]] == atLoadStart {
		t.Errorf("tornado-1 answered nothing under load before its SIGTERM: the test would prove nothing")
	}
	a.signal(syscall.SIGTERM)
	if code := a.wait(20 * time.Second); code != 0 {
		t.Errorf("join wrapper exited %d after SIGTERM, want 0 (Tornado died of the forwarded SIGTERM: a requested stop)", code)
	}
	if err := refused(ports[0]); err != nil {
		t.Errorf("tornado-1 outlived its wrapper: %v", err)
	}
	s.waitInstances(10*time.Second, "tornado-2")
	l.waitAnswers(t, 300)
	l.stop()
	if f := l.fail.Load(); f != 0 {
		t.Errorf("%d of %d requests failed while tornado-1 stopped: %v", f, f+l.ok.Load(), l.failures)
	}
	if b.exited() {
		t.Errorf("tornado-2's wrapper exited")
	}
}

func TestJoinChildSIGKILLLeavesTheRotationAtOnce(t *testing.T) {
	py := pythonWithTornado(t)
	app := filepath.Join(t.TempDir(), "app.py")
	if err := os.WriteFile(app, []byte(tornadoApp), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, false)
	s.startGateway()
	ports := consultest.FreePorts(t, 2)
	a := s.startJoin("tornado", "tornado-1", ports[0], nil, py, app, strconv.Itoa(ports[0]))
	s.startJoin("tornado", "tornado-2", ports[1], nil, py, app, strconv.Itoa(ports[1]))
	s.waitInstances(30*time.Second, "tornado-1", "tornado-2")

	l := s.startLoad(2)
	defer l.stop()
	l.waitAnswers(t, 100)
	if err := syscall.Kill(a.childPid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := a.wait(5 * time.Second); code != 137 {
		t.Errorf("join wrapper exited %d after its child was SIGKILLed, want 137 (128+9)", code)
	}
	// Deregistered by the wrapper, not reaped after a failing check: gone
	// from the agent the moment the wrapper has exited.
	svcs, err := s.consul.Client().Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["tornado-1"]; ok {
		t.Errorf("tornado-1 still registered after its wrapper exited")
	}
	s.waitInstances(10*time.Second, "tornado-2")
	// A request tornado-1 was answering when it was killed fails (502,
	// connection reset): nothing can save it, and the gateway retries only
	// connections that could not be made. So at most one per load worker.
	inFlight := l.fail.Load()
	if inFlight > 2 {
		t.Errorf("%d requests failed around the SIGKILL, more than the 2 that can be in flight: %v", inFlight, l.failures)
	} else if inFlight > 0 {
		t.Logf("%d request(s) in flight at the SIGKILL failed: %v", inFlight, l.failures)
	}
	// Once it left the rotation nothing fails; connections it refused in
	// between were retried on tornado-2.
	l.waitAnswers(t, 200)
	l.stop()
	if f := l.fail.Load(); f != inFlight {
		t.Errorf("%d requests failed after tornado-1 left the rotation: %v", f-inFlight, l.failures)
	}
}

func TestJoinPlainPythonHTTPServer(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("Hello from http.server\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, false)
	s.startGateway()
	port := consultest.FreePorts(t, 1)[0]
	// An HTTP check this time: -check-path makes the readiness probe and
	// Consul's check GET / instead of a TCP connect.
	p := s.startJoin("files", "files-1", port, []string{"-route", "/", "-check-path", "/"},
		py, "-m", "http.server", strconv.Itoa(port), "--bind", "127.0.0.1", "--directory", dir)
	s.waitInstances(30*time.Second, "files-1")
	checks, err := s.consul.Client().Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if c := checks["service:files-1"]; c == nil || c.Type != "http" || c.Status != "passing" {
		t.Errorf("check of files-1 = %+v, want a passing HTTP check", c)
	}
	code, body, err := s.get("/")
	if err != nil || code != 200 || body != "Hello from http.server\n" {
		t.Fatalf("GET / = %d %q %v", code, body, err)
	}

	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("join wrapper exited %d after SIGTERM, want 0", code)
	}
	if err := refused(port); err != nil {
		t.Errorf("http.server outlived its wrapper: %v", err)
	}
	s.waitInstances(10 * time.Second)
}

func TestJoinBadInputExit2WithOneLine(t *testing.T) {
	s := newStack(t, false)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no command", []string{"-service", "x", "-port", "8000"}, "hopgate join: no command to run"},
		{"no command after --", []string{"-service", "x", "-port", "8000", "--"}, "hopgate join: no command to run"},
		{"port not a number", []string{"-service", "x", "-port", "http", "--", "true"}, `hopgate join: invalid value "http" for flag -port`},
		{"port out of range", []string{"-service", "x", "-port", "70000", "--", "true"}, `hopgate join: invalid value "70000" for flag -port`},
		{"command not found", []string{"-service", "x", "-port", "8000", "--", "hopgate-no-such-command"}, `hopgate join: command "hopgate-no-such-command": executable file not found`},
		{"no service", []string{"-port", "8000", "--", "true"}, "hopgate join: -service is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(binDir, "hopgate"), append([]string{"join"}, tc.args...)...)
			cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, s.consul.Env()...)
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output %q", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Errorf("output %q, want one line starting %q", out, tc.want)
			}
		})
	}

	t.Run("port never opens", func(t *testing.T) {
		port := consultest.FreePorts(t, 1)[0]
		p := s.startJoin("never", "never-1", port, []string{"-start-timeout", "1s"}, "sleep", "60")
		if code := p.wait(10 * time.Second); code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
		lines := strings.Split(strings.TrimSpace(p.out.String()), "\n")
		last := lines[len(lines)-1]
		want := fmt.Sprintf("hopgate join: 127.0.0.1:%d accepted connections not within -start-timeout 1s", port)
		if !strings.HasPrefix(last, want) || !strings.HasSuffix(last, "killed sleep") {
			t.Errorf("last line %q, want %q ... killed sleep", last, want)
		}
		if err := syscall.Kill(p.childPid(), 0); err != syscall.ESRCH {
			t.Errorf("sleep still exists after the start timeout (kill -0: %v)", err)
		}
		if svcs, err := s.consul.Client().Agent().Services(); err != nil || len(svcs) != 0 {
			t.Errorf("agent services = %v %v, want none", svcs, err)
		}
	})
}
