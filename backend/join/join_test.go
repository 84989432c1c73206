package join

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// The test binary doubles as the child: with JOIN_TEST_HELPER set it runs
// helperMain instead of the tests (started through env(1), which execs it,
// so the wrapper's child is the helper itself).
func TestMain(m *testing.M) {
	if os.Getenv("JOIN_TEST_HELPER") != "" {
		helperMain()
		return
	}
	os.Exit(m.Run())
}

// helperMain is a small server configured by the environment:
//
//	JOIN_TEST_PORT            port to listen on (127.0.0.1)
//	JOIN_TEST_ON_TERM         "exit0": exit 0 on SIGTERM/SIGINT; "ignore":
//	                          keep running; unset: die from the signal
//	JOIN_TEST_UNHEALTHY_FOR   /healthz answers 503 for this long after start
//
// It prints "helper got <signal>" on stdout for each handled signal and
// exits 3 on SIGUSR1 ("on its own").
func helperMain() {
	start := time.Now()
	unhealthy, _ := time.ParseDuration(os.Getenv("JOIN_TEST_UNHEALTHY_FOR"))
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1)
	onTerm := os.Getenv("JOIN_TEST_ON_TERM")
	if onTerm != "" {
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("JOIN_TEST_PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" && time.Since(start) < unhealthy {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "helper\n")
		}))
	}()
	for sig := range sigs {
		if sig == syscall.SIGUSR1 {
			os.Exit(3)
		}
		fmt.Printf("helper got %v\n", sig)
		if onTerm == "exit0" {
			os.Exit(0)
		}
	}
}

// helperCmd is the command line that runs helperMain on port.
func helperCmd(t *testing.T, port int, env ...string) []string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]string{"env", "JOIN_TEST_HELPER=1", "JOIN_TEST_PORT=" + strconv.Itoa(port)}, env...), exe)
}

// joinRun is one run of the wrapper inside the test process.
type joinRun struct {
	t              *testing.T
	signals        chan os.Signal
	stdout, stderr *consultest.Buffer
	done           chan int
}

