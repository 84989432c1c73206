package telemetry

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// spanExporter is the exporter OTEL_TRACES_EXPORTER names, as autoexport
// makes it, except that OTLP, the default, is hopgate's otlpExporter: the
// OTel OTLP client for the protocol asked for (configured by the
// OTEL_EXPORTER_OTLP_* variables, with its retries, TLS and compression)
// carrying spans hopgate encodes itself.
func spanExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	if name := os.Getenv("OTEL_TRACES_EXPORTER"); name != "" && name != "otlp" {
		return autoexport.NewSpanExporter(ctx)
	}
	var client otlptrace.Client
	switch proto := otlpProtocol(); proto {
	case "http/protobuf":
		client = otlptracehttp.NewClient()
	case "grpc":
		client = otlptracegrpc.NewClient()
	default:
		// http/json included, which autoexport refuses too: JSON would
		// leave out the spans, carried as unknown protobuf fields.
		return nil, fmt.Errorf("OTLP protocol %q: want http/protobuf or grpc", proto)
	}
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	return &otlpExporter{client: client}, nil
}

// otlpProtocol is the OTLP protocol the environment asks for traces,
// http/protobuf by default (as autoexport has it).
func otlpProtocol() string {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return "http/protobuf"
}

// otlpExporter hands an OTLP client spans already in wire form. The
// client takes generated messages, so each resource's encoded body goes
// in as the unknown fields of an otherwise empty ResourceSpans: protobuf
// writes unknown fields out as they are, so the request on the wire is
// the one the client would have built. The client marshals before
// UploadTraces returns, retries included, so the encoder's buffers are
// free again for the next batch.
type otlpExporter struct {
	client otlptrace.Client

	mu   sync.Mutex // one batch at a time through enc and msgs
	enc  spanEncoder
	msgs []*tracepb.ResourceSpans
	// stopped is apart from mu: Shutdown stops the client while an
	// upload may be under way, which is how a retrying upload is cut short.
	stopped atomic.Bool
}

func (e *otlpExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.stopped.Load() {
		return nil // spans after shutdown go nowhere
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	bodies := e.enc.encode(spans)
	if len(bodies) == 0 {
		return nil
	}
	for len(e.msgs) < len(bodies) {
		e.msgs = append(e.msgs, &tracepb.ResourceSpans{})
	}
	msgs := e.msgs[:len(bodies)]
	for i, body := range bodies {
		msgs[i].ProtoReflect().SetUnknown(protoreflect.RawFields(body))
	}
	err := e.client.UploadTraces(ctx, msgs)
	for _, m := range msgs {
		m.ProtoReflect().SetUnknown(nil)
	}
	if err != nil {
		return fmt.Errorf("traces export: %w", err)
	}
	return nil
}

func (e *otlpExporter) Shutdown(ctx context.Context) error {
	if e.stopped.Swap(true) {
		return nil
	}
	return e.client.Stop(ctx)
}
