package gateway

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/hopgate/hopgate/discovery"
)

// scrape reads the admin /metrics, as text or (openMetrics) OpenMetrics.
func scrape(t *testing.T, admin http.Handler, openMetrics bool) string {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	if openMetrics {
		req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	}
	rec := httptest.NewRecorder()
	admin.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("/metrics = %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// value finds the sample of one series, written as in the exposition
// (labels sorted), e.g. `hopgate_requests_total{code="2xx",method="GET",route="/"}`.
func value(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		f, _, _ := strings.Cut(rest, " ")
		v, err := strconv.ParseFloat(f, 64)
		return v, err == nil
	}
	return 0, false
}

func wantValue(t *testing.T, body, series string, want float64) {
	t.Helper()
	got, ok := value(body, series)
	switch {
	case !ok:
		t.Errorf("no series %s in:\n%s", series, grepLines(body, "hopgate_"))
	case got != want:
		t.Errorf("%s = %v, want %v", series, got, want)
	}
}

// awaitValue scrapes admin until series reaches want, for at most 5 s:
// on the event loops a request's metrics are recorded just after its
// answer is written, so its client may read them a moment too early.
func awaitValue(t *testing.T, admin http.Handler, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := value(scrape(t, admin, false), series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 5 s, want %v", series, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func grepLines(body, sub string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestMetricsRecordRequestsAttemptsAndRetries(t *testing.T) {
	good := newTestBackend(t, "good")
	dead := deadInstance(t, "dead", "/")
	snap := snapshot(&discovery.Service{Name: "web", Instances: []discovery.Instance{dead, good.instance("/")}})
	snap.Built = time.Now().Add(-5 * time.Millisecond)
	settings := roundRobinSettings()
	settings.Outlier.Consecutive = 0 // no ejection: every pick of dead is a retry
	h := newHarnessWith(t, snap, settings)
	admin := NewAdmin(h.gw, AdminOptions{Discovery: func() discovery.Status {
		return discovery.Status{Ready: true, Index: 9, Services: 1, Instances: 2, Errors: 3,
			LastContact: time.Now().Add(-2 * time.Second)}
	}})

	for range 4 {
		if code, body := h.get(t, "x", "/"); code != 200 {
			t.Fatalf("GET / = %d %q", code, body)
		}
	}
	if code, _ := do(t, "POST", h.proxy.URL+"/", strings.NewReader("x")); code != 200 {
		t.Fatalf("POST / = %d", code)
	}
	body := scrape(t, admin, false)

	wantValue(t, body, `hopgate_requests_total{code="2xx",method="GET",route="/"}`, 4)
	wantValue(t, body, `hopgate_requests_total{code="2xx",method="POST",route="/"}`, 1)
	wantValue(t, body, `hopgate_request_duration_seconds_count{route="/"}`, 5)
	wantValue(t, body, `hopgate_upstream_attempts_total{instance="good",node="n1",outcome="ok",route="/"}`, 5)
	// Round robin sends some attempts to the dead instance first; each is
	// a connect failure, retried on the good one.
	failures, ok := value(body, `hopgate_upstream_attempts_total{instance="dead",node="n1",outcome="connect_failure",route="/"}`)
	if !ok || failures < 1 {
		t.Errorf("connect failures on the dead instance = %v (%v), want at least 1:\n%s", failures, ok, grepLines(body, "attempts"))
	}
	wantValue(t, body, `hopgate_upstream_retries_total{reason="connect_failure",route="/"}`, failures)
	wantValue(t, body, `hopgate_upstream_retries_total{reason="status_5xx",route="/"}`, 0)
	wantValue(t, body, `hopgate_upstream_duration_seconds_count{instance="good",node="n1",route="/"}`, 5)

	// Read at scrape time from what the gateway keeps.
	wantValue(t, body, `hopgate_route_instances{route="/"}`, 2)
	wantValue(t, body, `hopgate_route_inflight_requests{route="/"}`, 0)
	wantValue(t, body, `hopgate_route_panic{route="/"}`, 0)
	wantValue(t, body, `hopgate_route_ejections_total{route="/"}`, 0)
	wantValue(t, body, `hopgate_route_retry_budget_exhausted_total{route="/"}`, 0)
	wantValue(t, body, `hopgate_upstream_ejected{instance="dead",node="n1",route="/"}`, 0)
	wantValue(t, body, `hopgate_ready`, 1)
	wantValue(t, body, `hopgate_routes_consul_index`, 7)
	wantValue(t, body, `hopgate_discovery_consul_index`, 9)
	wantValue(t, body, `hopgate_discovery_consul_errors_total`, 3)
	wantValue(t, body, `hopgate_discovery_stale`, 0)
	wantValue(t, body, `hopgate_discovery_watched_services`, 1)
	wantValue(t, body, `hopgate_discovery_watched_instances`, 2)
	wantValue(t, body, `hopgate_discovery_route_update_seconds_count`, 1)
	if v, ok := value(body, `hopgate_discovery_route_update_seconds_sum`); !ok || v < 0.005 || v > 5 {
		t.Errorf("route update latency = %v, want about 5ms (snapshot built 5ms before Apply)", v)
	}
	if v, ok := value(body, `hopgate_discovery_snapshot_age_seconds`); !ok || v < 0.005 {
		t.Errorf("snapshot age = %v %v", v, ok)
	}
	if v, ok := value(body, `hopgate_discovery_last_contact_age_seconds`); !ok || v < 1.5 || v > 60 {
		t.Errorf("last contact age = %v %v, want about 2", v, ok)
	}

	// A request with no route is counted under route "none".
	if code, _ := h.get(t, "x", "/"); code != 200 {
		t.Fatal(code)
	}
	h.gw.Apply(snapshot()) // the route goes away, and so do its series
	if code, _ := h.get(t, "x", "/nothing"); code != 404 {
		t.Fatalf("no route = %d", code)
	}
	body = scrape(t, admin, false)
	wantValue(t, body, `hopgate_requests_total{code="4xx",method="GET",route="none"}`, 1)
	for _, gone := range []string{`route="/"`} {
		if lines := grepLines(body, gone); lines != "" {
			t.Errorf("series of a removed route remain:\n%s", lines)
		}
	}
}

func TestMetricsEjectionsAndInstanceLeaving(t *testing.T) {
	a, b, c := newTestBackend(t, "a"), newTestBackend(t, "b"), newTestBackend(t, "c")
	a.status.Store(500)
	settings := roundRobinSettings()
	settings.Outlier.Consecutive = 2
	gw := New(Options{Settings: settings})
	gw.Apply(snapshot(&discovery.Service{Name: "web", Instances: []discovery.Instance{
		a.instance("/"), b.instance("/"), c.instance("/")}}))
	srv := httptest.NewServer(NewProxy(gw, ProxyOptions{}))
	t.Cleanup(srv.Close)
	admin := NewAdmin(gw, AdminOptions{})
	for range 9 {
		do(t, "GET", srv.URL+"/", nil)
	}
	body := scrape(t, admin, false)
	wantValue(t, body, `hopgate_route_ejections_total{route="/"}`, 1)
	wantValue(t, body, `hopgate_upstream_ejected{instance="a",node="n1",route="/"}`, 1)
	wantValue(t, body, `hopgate_upstream_attempts_total{instance="a",node="n1",outcome="error_5xx",route="/"}`, 2)
	wantValue(t, body, `hopgate_requests_total{code="5xx",method="GET",route="/"}`, 2)

	// a leaves the catalog: its series go, b's and c's stay.
	gw.Apply(snapshot(&discovery.Service{Name: "web", Instances: []discovery.Instance{b.instance("/"), c.instance("/")}}))
	body = scrape(t, admin, false)
	if lines := grepLines(body, `instance="a"`); lines != "" {
		t.Errorf("series of a removed instance remain:\n%s", lines)
	}
	if _, ok := value(body, `hopgate_upstream_duration_seconds_count{instance="b",node="n1",route="/"}`); !ok {
		t.Error("b's series went with a's")
	}
}

func TestMetricsExemplarsCarryTraceIDs(t *testing.T) {
	good := newTestBackend(t, "good")
	gw := New(Options{Settings: roundRobinSettings()})
	gw.Apply(snapshot(&discovery.Service{Name: "web", Instances: []discovery.Instance{good.instance("/")}}))
	tp := sdktrace.NewTracerProvider()
	srv := httptest.NewServer(NewProxy(gw, ProxyOptions{TracerProvider: tp, Propagator: propagation.TraceContext{}}))
	t.Cleanup(srv.Close)
	if code, _ := do(t, "GET", srv.URL+"/", nil); code != 200 {
		t.Fatal(code)
	}
	admin := NewAdmin(gw, AdminOptions{})
	om := scrape(t, admin, true)
	var found bool
	for _, line := range strings.Split(om, "\n") {
		if strings.HasPrefix(line, `hopgate_request_duration_seconds_bucket{route="/"`) && strings.Contains(line, `# {trace_id="`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no exemplar with a trace_id on the request histogram in OpenMetrics:\n%s", grepLines(om, "hopgate_request_duration"))
	}
	if !strings.HasSuffix(strings.TrimSpace(om), "# EOF") {
		t.Error("the OpenMetrics answer does not end with # EOF")
	}
	// Plain Prometheus text has no exemplars.
	if text := scrape(t, admin, false); strings.Contains(text, "trace_id") {
		t.Error("exemplars in the Prometheus text format")
	}
}

func TestMetricsOff(t *testing.T) {
	gw := New(Options{NoMetrics: true})
	gw.Apply(snapshot())
	admin := NewAdmin(gw, AdminOptions{})
	if rec := adminGet(t, admin, "/metrics"); rec.Code != http.StatusNotFound {
		t.Errorf("/metrics with metrics off = %d, want 404", rec.Code)
	}
	srv := httptest.NewServer(NewProxy(gw, ProxyOptions{}))
	t.Cleanup(srv.Close)
	if code, _ := do(t, "GET", srv.URL+"/", nil); code != 404 {
		t.Errorf("no route = %d", code)
	}
}

func TestQuantile(t *testing.T) {
	bounds := []float64{.001, .01, .1, 1}
	// 100 observations: 90 under 1ms, 9 in (1ms,10ms], 1 in (10ms,100ms].
	now := []uint64{90, 99, 100, 100}
	before := []uint64{0, 0, 0, 0}
	if q := quantile(0.99, 100, bounds, now, before); q < 0.0099 || q > 0.0101 {
		t.Errorf("p99 = %v, want 0.01", q)
	}
	if q := quantile(0.5, 100, bounds, now, before); q <= 0 || q > 0.001 {
		t.Errorf("p50 = %v, want within the first bucket", q)
	}
	// Everything above the last bound: the bound is the answer.
	if q := quantile(0.99, 5, bounds, []uint64{0, 0, 0, 0}, before); q != 1 {
		t.Errorf("p99 beyond the buckets = %v, want 1", q)
	}
}

// BenchmarkRecordRequest is the metrics' own cost for one request with one
// attempt, exemplars included (a sampled span; one exemplar per 100 ms).
func BenchmarkRecordRequest(b *testing.B) {
	gw := New(Options{})
	gw.Apply(snapshot(&discovery.Service{Name: "web", Instances: []discovery.Instance{instance("i", 1, "/")}}))
	r := gw.Table().Routes()[0]
	ep := r.Endpoints[0]
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("b").Start(b.Context(), "s")
	defer span.End()
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		gw.metrics.observeAttempt(ctx, r, ep, succeeded, start, time.Now())
		gw.metrics.observeRequest(ctx, r, "GET", 200, start)
	}
}

// The route-update latency runs from the arrival of Consul's answer
// (Snapshot.Changed), not from the snapshot's assembly (Built).
func TestRouteUpdateRunsFromConsulsAnswer(t *testing.T) {
	gw := New(Options{})
	snap := snapshot(&discovery.Service{Name: "web", Instances: []discovery.Instance{instance("w-1", 1, "/")}})
	now := time.Now()
	snap.Changed, snap.Built = now.Add(-300*time.Millisecond), now.Add(-time.Millisecond)
	gw.Apply(snap)
	body := scrape(t, NewAdmin(gw, AdminOptions{}), false)
	if v, ok := value(body, `hopgate_discovery_route_update_seconds_sum`); !ok || v < 0.3 || v > 5 {
		t.Errorf("route update latency = %v, want about 300ms (Consul answered 300ms before Apply)", v)
	}
}
