package telemetry

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestClasses(t *testing.T) {
	for m, want := range map[string]string{"GET": "GET", "DELETE": "DELETE", "PROPFIND": "other", "get": "other"} {
		if got := MethodClassName(MethodClass(m)); got != want {
			t.Errorf("MethodClass(%s) = %s, want %s", m, got, want)
		}
	}
	for code, want := range map[int]string{100: "1xx", 200: "2xx", 204: "2xx", 301: "3xx", 404: "4xx", 499: "4xx", 503: "5xx", 0: "5xx", 700: "5xx"} {
		if got := StatusClassName(StatusClass(code)); got != want {
			t.Errorf("StatusClass(%d) = %s, want %s", code, got, want)
		}
	}
}

func TestHTTPMetrics(t *testing.T) {
	m := NewHTTPMetrics("svc")
	tp := sdktrace.NewTracerProvider()
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	traced := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, span := tp.Tracer("t").Start(r.Context(), "s")
			defer span.End()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
	h := traced(m.Wrap(inner, func(r *http.Request) bool { return r.URL.Path == "/healthz" }))
	for _, p := range []string{"/", "/", "/missing", "/healthz"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/", nil))

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{
		`svc_http_requests_total{code="2xx",method="GET"} 2`,
		`svc_http_requests_total{code="4xx",method="GET"} 1`,
		`svc_http_requests_total{code="2xx",method="POST"} 1`,
		`svc_http_request_duration_seconds_count 4`, // /healthz skipped
		`svc_http_inflight_requests 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, req)
	if !strings.Contains(rec.Body.String(), `# {trace_id="`) {
		t.Errorf("no trace_id exemplar in OpenMetrics:\n%s", rec.Body)
	}
}

func TestExemplarsThrottle(t *testing.T) {
	m := NewHTTPMetrics("x")
	var e Exemplars
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1},
		TraceFlags: trace.FlagsSampled})
	now := time.Now()
	e.Observe(m.duration, 0.1, sc, now)
	first := e.last.Load()
	e.Observe(m.duration, 0.1, sc, now.Add(ExemplarThrottle/2))
	if e.last.Load() != first {
		t.Error("an exemplar within the throttle window")
	}
	e.Observe(m.duration, 0.1, sc, now.Add(ExemplarThrottle))
	if e.last.Load() == first {
		t.Error("no exemplar after the throttle window")
	}
	// Unsampled spans never carry one.
	e.Observe(m.duration, 0.1, trace.SpanContext{}, now.Add(time.Hour))
	if time.Unix(0, e.last.Load()).After(now.Add(time.Minute)) {
		t.Error("an exemplar for an unsampled span")
	}
}
