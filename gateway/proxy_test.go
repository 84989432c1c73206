package gateway

import (
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/gateway/balance"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// deadInstance is an instance whose port refuses connections.
func deadInstance(t *testing.T, id string, routes ...string) discovery.Instance {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return instance(id, port, routes...)
}

type harness struct {
	gw    *Gateway
	proxy *testProxy
	spans *tracetest.SpanRecorder
}

// testProxy is the proxy served as the gateway binary serves plain HTTP:
// by the public server, with its default settings.
type testProxy struct {
	URL     string
	Handler http.Handler
}

// testEventLoops runs the harness's public server on event loops: `make
// test` runs the package's tests both ways (the edge tests run on every
// server either way).
var testEventLoops = flag.Bool("event-loops", false, "serve the test harness on event loops")

// roundRobinSettings make distribution assertions exact.
func roundRobinSettings() *Settings {
	s := DefaultSettings
	s.Balance = balance.Config{Policy: balance.RoundRobin}
	return &s
}

func newHarness(t *testing.T, snap *discovery.Snapshot) *harness {
	return newHarnessWith(t, snap, roundRobinSettings())
}

func newHarnessWith(t *testing.T, snap *discovery.Snapshot, settings *Settings) *harness {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	gw := New(Options{Settings: settings})
	gw.Apply(snap)
	p := NewProxy(gw, ProxyOptions{TracerProvider: tp, Propagator: propagation.TraceContext{}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewPublicServer(ln, p, DefaultServerSettings, PublicOptions{EventLoops: *testEventLoops})
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return &harness{gw: gw, proxy: &testProxy{URL: "http://" + ln.Addr().String(), Handler: p}, spans: spans}
}

func (h *harness) get(t *testing.T, host, path string) (int, string) {
	t.Helper()
	return do(t, "GET", h.proxy.URL+path, nil, "Host", host)
}

func TestProxyRoutesAndRotates(t *testing.T) {
	a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
	h := newHarness(t, snapshot(&discovery.Service{Name: "hello",
		Instances: []discovery.Instance{a.instance("/"), b.instance("/")}}))
	seen := map[string]int{}
	for range 10 {
		code, body := h.get(t, "site.example", "/x")
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		seen[body]++
	}
	if seen["Hello from a"] != 5 || seen["Hello from b"] != 5 {
		t.Errorf("answers = %v, want 5 each", seen)
	}
	r := a.last()
	if r.Host != "site.example" {
		t.Errorf("backend saw Host %q, want the client's", r.Host)
	}
	if r.Header.Get("X-Forwarded-For") != "127.0.0.1" || r.Header.Get("X-Forwarded-Host") != "site.example" ||
		r.Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-* = %v", r.Header)
	}
}

func TestProxyStripsPrefix(t *testing.T) {
	a := newTestBackend(t, "a")
	h := newHarness(t, snapshot(&discovery.Service{Name: "api",
		Instances: []discovery.Instance{a.instance("/v1 strip=/v1")}}))
	for path, want := range map[string]string{"/v1/users?id=3": "/users?id=3", "/v1": "/", "/v1/": "/"} {
		if code, _ := h.get(t, "h", path); code != 200 {
			t.Fatalf("%s: status %d", path, code)
		}
		if got := a.last().URL.RequestURI(); got != want {
			t.Errorf("%s reached the backend as %s, want %s", path, got, want)
		}
	}
}

func TestProxyNoRouteAndNoInstance(t *testing.T) {
	down := instance("down-1", 1, "/down")
	down.Health = discovery.Warning
	h := newHarness(t, snapshot(&discovery.Service{Name: "down", Instances: []discovery.Instance{down}}))
	if code, body := h.get(t, "h", "/elsewhere"); code != 404 || !strings.Contains(body, "no route") {
		t.Errorf("unknown path: %d %q, want 404 naming no route", code, body)
	}
	// A route whose only instance is in warning state has nobody to send to.
	// It has no passing instance, so the table has no route for it: 404.
	if code, _ := h.get(t, "h", "/down"); code != 404 {
		t.Errorf("route without passing instance: %d, want 404 (no route built)", code)
	}

	// A route that exists but whose picker has nothing: 503 naming the route.
	gw := New(Options{})
	policy, _ := DefaultSettings.policyFor(nil)
	gw.table.Store(&Table{anyHost: routesByPrefix{"/": {Name: "/", PathPrefix: "/", Service: "ghost",
		policy: policy, picker: balance.New(policy.balance, nil, time.Now), state: newRouteState(&DefaultSettings)}}})
	srv := httptest.NewServer(NewProxy(gw, ProxyOptions{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "route /") || !strings.Contains(string(body), "ghost") {
		t.Errorf("empty route: %d %q, want 503 naming route and service", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

func TestProxyRetriesConnectFailureOnAnotherInstance(t *testing.T) {
	live := newTestBackend(t, "live")
	dead := deadInstance(t, "aaa-dead", "/") // sorts first: round robin tries it first
	h := newHarness(t, snapshot(&discovery.Service{Name: "hello",
		Instances: []discovery.Instance{dead, live.instance("/")}}))
	for i := range 6 {
		// POST with a body: a refused connection sent nothing, so even a
		// non-idempotent request is safe to send elsewhere, body intact.
		resp, err := http.Post(h.proxy.URL+"/", "text/plain", strings.NewReader("payload-"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "Hello from live" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	live.mu.Lock()
	defer live.mu.Unlock()
	for i, b := range live.body {
		if b != "payload-"+strconv.Itoa(i) {
			t.Errorf("body %d arrived as %q", i, b)
		}
	}
}

func TestProxyAllInstancesDown(t *testing.T) {
	h := newHarness(t, snapshot(&discovery.Service{Name: "hello", Instances: []discovery.Instance{
		deadInstance(t, "d1", "/"), deadInstance(t, "d2", "/")}}))
	code, body := h.get(t, "h", "/")
	if code != 502 || !strings.Contains(body, "after 2 attempt") {
		t.Errorf("all down: %d %q, want 502 after 2 attempts", code, body)
	}
}

func TestProxyTraceHasServerSpanAndClientSpanPerAttempt(t *testing.T) {
	live := newTestBackend(t, "live")
	dead := deadInstance(t, "aaa-dead", "/")
	h := newHarness(t, snapshot(&discovery.Service{Name: "hello",
		Instances: []discovery.Instance{dead, live.instance("/")}}))
	// Round robin sends one of two requests to the dead instance first.
	for range 2 {
		if code, _ := h.get(t, "h", "/"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	// Keep the spans of the trace that needed a retry.
	byTrace := map[trace.TraceID][]sdktrace.ReadOnlySpan{}
	for _, s := range h.spans.Ended() {
		byTrace[s.SpanContext().TraceID()] = append(byTrace[s.SpanContext().TraceID()], s)
	}
	var ended []sdktrace.ReadOnlySpan
	for _, spans := range byTrace {
		if len(spans) == 3 {
			ended = spans
		}
	}
	var server sdktrace.ReadOnlySpan
	var clients []sdktrace.ReadOnlySpan
	for _, s := range ended {
		switch s.SpanKind() {
		case trace.SpanKindServer:
			server = s
		case trace.SpanKindClient:
			clients = append(clients, s)
		}
	}
	if server == nil || server.Name() != "GET /" {
		t.Fatalf("server span = %v, want one named \"GET /\"", server)
	}
	if len(clients) != 2 {
		t.Fatalf("%d client spans, want 2 (failed attempt and retry)", len(clients))
	}
	for i, c := range clients {
		if c.Parent().SpanID() != server.SpanContext().SpanID() || c.SpanContext().TraceID() != server.SpanContext().TraceID() {
			t.Errorf("client span %d is not a child of the server span", i)
		}
		attrs := map[string]string{}
		for _, kv := range c.Attributes() {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		if attrs["hopgate.attempt"] != strconv.Itoa(i+1) || attrs["hopgate.service"] != "hello" {
			t.Errorf("client span %d attributes = %v", i, attrs)
		}
	}
	// The backend's parent is the successful attempt's span.
	want := clients[1].SpanContext()
	if clients[0].StartTime().After(clients[1].StartTime()) {
		want = clients[0].SpanContext()
	}
	var seen []string
	live.mu.Lock()
	for _, r := range live.reqs {
		seen = append(seen, r.Header.Get("traceparent"))
	}
	live.mu.Unlock()
	wantTP := "00-" + want.TraceID().String() + "-" + want.SpanID().String() + "-01"
	if !slices.Contains(seen, wantTP) {
		t.Errorf("backend saw traceparents %q, want %s", seen, wantTP)
	}
}

func TestStripPrefix(t *testing.T) {
	tests := []struct{ path, raw, prefix, wantPath, wantRaw string }{
		{"/v1/a", "", "/v1", "/a", ""},
		{"/v1", "", "/v1", "/", ""},
		{"/v10/a", "", "/v1", "/v10/a", ""},
		{"/v1/a b", "/v1/a%20b", "/v1", "/a b", "/a%20b"},
		{"/v1/a", "/v%31/a", "/v1", "/a", ""},
	}
	for _, tt := range tests {
		p, r := stripPrefix(tt.path, tt.raw, tt.prefix)
		if p != tt.wantPath || r != tt.wantRaw {
			t.Errorf("stripPrefix(%q, %q, %q) = %q, %q; want %q, %q", tt.path, tt.raw, tt.prefix, p, r, tt.wantPath, tt.wantRaw)
		}
	}
}

// The request path reuses its readings of the clock, except under a
// gateway given a clock of its own, whose time it then takes.
func TestGatewayClock(t *testing.T) {
	reading := time.Now()
	if got := New(Options{}).at(reading); !got.Equal(reading) {
		t.Errorf("real clock: at gave %v for the reading %v", got, reading)
	}
	fixed := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := New(Options{Now: func() time.Time { return fixed }}).at(reading); !got.Equal(fixed) {
		t.Errorf("own clock: at gave %v, want its time %v", got, fixed)
	}
}
