package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
)

// stallingCollector is an OTLP/HTTP trace receiver whose first export
// waits until release is closed, as a busy collector's does; it counts
// the spans it receives.
type stallingCollector struct {
	*httptest.Server
	spans   atomic.Int64
	stalled chan struct{} // closed when the first export arrives
	release chan struct{}
}

func newStallingCollector(t *testing.T) *stallingCollector {
	c := &stallingCollector{stalled: make(chan struct{}), release: make(chan struct{})}
	var first sync.Once
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _, err := readExport(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		first.Do(func() {
			close(c.stalled)
			<-c.release
		})
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				c.spans.Add(int64(len(ss.Spans)))
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(c.Close)
	return c
}

// sendThroughStall ends n spans while the collector holds its first
// export, then lets it go, flushes, and returns how many it received.
func sendThroughStall(t *testing.T, n int) int64 {
	t.Helper()
	c := newStallingCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	shutdown, err := Setup(context.Background(), Options{ServiceName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	tracer := otel.GetTracerProvider().Tracer("t")
	for i := 0; i < n; i++ {
		if i == n-1 {
			// The first export must be held before the burst ends, or
			// this measures nothing.
			select {
			case <-c.stalled:
			case <-time.After(10 * time.Second):
				t.Fatal("no export reached the collector")
			}
		}
		_, span := tracer.Start(context.Background(), "s")
		span.End()
	}
	close(c.release)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	return c.spans.Load()
}

// A collector that is slow for a moment loses none of a burst of spans
// the size a gateway makes in a few hundred milliseconds: the SDK's
// default queue (2048) would drop most of this one.
func TestSetupKeepsSpansThroughACollectorStall(t *testing.T) {
	clearOTEL(t)
	const n = 8000
	if got := sendThroughStall(t, n); got != n {
		t.Errorf("the collector received %d of %d spans", got, n)
	}
}

// OTEL_BSP_* still rule when set: a small queue drops what it cannot
// hold, as asked.
func TestSetupBatchingFromEnvironment(t *testing.T) {
	clearOTEL(t)
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
	const n = 8000
	if got := sendThroughStall(t, n); got >= n/2 {
		t.Errorf("OTEL_BSP_MAX_QUEUE_SIZE=100: the collector received %d of %d spans through a stall, want most dropped", got, n)
	}
}

func TestSetupRejectsBadBatchSizes(t *testing.T) {
	for _, tt := range []struct{ key, value string }{
		{"OTEL_BSP_MAX_QUEUE_SIZE", "lots"},
		{"OTEL_BSP_MAX_QUEUE_SIZE", "0"},
		{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-5"},
	} {
		clearOTEL(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "console")
		t.Setenv(tt.key, tt.value)
		_, err := Setup(context.Background(), Options{ServiceName: "t"})
		if err == nil || !strings.Contains(err.Error(), tt.key+`="`+tt.value+`"`) {
			t.Errorf("%s=%s: err = %v, want one naming it", tt.key, tt.value, err)
		}
		t.Setenv(tt.key, "")
	}
}
