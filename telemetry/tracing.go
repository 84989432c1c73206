// Package telemetry sets up OpenTelemetry tracing and go-hclog logging the
// same way for every hopgate binary. Configuration comes from the standard
// OTEL_* environment variables; nothing here invents its own.
package telemetry

import (
	"context"
	"errors"
	"os"

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
	exp, err := autoexport.NewSpanExporter(ctx)
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
	// OTEL_BSP_*: the SDK reads both when no option overrides them.
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
	)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
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
