// Package telemetry sets up OpenTelemetry tracing and go-hclog logging the
// same way for every hopgate binary. Configuration comes from the standard
// OTEL_* environment variables; nothing here invents its own.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace/noop"
)

// Options describe the process for the trace resource. OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override them.
type Options struct {
	ServiceName string
	InstanceID  string
	Version     string
}

// Setup installs the global propagators (W3C trace context and baggage) and,
// when an exporter is configured, a tracer provider that batches spans to it.
// With no exporter configured (neither OTEL_TRACES_EXPORTER nor an OTLP
// endpoint variable is set, or OTEL_TRACES_EXPORTER=none) nothing is
// exported: the global tracer provider is then the no-op one, by which the
// gateway knows to skip spans altogether, and incoming trace context still
// flows through to upstreams.
//
// The returned shutdown flushes buffered spans; call it on the way out.
func Setup(ctx context.Context, opts Options) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{}))
	off := func() (func(context.Context) error, error) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		return func(context.Context) error { return nil }, nil
	}

	if os.Getenv("OTEL_SDK_DISABLED") == "true" || !exporterConfigured() {
		return off()
	}
	batchOpts, err := batching()
	if err != nil {
		return nil, err
	}
	exp, err := spanExporter(ctx)
	if err != nil {
		return nil, err
	}
	if autoexport.IsNoneSpanExporter(exp) {
		return off()
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(
			semconv.ServiceName(opts.ServiceName),
			semconv.ServiceInstanceID(opts.InstanceID),
			semconv.ServiceVersion(opts.Version),
		),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		resource.WithHost(),
		resource.WithTelemetrySDK(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, err
	}
	// The sampler comes from OTEL_TRACES_SAMPLER(_ARG) and the batching from
	// OTEL_BSP_*, which the SDK reads; the batch sizes are hopgate's when
	// neither is set (batching).
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, batchOpts...),
		sdktrace.WithResource(res),
	)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Batching for a process that makes spans by the ten thousand a second,
// as a gateway does: two per request. The SDK's defaults (a queue of 2048,
// batches of 512) drop spans silently once the queue fills while an
// export is under way; measured flat out on two cores beside a local
// Jaeger, they lost 6-12% of a gateway's spans. This queue holds a few
// hundred milliseconds of them at such rates (at most about 10 MB), and
// the larger batches cost the collector less per span.
const (
	maxQueueSize       = 8192
	maxExportBatchSize = 2048
)

// batching returns hopgate's batching options, or none when the
// environment sets either size: then the SDK's rules apply to both, so
// the two never disagree. A size that is set must be a positive number:
// the SDK would quietly use its default in place of a typo.
func batching() ([]sdktrace.BatchSpanProcessorOption, error) {
	set := false
	for _, k := range []string{"OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"} {
		v := os.Getenv(k)
		if v == "" {
			continue
		}
		if n, err := strconv.Atoi(v); err != nil || n <= 0 {
			return nil, fmt.Errorf("%s=%q: want a positive number of spans", k, v)
		}
		set = true
	}
	if set {
		return nil, nil
	}
	return []sdktrace.BatchSpanProcessorOption{
		sdktrace.WithMaxQueueSize(maxQueueSize),
		sdktrace.WithMaxExportBatchSize(maxExportBatchSize),
	}, nil
}

// exporterConfigured reports whether the environment asks for trace export
// at all. autoexport alone would default to OTLP on localhost, which turns
// "nothing configured" into a stream of connection errors.
func exporterConfigured() bool {
	for _, k := range []string{
		"OTEL_TRACES_EXPORTER",
		"OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	} {
		if os.Getenv(k) != "" {
			return true
		}
	}
	return false
}
