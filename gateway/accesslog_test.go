package gateway

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

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
