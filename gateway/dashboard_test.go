package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery"
)

func TestDashboardPageAndAssets(t *testing.T) {
	gw := New(Options{})
	admin := NewAdmin(gw, AdminOptions{})
	rec := adminGet(t, admin, "/")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("/ = %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	page := rec.Body.String()
	for _, want := range []string{`<html lang="en">`, `name="viewport"`, `/dashboard/app.js`, `/dashboard/style.css`, `<main>`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("the page refers to an external asset")
	}
	for path, ctype := range map[string]string{"/dashboard/app.js": "text/javascript", "/dashboard/style.css": "text/css"} {
		rec := adminGet(t, admin, path)
		if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), ctype) || rec.Body.Len() == 0 {
			t.Errorf("%s = %d %q", path, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
	if rec := adminGet(t, admin, "/nothing-here"); rec.Code != 404 {
		t.Errorf("/nothing-here = %d, want 404", rec.Code)
	}
}

func TestDashboardDocument(t *testing.T) {
	good1, good2 := newTestBackend(t, "g1"), newTestBackend(t, "g2")
	h := newHarness(t, snapshot(&discovery.Service{Name: "web", Unroutable: 1,
		Instances: []discovery.Instance{good1.instance("/"), good2.instance("/")}}))
	contact := time.Now().Add(-3 * time.Second)
	opts := AdminOptions{JaegerQuery: "http://127.0.0.1:16686/", Discovery: func() discovery.Status {
		return discovery.Status{Ready: true, Index: 11, Services: 1, Instances: 2, Errors: 2,
			LastContact: contact, LastError: "connection refused"}
	}}

	t0 := time.Now()
	first := dashboardView(h.gw, opts, t0) // the first sample: no rate yet
	if len(first.Routes) != 1 || first.Routes[0].Rate.P99Ms != nil {
		t.Fatalf("first view: %+v", first.Routes)
	}
	for range 10 {
		if code, _ := h.get(t, "x", "/"); code != 200 {
			t.Fatal(code)
		}
	}
	awaitValue(t, NewAdmin(h.gw, opts), `hopgate_requests_total{code="2xx",method="GET",route="/"}`, 10)
	doc := dashboardView(h.gw, opts, t0.Add(2*time.Second))

	// Through JSON, as the page reads it.
	raw, _ := json.Marshal(doc)
	var got struct {
		Ready     bool   `json:"ready"`
		Index     uint64 `json:"index"`
		Traces    bool   `json:"traces"`
		JaegerUI  string `json:"jaeger_ui"`
		Metrics   bool   `json:"metrics"`
		Discovery struct {
			ConsulIndex  uint64   `json:"consul_index"`
			Errors       uint64   `json:"errors"`
			Stale        bool     `json:"stale"`
			LastError    string   `json:"last_error"`
			LastContactS *float64 `json:"last_contact_seconds"`
		} `json:"discovery"`
		Routes []struct {
			Route    string `json:"route"`
			Service  string `json:"service"`
			Policy   string `json:"policy"`
			Critical int    `json:"critical"`
			Rate     struct {
				RPS   float64  `json:"rps"`
				P99Ms *float64 `json:"p99_ms"`
			} `json:"rate"`
			Instances []struct {
				ID      string `json:"id"`
				Address string `json:"address"`
				Node    string `json:"node"`
				Health  string `json:"health"`
				Weight  int    `json:"weight"`
				Ejected bool   `json:"ejected"`
				Rate    struct {
					RPS   float64  `json:"rps"`
					P99Ms *float64 `json:"p99_ms"`
				} `json:"rate"`
			} `json:"instances"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Ready || got.Index != 7 || !got.Traces || got.JaegerUI != "http://127.0.0.1:16686" || !got.Metrics {
		t.Errorf("header: %s", raw)
	}
	d := got.Discovery
	if d.ConsulIndex != 11 || d.Errors != 2 || !d.Stale || d.LastError != "connection refused" ||
		d.LastContactS == nil || *d.LastContactS < 4 || *d.LastContactS > 6 {
		t.Errorf("discovery: %+v", d)
	}
	if len(got.Routes) != 1 {
		t.Fatalf("routes: %s", raw)
	}
	r := got.Routes[0]
	if r.Route != "/" || r.Service != "web" || r.Policy != "round_robin" || r.Critical != 1 {
		t.Errorf("route: %+v", r)
	}
	if r.Rate.RPS != 5 || r.Rate.P99Ms == nil || *r.Rate.P99Ms <= 0 {
		t.Errorf("route rate = %v rps, p99 %v; want 10 requests over 2 s and a p99", r.Rate.RPS, r.Rate.P99Ms)
	}
	if len(r.Instances) != 2 {
		t.Fatalf("instances: %+v", r.Instances)
	}
	for _, in := range r.Instances {
		if in.Address != "127.0.0.1" || in.Node != "n1" || in.Health != "passing" || in.Weight != 1 || in.Ejected {
			t.Errorf("instance: %+v", in)
		}
		if in.Rate.RPS != 2.5 || in.Rate.P99Ms == nil {
			t.Errorf("%s rate = %v rps, p99 %v; want 5 requests over 2 s (round robin)", in.ID, in.Rate.RPS, in.Rate.P99Ms)
		}
	}

	// Served on the admin listener.
	rec := adminGet(t, NewAdmin(h.gw, opts), "/api/dashboard")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || !strings.Contains(rec.Body.String(), `"instances"`) {
		t.Errorf("/api/dashboard = %d %s", rec.Code, rec.Body)
	}
}

// A trace as Jaeger's query API returns it: the three hops of one request,
// listed out of order, with the tags the gateway and hello set.
const jaegerTraceJSON = `{"data":[{"traceID":"4bf92f3577b34da6a3ce929d0e0e4736","spans":[
 {"traceID":"4bf92f3577b34da6a3ce929d0e0e4736","spanID":"c3","operationName":"GET /","references":[{"refType":"CHILD_OF","traceID":"4bf92f3577b34da6a3ce929d0e0e4736","spanID":"b2"}],
  "startTime":1700000000000400,"duration":300,"processID":"p2","tags":[{"key":"span.kind","type":"string","value":"server"},{"key":"http.response.status_code","type":"int64","value":200}]},
 {"traceID":"4bf92f3577b34da6a3ce929d0e0e4736","spanID":"a1","operationName":"GET /","references":[],
  "startTime":1700000000000000,"duration":1000,"processID":"p1","tags":[{"key":"span.kind","type":"string","value":"server"},{"key":"http.response.status_code","type":"int64","value":200},{"key":"hopgate.route","type":"string","value":"/"}]},
 {"traceID":"4bf92f3577b34da6a3ce929d0e0e4736","spanID":"b2","operationName":"GET","references":[{"refType":"CHILD_OF","traceID":"4bf92f3577b34da6a3ce929d0e0e4736","spanID":"a1"}],
  "startTime":1700000000000200,"duration":700,"processID":"p1","tags":[{"key":"span.kind","type":"string","value":"client"},{"key":"hopgate.instance.id","type":"string","value":"hello-1"},{"key":"hopgate.instance.node","type":"string","value":"n1"},{"key":"hopgate.attempt","type":"int64","value":1},{"key":"server.address","type":"string","value":"127.0.0.1"},{"key":"server.port","type":"int64","value":8081},{"key":"http.response.status_code","type":"int64","value":200}]}
 ],"processes":{"p1":{"serviceName":"hopgate","tags":[]},"p2":{"serviceName":"hello","tags":[]}}}],"total":0,"limit":0,"offset":0,"errors":null}`

func TestWaterfallFromJaegerTrace(t *testing.T) {
	var jr jaegerTraces
	if err := json.Unmarshal([]byte(jaegerTraceJSON), &jr); err != nil {
		t.Fatal(err)
	}
	traces := convertTraces(jr, "http://jaeger:16686/", 5)
	if len(traces) != 1 {
		t.Fatalf("%d traces", len(traces))
	}
	tr := traces[0]
	if tr.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || tr.URL != "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736" ||
		tr.Operation != "GET /" || tr.Service != "hopgate" || tr.Status != 200 || tr.Error || tr.DurationMs != 1 {
		t.Errorf("trace: %+v", tr)
	}
	if !tr.Start.Equal(time.UnixMicro(1700000000000000)) {
		t.Errorf("start %v", tr.Start)
	}
	want := []HopDoc{
		{SpanID: "a1", Service: "hopgate", Operation: "GET /", Kind: "server", Depth: 0, OffsetMs: 0, DurationMs: 1, Status: 200},
		{SpanID: "b2", ParentID: "a1", Service: "hopgate", Operation: "GET", Kind: "client", Depth: 1, OffsetMs: 0.2, DurationMs: 0.7,
			Status: 200, Instance: "hello-1", Node: "n1", Attempt: 1, Peer: "127.0.0.1:8081"},
		{SpanID: "c3", ParentID: "b2", Service: "hello", Operation: "GET /", Kind: "server", Depth: 2, OffsetMs: 0.4, DurationMs: 0.3, Status: 200},
	}
	if len(tr.Hops) != len(want) {
		t.Fatalf("hops: %+v", tr.Hops)
	}
	for i := range want {
		if tr.Hops[i] != want[i] {
			t.Errorf("hop %d:\n got %+v\nwant %+v", i, tr.Hops[i], want[i])
		}
	}
}

func TestWaterfallOddTraces(t *testing.T) {
	// A span whose parent is missing (not exported yet) is drawn as a root;
	// a failed attempt is an error; an empty trace has no hops.
	jt := jaegerTrace{TraceID: "t", Processes: map[string]jaegerProcess{"p": {ServiceName: "hopgate"}}, Spans: []jaegerSpan{
		{TraceID: "t", SpanID: "x", OperationName: "GET", StartTime: 20, Duration: 5, ProcessID: "p",
			References: []struct {
				RefType string `json:"refType"`
				TraceID string `json:"traceID"`
				SpanID  string `json:"spanID"`
			}{{RefType: "CHILD_OF", TraceID: "t", SpanID: "missing"}},
			Tags: []jaegerTag{{Key: "error", Type: "bool", Value: true}, {Key: "hopgate.retry.reason", Value: "connect_failure"}}},
		{TraceID: "t", SpanID: "y", OperationName: "GET /", StartTime: 10, Duration: 30, ProcessID: "p",
			Tags: []jaegerTag{{Key: "otel.status_code", Value: "ERROR"}}},
	}}
	doc := waterfall(jt, "")
	if len(doc.Hops) != 2 || doc.Hops[0].SpanID != "y" || doc.Hops[1].SpanID != "x" || doc.Hops[1].Depth != 0 {
		t.Fatalf("hops: %+v", doc.Hops)
	}
	if !doc.Hops[0].Error || !doc.Hops[1].Error || doc.Hops[1].Retry != "connect_failure" || !doc.Error || doc.URL != "" {
		t.Errorf("errors: %+v", doc)
	}
	if doc.Hops[1].OffsetMs != 0.01 {
		t.Errorf("offset %v", doc.Hops[1].OffsetMs)
	}
	if empty := waterfall(jaegerTrace{TraceID: "e"}, "u"); len(empty.Hops) != 0 {
		t.Errorf("empty trace: %+v", empty)
	}
}

func TestTracesEndpointReadsJaeger(t *testing.T) {
	var query string
	jaeger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/traces" {
			http.NotFound(w, r)
			return
		}
		query = r.URL.RawQuery
		_, _ = w.Write([]byte(jaegerTraceJSON))
	}))
	t.Cleanup(jaeger.Close)
	gw := New(Options{})
	admin := NewAdmin(gw, AdminOptions{JaegerQuery: jaeger.URL, JaegerService: "hopgate"})
	rec := adminGet(t, admin, "/api/traces?route=/&limit=3")
	if rec.Code != 200 {
		t.Fatalf("/api/traces = %d %s", rec.Code, rec.Body)
	}
	var doc TracesDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.JaegerUI != jaeger.URL || len(doc.Traces) != 1 || len(doc.Traces[0].Hops) != 3 || doc.Error != "" {
		t.Errorf("doc: %+v", doc)
	}
	for _, want := range []string{"service=hopgate", "limit=3", "lookback=1h", `tags=%7B%22hopgate.route%22%3A%22%2F%22%7D`} {
		if !strings.Contains(query, want) {
			t.Errorf("query %q lacks %s", query, want)
		}
	}

	// Links go to the UI as browsers reach it, when that differs.
	rec = adminGet(t, NewAdmin(gw, AdminOptions{JaegerQuery: jaeger.URL, JaegerUI: "http://localhost:16686/"}), "/api/traces?route=/")
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc.JaegerUI != "http://localhost:16686" ||
		len(doc.Traces) != 1 || !strings.HasPrefix(doc.Traces[0].URL, "http://localhost:16686/trace/") {
		t.Errorf("with -jaeger-ui: %s", rec.Body)
	}

	// Jaeger down: a 502 that says so.
	jaeger.Close()
	rec = adminGet(t, admin, "/api/traces?route=/")
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "jaeger query API") {
		t.Errorf("Jaeger down: %d %s", rec.Code, rec.Body)
	}
	// No Jaeger configured: a 404 naming the flag.
	rec = adminGet(t, NewAdmin(gw, AdminOptions{}), "/api/traces?route=/")
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "-jaeger-query") {
		t.Errorf("no Jaeger: %d %s", rec.Code, rec.Body)
	}
}