func startJoin(t *testing.T, consul *api.Config, args ...string) *joinRun {
	t.Helper()
	cfg, _, err := parseFlags(args)
	if err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	j := &joinRun{t: t, signals: make(chan os.Signal, 4), stdout: &consultest.Buffer{},
		stderr: &consultest.Buffer{}, done: make(chan int, 1)}
	go func() {
		j.done <- run(cfg, consul, j.signals, nil, j.stdout, io.MultiWriter(j.stderr, t.Output()))
	}()
	t.Cleanup(func() {
		select {
		case <-j.done:
		default:
			// Do not leave the child running: kill it and wait.
			if pid, ok := j.pid(); ok {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
			<-j.done
		}
	})
	return j
}

var pidRE = regexp.MustCompile(`started: .* pid=(\d+)`)

// pid is the child's pid, once the wrapper has logged it.
func (j *joinRun) pid() (int, bool) {
	m := pidRE.FindStringSubmatch(j.stderr.String())
	if m == nil {
		return 0, false
	}
	n, _ := strconv.Atoi(m[1])
	return n, true
}

func (j *joinRun) waitPid() int {
	j.t.Helper()
	var pid int
	consultest.Eventually(j.t, 10*time.Second, "child started", func() error {
		var ok bool
		if pid, ok = j.pid(); !ok {
			return fmt.Errorf("no pid in the log yet")
		}
		return nil
	})
	return pid
}

func (j *joinRun) wait(within time.Duration) int {
	j.t.Helper()
	select {
	case code := <-j.done:
		j.done <- code // for Cleanup
		return code
	case <-time.After(within):
		j.t.Fatalf("hopgate join still running after %v", within)
		return -1
	}
}

// errorLines returns the "hopgate join: " lines of the wrapper's stderr
// (log lines aside).
func (j *joinRun) errorLines() []string {
	var out []string
	for _, l := range strings.Split(j.stderr.String(), "\n") {
		if strings.HasPrefix(l, "hopgate join: ") {
			out = append(out, l)
		}
	}
	return out
}

func freePort(t *testing.T) int { return consultest.FreePorts(t, 1)[0] }

// service returns the agent's copy of service id, nil when it has none.
func service(t *testing.T, c *api.Client, id string) *api.AgentService {
	t.Helper()
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	return svcs[id]
}

func waitPassing(t *testing.T, c *api.Client, id string, within time.Duration) *api.AgentCheck {
	t.Helper()
	var check *api.AgentCheck
	consultest.Eventually(t, within, id+" registered with a passing check", func() error {
		checks, err := c.Agent().Checks()
		if err != nil {
			return err
		}
		check = checks["service:"+id]
		if check == nil {
			return fmt.Errorf("no check for %s", id)
		}
		if check.Status != api.HealthPassing {
			return fmt.Errorf("check %s: %s", check.Status, check.Output)
		}
		return nil
	})
	return check
}

func TestParseFlags(t *testing.T) {
	cfg, _, err := parseFlags([]string{"-service", "tornado", "-port", "8000", "-route", "/", "-route", "api.example.com/v1 strip=/v1",
		"-advertise", "10.0.0.5", "-id", "tornado-1", "-check-path", "/healthz", "-drain", "1s", "-kill-timeout", "2s",
		"-start-timeout", "3s", "-log-level", "debug", "--", "python3", "app.py", "-port", "9"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Service != "tornado" || cfg.port != 8000 || len(cfg.Routes) != 2 || cfg.Routes[1] != "api.example.com/v1 strip=/v1" ||
		cfg.Advertise != "10.0.0.5" || cfg.ID != "tornado-1" || cfg.checkPath != "/healthz" || cfg.drain != time.Second ||
		cfg.killTimeout != 2*time.Second || cfg.startTimeout != 3*time.Second {
		t.Errorf("config = %+v", cfg)
	}
	if got := strings.Join(cfg.command, " "); got != "python3 app.py -port 9" {
		t.Errorf("command = %q: the flags after -- belong to the command", got)
	}

	cfg, _, err = parseFlags([]string{"-service", "s", "-port", "1", "sh", "-c", "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0] != "/" || cfg.drain != DefaultDrain || cfg.killTimeout != DefaultKillTimeout ||
		cfg.startTimeout != DefaultStartTimeout || cfg.checkPath != "" || strings.Join(cfg.command, " ") != "sh -c x" {
		t.Errorf("defaults: %+v", cfg)
	}

	ok := []string{"-service", "s", "-port", "8000"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command to run"},
		{ok, "no command to run"},
		{append(ok, "--"), "no command to run"},
		{[]string{"-port", "8000", "--", "x"}, "-service is required"},
		{[]string{"-service", "s", "--", "x"}, "-port is required"},
		{[]string{"-service", "s", "-port", "http", "--", "x"}, `invalid value "http" for flag -port: want a port number from 1 to 65535`},
		{[]string{"-service", "s", "-port", "0", "--", "x"}, `invalid value "0" for flag -port`},
		{[]string{"-service", "s", "-port", "65536", "--", "x"}, `invalid value "65536" for flag -port`},
		{[]string{"-service", "a/b", "-port", "1", "--", "x"}, `invalid value "a/b" for flag -service`},
		{append(ok, "-route", "example.com", "--", "x"), `invalid value "example.com" for flag -route`},
		{append(ok, "-check-path", "healthz", "--", "x"), `invalid value "healthz" for flag -check-path`},
		{append(ok, "-drain", "-1s", "--", "x"), `invalid value "-1s" for flag -drain: must not be negative`},
		{append(ok, "-kill-timeout", "0", "--", "x"), `invalid value "0" for flag -kill-timeout: must be positive`},
		{append(ok, "-start-timeout", "soon", "--", "x"), `invalid value "soon" for flag -start-timeout: want a duration`},
		{append(ok, "-advertise", "10.0.0.1:80", "--", "x"), `invalid value "10.0.0.1:80" for flag -advertise`},
		{append(ok, "-id", "a b", "--", "x"), `invalid value "a b" for flag -id`},
		{append(ok, "-log-level", "loud", "--", "x"), `invalid value "loud" for flag -log-level`},
		{append(ok, "-nope", "--", "x"), "flag provided but not defined: -nope"},
	} {
		_, _, err := parseFlags(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		script    string
		code      int
		requested bool // a clean end after SIGTERM/SIGINT was passed on
	}{
		{"exit 0", 0, true},
		{"exit 3", 3, false},
		{"exit 143", 143, true},
		{"exit 130", 130, true},
		{"exit 137", 137, false},
		{"kill -TERM $$", 143, true},
		{"kill -INT $$", 130, true},
		{"kill -KILL $$", 137, false},
		{"kill -SEGV $$", 139, false},
	} {
		cmd := exec.Command("sh", "-c", tc.script)
		_ = cmd.Run()
		if got := exitCode(cmd.ProcessState); got != tc.code {
			t.Errorf("%s: exit code %d, want %d", tc.script, got, tc.code)
		}
		if got := requestedStop(cmd.ProcessState); got != tc.requested {
			t.Errorf("%s: requestedStop = %v, want %v", tc.script, got, tc.requested)
		}
	}
}

func TestMainHelpAndOneLineErrors(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := Main([]string{"-h"}, nil, nil, &stdout, &stderr); code != 0 {
		t.Errorf("-h: exit %d, want 0", code)
	}
	if !strings.HasPrefix(stdout.String(), "Usage: hopgate join") || !strings.Contains(stdout.String(), "-kill-timeout") || stderr.Len() != 0 {
		t.Errorf("-h: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-service", "s", "-port", "x", "--", "true"}, `hopgate join: invalid value "x" for flag -port`},
		{[]string{"-service", "s", "-port", "8000"}, "hopgate join: no command to run"},
		{[]string{"-service", "s", "-port", "8000", "--", "hopgate-no-such-command"}, `hopgate join: command "hopgate-no-such-command": executable file not found in $PATH`},
		{[]string{"-service", "s", "-port", "8000", "--", "/hopgate/no/such/file"}, `hopgate join: command "/hopgate/no/such/file": no such file or directory`},
	} {
		stdout.Reset()
		stderr.Reset()
		code := Main(tc.args, make(chan os.Signal), nil, &stdout, &stderr)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and one line starting %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}

func TestStartFailures(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	c := agent.Client()
	base := func(port int, extra ...string) []string {
		return append([]string{"-service", "failing", "-port", strconv.Itoa(port), "-id", "failing-1"}, extra...)
	}
	noRegistration := func(t *testing.T) {
		t.Helper()
		if svcs, err := c.Agent().Services(); err != nil || len(svcs) != 0 {
			t.Errorf("agent services = %v %v, want none", svcs, err)
		}
	}

	t.Run("child fails before the port opens", func(t *testing.T) {
		j := startJoin(t, agent.Config(), base(freePort(t), "--", "sh", "-c", "exit 7")...)
		if code := j.wait(10 * time.Second); code != 7 {
			t.Errorf("exit %d, want the child's 7", code)
		}
		if l := j.errorLines(); len(l) != 1 || !strings.Contains(l[0], "sh exited with status 7 before 127.0.0.1:") {
			t.Errorf("error lines %q", l)
		}
		noRegistration(t)
	})
	t.Run("child exits 0 before the port opens", func(t *testing.T) {
		j := startJoin(t, agent.Config(), base(freePort(t), "--", "true")...)
		if code := j.wait(10 * time.Second); code != 2 {
			t.Errorf("exit %d, want 2: the command never served", code)
		}
		noRegistration(t)
	})
	t.Run("port never opens", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		start := time.Now()
		j := startJoin(t, agent.Config(), base(freePort(t), "-start-timeout", "500ms", "--",
			"sh", "-c", `echo $$ > "$0"; exec sleep 60`, pidFile)...)
		if code := j.wait(10 * time.Second); code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
		if d := time.Since(start); d < 500*time.Millisecond || d > 5*time.Second {
			t.Errorf("gave up after %v, want about the 500ms start timeout", d)
		}
		if l := j.errorLines(); len(l) != 1 || !strings.Contains(l[0], "accepted connections not within -start-timeout 500ms") ||
			!strings.Contains(l[0], "connection refused") || !strings.Contains(l[0], "killed sh") {
			t.Errorf("error lines %q", l)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("child %d still exists after the start timeout (kill -0: %v)", pid, err)
		}
		noRegistration(t)
	})
	t.Run("signal before the port opens", func(t *testing.T) {
		j := startJoin(t, agent.Config(), base(freePort(t), "--", "sleep", "60")...)
		j.waitPid()
		j.signals <- syscall.SIGTERM
		if code := j.wait(10 * time.Second); code != 0 {
			t.Errorf("exit %d, want 0: a requested stop", code)
		}
		noRegistration(t)
	})
}

func TestSIGTERMDeregistersDrainsThenStopsTheChild(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	c := agent.Client()
	port := freePort(t)
	j := startJoin(t, agent.Config(), append([]string{"-service", "web", "-port", strconv.Itoa(port), "-id", "web-1",
		"-route", "/", "-route", "/api", "-drain", "2s", "--"}, helperCmd(t, port, "JOIN_TEST_ON_TERM=exit0")...)...)

	check := waitPassing(t, c, "web-1", 20*time.Second)
	if check.Type != "tcp" || check.Name != fmt.Sprintf("TCP 127.0.0.1:%d", port) {
		t.Errorf("check = %s %q, want a TCP check of the port", check.Type, check.Name)
	}
	svc := service(t, c, "web-1")
	if svc.Service != "web" || svc.Port != port || svc.Address != "127.0.0.1" ||
		strings.Join(svc.Tags, ",") != "gateway.route=/,gateway.route=/api" {
		t.Errorf("service = %+v", svc)
	}

	// The Registrar underneath registers again when the agent loses it.
	if err := c.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	waitPassing(t, c, "web-1", 20*time.Second)

	sent := time.Now()
	j.signals <- syscall.SIGTERM
	consultest.Eventually(t, 5*time.Second, "deregistered", func() error {
		if service(t, c, "web-1") != nil {
			return fmt.Errorf("still registered")
		}
		return nil
	})
	if strings.Contains(j.stdout.String(), "helper got") {
		t.Errorf("the child got the signal before the drain ended (%v after it was sent)", time.Since(sent))
	}
	if code := j.wait(10 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if d := time.Since(sent); d < 2*time.Second {
		t.Errorf("stopped %v after the signal, before the 2s drain ended", d)
	}
	if out := j.stdout.String(); out != "helper got terminated\n" {
		t.Errorf("child stdout %q: want it passed through, with the forwarded SIGTERM", out)
	}
}

func TestChildExitingOnItsOwnDeregistersAtOnce(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	c := agent.Client()
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
		want int
	}{
		{"exit 3", syscall.SIGUSR1, 3},
		{"SIGKILL", syscall.SIGKILL, 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePort(t)
			id := "solo-" + strconv.Itoa(port)
			j := startJoin(t, agent.Config(), append([]string{"-service", "solo", "-port", strconv.Itoa(port), "-id", id,
				"-drain", "10s", "--"}, helperCmd(t, port)...)...)
			waitPassing(t, c, id, 20*time.Second)
			pid := j.waitPid()
			start := time.Now()
			if err := syscall.Kill(pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			if code := j.wait(5 * time.Second); code != tc.want {
				t.Errorf("exit %d, want %d", code, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v: no drain when the child is gone", d)
			}
			if svc := service(t, c, id); svc != nil {
				t.Errorf("still registered after the wrapper returned: %+v", svc)
			}
		})
	}
}

func TestKillTimeoutEscalatesToSIGKILL(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	port := freePort(t)
	j := startJoin(t, agent.Config(), append([]string{"-service", "stubborn", "-port", strconv.Itoa(port), "-id", "stubborn-1",
		"-drain", "0s", "-kill-timeout", "500ms", "--"}, helperCmd(t, port, "JOIN_TEST_ON_TERM=ignore")...)...)
	waitPassing(t, agent.Client(), "stubborn-1", 20*time.Second)
	sent := time.Now()
	j.signals <- syscall.SIGINT
	if code := j.wait(10 * time.Second); code != 137 {
		t.Errorf("exit %d, want 137 (killed)", code)
	}
	if d := time.Since(sent); d < 500*time.Millisecond {
		t.Errorf("killed %v after the signal, before the 500ms kill timeout", d)
	}
	if out := j.stdout.String(); out != "helper got interrupt\n" {
		t.Errorf("child stdout %q: want the forwarded SIGINT", out)
	}
	if !strings.Contains(j.stderr.String(), "sending SIGKILL") {
		t.Errorf("no log line about the SIGKILL")
	}
}

func TestCheckPathWaitsForHealthAndRegistersAnHTTPCheck(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	c := agent.Client()
	port := freePort(t)
	j := startJoin(t, agent.Config(), append([]string{"-service", "healthy", "-port", strconv.Itoa(port), "-id", "healthy-1",
		"-check-path", "/healthz", "-drain", "0s", "--"}, helperCmd(t, port, "JOIN_TEST_UNHEALTHY_FOR=1500ms")...)...)

	// The first time the instance is seen on the agent, the child's health
	// endpoint already passes: the wrapper waited for it, not just the port.
	healthURL := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	consultest.Eventually(t, 20*time.Second, "registered", func() error {
		if service(t, c, "healthy-1") == nil {
			return fmt.Errorf("not registered")
		}
		return nil
	})
	resp, err := http.Get(healthURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("registered while %s answered %d", healthURL, resp.StatusCode)
	}
	check := waitPassing(t, c, "healthy-1", 20*time.Second)
	if check.Type != "http" || check.Name != "HTTP GET /healthz" {
		t.Errorf("check = %s %q, want an HTTP check of /healthz", check.Type, check.Name)
	}
	j.signals <- syscall.SIGINT // the helper dies from it: a clean stop
	if code := j.wait(10 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if service(t, c, "healthy-1") != nil {
		t.Errorf("still registered")
	}
}
