// Package e2e runs hopgate as a user would: real Consul and Jaeger
// processes, the gateway binary and hello binaries, talking over loopback.
package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery/consultest"
)

func TestTrafficSpreadsEvenlyAndNewHelloJoins(t *testing.T) {
	s := newStack(t, false)
	// Round robin: the default peak-EWMA policy favours whichever identical
	// hello measured fastest, which is right but not even.
	s.startGateway("-lb", "round_robin")
	a, b, c := s.startHello(), s.startHello(), s.startHello()
	s.waitInstances(30*time.Second, a, b, c)

	counts := map[string]int{}
	const n = 300
	for range n {
		code, body, err := s.get("/")
		if err != nil || code != 200 || !strings.HasPrefix(body, "Hello from ") {
			t.Fatalf("GET / = %d %q %v", code, body, err)
		}
		counts[lastWord(body)]++
	}
	for _, id := range []string{a, b, c} {
		if got := counts[id]; math.Abs(float64(got)-n/3) > 0.2*n/3 {
			t.Errorf("%s answered %d of %d requests, want %d ±20%%: %v", id, got, n, n/3, counts)
		}
	}

	// A fourth hello joins with no gateway restart.
	d := s.startHello()
	s.waitInstances(30*time.Second, a, b, c, d)
	consultest.Eventually(t, 10*time.Second, d+" answers through the gateway", func() error {
		_, body, err := s.get("/")
		if err != nil || lastWord(body) != d {
			return fmt.Errorf("answer %q %v", body, err)
		}
		return nil
	})
}

func TestSIGTERMUnderLoadLosesNoRequest(t *testing.T) {
	s := newStack(t, false)
	s.startGateway()
	a, b, c := s.startHello(), s.startHello(), s.startHello()
	s.waitInstances(30*time.Second, a, b, c)

	l := s.startLoad(4)
	l.waitAnswers(t, 200)
	s.hellos[b].signal(syscall.SIGTERM)
	if code := s.hellos[b].wait(20 * time.Second); code != 0 {
		t.Errorf("hello exited %d after SIGTERM, want 0", code)
	}
	s.waitInstances(10*time.Second, a, c)
	before := l.count(b)
	l.waitAnswers(t, 300)
	l.stop()

	if f := l.fail.Load(); f != 0 {
		t.Errorf("%d of %d requests failed while %s stopped: %v", f, f+l.ok.Load(), b, l.failures)
	}
	if after := l.count(b); after != before {
		t.Errorf("%s answered %d requests after it left the rotation", b, after-before)
	}
	if before == 0 {
		t.Errorf("%s never answered before it stopped: the test proved nothing", b)
	}
}

func TestSIGKILLLeavesRotationWhenCheckFails(t *testing.T) {
	s := newStack(t, false)
	s.startGateway()
	a, b, c := s.startHello(), s.startHello(), s.startHello()
	s.waitInstances(30*time.Second, a, b, c)

	l := s.startLoad(2)
	defer l.stop()
	l.waitAnswers(t, 100)
	s.hellos[b].signal(syscall.SIGKILL)
	s.hellos[b].wait(5 * time.Second)
	// No deregistration happened: the instance leaves once Consul's check
	// of it fails.
	s.waitInstances(30*time.Second, a, c)
	l.waitAnswers(t, 200)
	l.stop()
	// Connections refused by the dead instance are retried on the others.
	if f := l.fail.Load(); f != 0 {
		t.Errorf("%d requests failed after SIGKILL: %v", f, l.failures)
	}
}

