package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/hopgate/hopgate/discovery"
)

func TestAccessLogJSON(t *testing.T) {
	good := newTestBackend(t, "good")
	gw := New(Options{Settings: roundRobinSettings()})
	gw.Apply(snapshot(&discovery.Service{Name: "web", Instances: []discovery.Instance{good.instance("/")}}))
	for _, on := range []bool{true, false} {
		var buf bytes.Buffer
		log := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, JSONFormat: true, Output: &buf})
		p := NewProxy(gw, ProxyOptions{Logger: log, AccessLog: on, TracerProvider: sdktrace.NewTracerProvider(),
			Propagator: propagation.TraceContext{}})
		srv := httptest.NewServer(p)
		if code, _ := do(t, "GET", srv.URL+"/", nil); code != 200 {
			t.Fatal(code)
		}
		srv.Close()
		if !on {
			if buf.Len() != 0 {
				t.Errorf("-access-log=false still logs at info: %s", buf.String())
			}
			continue
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &line); err != nil {
			t.Fatalf("not one JSON line: %q", buf.String())
		}
		if line["@level"] != "info" || line["@message"] != "request" || line["route"] != "/" || line["status"] != 200.0 ||
			line["attempts"] != 1.0 || line["upstream"] != good.srv.Listener.Addr().String() ||
			len(line["trace_id"].(string)) != 32 || line["duration_ms"] == nil || line["duration"] == nil {
			t.Errorf("access log line: %v", line)
		}
	}
}

// Under the no-op tracer provider the proxy starts no spans, yet trace
// context behaves as with spans: a trusted caller's reaches the instance
// and names the access log line's trace; anyone else's goes no further.
func TestTraceContextWithoutSpans(t *testing.T) {
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	const parent = "00-" + traceID + "-b7ad6b7169203331-01"
	for _, trusted := range []bool{true, false} {
		rec := newTestBackend(t, "app-1")
		settings := roundRobinSettings()
		if trusted {
			settings.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		}
		gw := New(Options{Settings: settings})
		gw.Apply(edgeSnapshot(rec, "/"))
		var buf bytes.Buffer
		log := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, JSONFormat: true, Output: &buf})
		p := NewProxy(gw, ProxyOptions{Logger: log, AccessLog: true, TracerProvider: noop.NewTracerProvider(),
			Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})})
		if p.spans {
			t.Fatal("spans on under the no-op provider")
		}
		srv := httptest.NewServer(p)
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.Header.Set("Traceparent", parent)
		req.Header.Set("Baggage", "user=alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.Close()

		got := rec.last().Header
		var line map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &line); err != nil {
			t.Fatalf("not one JSON line: %q", buf.String())
		}
		if trusted {
			if got.Get("Traceparent") != parent || got.Get("Baggage") != "user=alice" {
				t.Errorf("trusted caller: instance saw traceparent %q baggage %q, want them passed on", got.Get("Traceparent"), got.Get("Baggage"))
			}
			if line["trace_id"] != traceID {
				t.Errorf("trusted caller: access log trace_id %v, want %s", line["trace_id"], traceID)
			}
			continue
		}
		if got.Get("Traceparent") != "" || got.Get("Baggage") != "" {
			t.Errorf("untrusted caller: instance saw traceparent %q baggage %q, want none", got.Get("Traceparent"), got.Get("Baggage"))
		}
		if _, ok := line["trace_id"]; ok {
			t.Errorf("untrusted caller: access log names trace %v", line["trace_id"])
		}
	}
}
