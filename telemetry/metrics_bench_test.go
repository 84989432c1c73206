package telemetry

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/trace"
)

// The choice of client_golang over the OpenTelemetry metrics SDK (with its
// Prometheus exporter) rests on these two benchmarks: the same record for
// one request (a counter by route, method and status class, and a duration
// histogram by route) from a sampled span's context, each library used
// its cheapest way (client_golang: a handle resolved once; OTel: a
// precomputed attribute set), both exporting to a Prometheus registry with
// exemplars.

func sampledContext() context.Context {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1},
		TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

func BenchmarkRecordClientGolang(b *testing.B) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total"}, []string{"route", "method", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duration_seconds", Buckets: LatencyBuckets}, []string{"route"})
	reg.MustRegister(requests, duration)
	counter := requests.WithLabelValues("/", "GET", "2xx")
	hist := duration.WithLabelValues("/")
	var ex Exemplars
	sc := trace.SpanContextFromContext(sampledContext())
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		counter.Inc()
		ex.Observe(hist, 0.0012, sc, now)
	}
}

func BenchmarkRecordOTel(b *testing.B) {
	exp, err := otelprom.New(otelprom.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		b.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithView(sdkmetric.NewView(
		sdkmetric.Instrument{Name: "duration"},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: LatencyBuckets}})))
	defer mp.Shutdown(context.Background())
	meter := mp.Meter("bench")
	counter, _ := meter.Int64Counter("requests")
	hist, _ := meter.Float64Histogram("duration", metric.WithUnit("s"))
	reqAttrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("route", "/"),
		attribute.String("method", "GET"), attribute.String("code", "2xx")))
	durAttrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("route", "/")))
	ctx := sampledContext()
	b.ReportAllocs()
	for b.Loop() {
		_ = time.Now()
		counter.Add(ctx, 1, reqAttrs)
		hist.Record(ctx, 0.0012, durAttrs)
	}
}