func TestConsulOutageKeepsLastRoutes(t *testing.T) {
	s := newStack(t, false)
	s.startGateway()
	a, b := s.startHello(), s.startHello()
	s.waitInstances(30*time.Second, a, b)

	s.consul.Stop()
	consultest.Eventually(t, 30*time.Second, "gateway reports stale routes", func() error {
		doc, err := s.routes()
		if err != nil {
			return err
		}
		if !doc.Discovery.Stale || doc.Discovery.LastError == "" {
			return fmt.Errorf("discovery = %+v", doc.Discovery)
		}
		if got := len(doc.instancesOn("/")); got != 2 {
			return fmt.Errorf("%d instances on /, want the last known 2", got)
		}
		return nil
	})
	seen := map[string]bool{}
	for range 50 {
		code, body, err := s.get("/")
		if err != nil || code != 200 {
			t.Fatalf("with Consul down: GET / = %d %q %v", code, body, err)
		}
		seen[lastWord(body)] = true
	}
	if !seen[a] || !seen[b] {
		t.Errorf("with Consul down, answers came from %v; want both %s and %s", seen, a, b)
	}

	// A fresh agent with an empty catalog: the hellos register again and
	// the gateway follows changes again.
	s.consul.Restart()
	s.waitInstances(30*time.Second, a, b)
	c := s.startHello()
	s.waitInstances(30*time.Second, a, b, c)
	consultest.Eventually(t, 10*time.Second, "routes no longer stale", func() error {
		doc, err := s.routes()
		if err != nil {
			return err
		}
		if doc.Discovery.Stale {
			return fmt.Errorf("still stale: %+v", doc.Discovery)
		}
		return nil
	})
}

func TestStartOrderDoesNotMatter(t *testing.T) {
	// Gateway and hello start while nothing listens at their Consul address.
	s := &stack{t: t, hellos: map[string]*proc{}, client: &http.Client{Timeout: 10 * time.Second}}
	ports := consultest.FreePorts(t, 1)
	consulAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	s.consul = nil
	env := []string{"CONSUL_HTTP_ADDR=" + consulAddr}
	gwPorts := consultest.FreePorts(t, 2)
	s.public = fmt.Sprintf("127.0.0.1:%d", gwPorts[0])
	s.admin = fmt.Sprintf("127.0.0.1:%d", gwPorts[1])
	s.gateway = startProc(t, "gateway", filepath.Join(binDir, "hopgate"), env, "-listen", s.public, "-admin", s.admin)
	hello := startProc(t, "hello-late-consul", filepath.Join(binDir, "hello"), env,
		"-listen", "127.0.0.1:0", "-id", "hello-early")
	consultest.Eventually(t, 10*time.Second, "gateway admin answers, not ready", func() error {
		resp, err := s.client.Get("http://" + s.admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d before Consul exists, want 503", resp.StatusCode)
		}
		return nil
	})
	if hello.exited() || s.gateway.exited() {
		t.Fatal("a process gave up while Consul was unreachable")
	}

	s.consul = consultest.StartAt(t, consulAddr)
	s.waitInstances(60*time.Second, "hello-early")
	if code, body, err := s.get("/"); err != nil || code != 200 || lastWord(body) != "hello-early" {
		t.Fatalf("GET / = %d %q %v", code, body, err)
	}
}

