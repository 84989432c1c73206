package main

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHelloServesItsRequestMetrics(t *testing.T) {
	h := newHandler(info{Instance: "i-1", Service: "hello"}, faults{}, hclog.NewNullLogger())
	for _, p := range []string{"/", "/x", "/healthz", "/metrics"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics = %d", rec.Code)
	}
	body := rec.Body.String()
	// /healthz and /metrics are not counted: only the two hello answers.
	for _, want := range []string{`hello_http_requests_total{code="2xx",method="GET"} 2`,
		`hello_http_request_duration_seconds_count 2`, `hello_http_inflight_requests 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}