func TestTraceSpansEveryHop(t *testing.T) {
	s := newStack(t, true)
	s.startGateway()
	a := s.startHello()
	s.waitInstances(30*time.Second, a)

	code, body, err := s.get("/", "Accept", "application/json")
	if err != nil || code != 200 {
		t.Fatalf("GET / = %d %q %v", code, body, err)
	}
	var answer struct {
		Instance string `json:"instance"`
		TraceID  string `json:"trace_id"`
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil || answer.TraceID == "" {
		t.Fatalf("JSON answer %q: %v", body, err)
	}

	type span struct {
		TraceID    string `json:"traceID"`
		SpanID     string `json:"spanID"`
		Operation  string `json:"operationName"`
		ProcessID  string `json:"processID"`
		References []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	}
	var spans []span
	var services map[string]string
	consultest.Eventually(t, 30*time.Second, "trace in Jaeger with 3 spans", func() error {
		resp, err := http.Get("http://" + s.jaeger.query + "/api/traces/" + answer.TraceID)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var doc struct {
			Data []struct {
				Spans     []span `json:"spans"`
				Processes map[string]struct {
					ServiceName string `json:"serviceName"`
				} `json:"processes"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			return err
		}
		if len(doc.Data) != 1 || len(doc.Data[0].Spans) < 3 {
			return fmt.Errorf("trace has %d parts", len(doc.Data))
		}
		spans = doc.Data[0].Spans
		services = map[string]string{}
		for id, p := range doc.Data[0].Processes {
			services[id] = p.ServiceName
		}
		return nil
	})
	if len(spans) != 3 {
		t.Fatalf("trace has %d spans, want 3 (gateway server, gateway client, hello server)", len(spans))
	}
	kind := func(sp span) string {
		for _, tag := range sp.Tags {
			if tag.Key == "span.kind" {
				return fmt.Sprint(tag.Value)
			}
		}
		return ""
	}
	find := func(service, k string) span {
		for _, sp := range spans {
			if services[sp.ProcessID] == service && kind(sp) == k {
				return sp
			}
		}
		t.Fatalf("no %s span from %s in %+v", k, service, spans)
		return span{}
	}
	gwServer, gwClient, helloServer := find("hopgate", "server"), find("hopgate", "client"), find("hello", "server")
	parent := func(sp span) string {
		for _, r := range sp.References {
			if r.RefType == "CHILD_OF" {
				return r.SpanID
			}
		}
		return ""
	}
	if parent(gwServer) != "" {
		t.Errorf("gateway server span has a parent: %+v", gwServer.References)
	}
	if parent(gwClient) != gwServer.SpanID {
		t.Errorf("gateway client span's parent = %q, want the gateway server span %q", parent(gwClient), gwServer.SpanID)
	}
	if parent(helloServer) != gwClient.SpanID {
		t.Errorf("hello server span's parent = %q, want the gateway client span %q", parent(helloServer), gwClient.SpanID)
	}
	if gwServer.Operation != "GET /" {
		t.Errorf("gateway server span is named %q, want \"GET /\" (method and route)", gwServer.Operation)
	}
	tags := map[string]string{}
	for _, tag := range gwClient.Tags {
		tags[tag.Key] = fmt.Sprint(tag.Value)
	}
	if tags["hopgate.instance.id"] != a || tags["hopgate.service"] != "hello" || tags["hopgate.attempt"] != "1" {
		t.Errorf("gateway client span tags = %v, want instance %s, service hello, attempt 1", tags, a)
	}
}

func TestGatewayBadFlagsExit2WithOneLine(t *testing.T) {
	cases := []struct {
		args []string
		env  []string
		want string
	}{
		{args: []string{"-nope"}, want: "flag provided but not defined: -nope"},
		{args: []string{"-listen", "8080"}, want: `invalid value "8080" for flag -listen`},
		{args: []string{"-max-attempts", "0"}, want: "-max-attempts"},
		{args: []string{"-lb", "fastest"}, want: `invalid value "fastest" for flag -lb`},
		{args: []string{"-outlier-max-share", "2"}, want: "-outlier-max-share"},
		{args: []string{"-tls-cert", "c.pem"}, want: "-tls-cert and -tls-key"},
		{args: []string{"-admin", "0.0.0.0:19901", "-listen", "127.0.0.1:0"}, want: "-admin-token"},
		{args: []string{"-admin", "127.0.0.1:18080", "-listen", ":18080"}, want: "must not share a port"},
		{args: []string{"-trusted-proxies", "10.0.0.0/8,nonsense"}, want: `"nonsense" is not a CIDR`},
		{args: []string{"-trace-context", "trust-me"}, want: "-trace-context"},
		{args: []string{"-log-format", "xml"}, want: "-log-format"},
		{args: []string{"stray"}, want: `unexpected argument "stray"`},
		{env: []string{"CONSUL_HTTP_ADDR=localhost:notaport"}, want: "CONSUL_HTTP_ADDR"},
		{env: []string{"CONSUL_HTTP_SSL=maybe"}, want: "CONSUL_HTTP_SSL"},
		{env: []string{"OTEL_TRACES_EXPORTER=carrier-pigeon"}, want: "telemetry"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(append(tc.env, tc.args...), " "), func(t *testing.T) {
			args := tc.args
			if !slices.Contains(args, "-listen") && !slices.Contains(args, "-admin") {
				args = append(args, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0")
			}
			cmd := exec.Command(filepath.Join(binDir, "hopgate"), args...)
			cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, tc.env...)
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output %q", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("output %q, want one line containing %q", out, tc.want)
			}
		})
	}
}
