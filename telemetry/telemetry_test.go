package telemetry

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func clearOTEL(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
		"OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"} {
		t.Setenv(k, "")
	}
}

func TestSetupWithoutExporterInstallsNoop(t *testing.T) {
	clearOTEL(t)
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	shutdown, err := Setup(context.Background(), Options{ServiceName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	// The no-op provider, by name: the gateway skips spans on seeing it.
	if _, isNoop := otel.GetTracerProvider().(noop.TracerProvider); !isNoop {
		t.Errorf("no exporter configured: tracer provider = %T, want the no-op one", otel.GetTracerProvider())
	}
	// Incoming context must still pass through: the propagator is set.
	if fields := otel.GetTextMapPropagator().Fields(); !contains(fields, "traceparent") || !contains(fields, "baggage") {
		t.Errorf("propagator fields = %v, want traceparent and baggage", fields)
	}
}

func TestSetupWithExporterInstallsSDK(t *testing.T) {
	clearOTEL(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	shutdown, err := Setup(context.Background(), Options{ServiceName: "t", InstanceID: "i-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if _, isSDK := otel.GetTracerProvider().(*sdktrace.TracerProvider); !isSDK {
		t.Errorf("tracer provider = %T, want the SDK's", otel.GetTracerProvider())
	}
}

func TestSetupRejectsUnknownExporter(t *testing.T) {
	clearOTEL(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
	if _, err := Setup(context.Background(), Options{ServiceName: "t"}); err == nil {
		t.Fatal("no error for an unknown exporter")
	}
}

func TestSetupDisabled(t *testing.T) {
	clearOTEL(t)
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if _, err := Setup(context.Background(), Options{ServiceName: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, isNoop := otel.GetTracerProvider().(noop.TracerProvider); !isNoop {
		t.Errorf("OTEL_SDK_DISABLED=true: tracer provider = %T, want the no-op one", otel.GetTracerProvider())
	}
}

func TestLogFlags(t *testing.T) {
	tests := []struct {
		env     map[string]string
		args    []string
		level   hclog.Level
		json    bool
		wantErr string
	}{
		{level: hclog.Info},
		{args: []string{"-log-level", "debug", "-log-format", "json"}, level: hclog.Debug, json: true},
		{env: map[string]string{"HOPGATE_LOG_LEVEL": "warn", "HOPGATE_LOG_FORMAT": "json"}, level: hclog.Warn, json: true},
		{env: map[string]string{"HOPGATE_LOG_LEVEL": "warn"}, args: []string{"-log-level", "error"}, level: hclog.Error},
		{env: map[string]string{"HOPGATE_LOG_LEVEL": "loud"}, wantErr: `HOPGATE_LOG_LEVEL="loud"`},
		{env: map[string]string{"HOPGATE_LOG_FORMAT": "xml"}, wantErr: `HOPGATE_LOG_FORMAT="xml"`},
		{args: []string{"-log-level", "off"}, wantErr: `invalid value "off" for flag -log-level`},
		{args: []string{"-log-format", "xml"}, wantErr: `invalid value "xml" for flag -log-format`},
	}
	for _, tt := range tests {
		t.Setenv("HOPGATE_LOG_LEVEL", tt.env["HOPGATE_LOG_LEVEL"])
		t.Setenv("HOPGATE_LOG_FORMAT", tt.env["HOPGATE_LOG_FORMAT"])
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		lf, err := RegisterLogFlags(fs)
		if err == nil {
			err = fs.Parse(tt.args)
		}
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v %v: err = %v, want %q", tt.env, tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || lf.Level != tt.level || lf.JSON != tt.json {
			t.Errorf("%v %v: %+v %v, want level %v json %v", tt.env, tt.args, lf, err, tt.level, tt.json)
		}
	}
}

func TestTraceArgsInJSONLogs(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger("t", &LogFlags{Level: hclog.Info, JSON: true}, &buf)
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	log.Info("request", TraceArgs(ctx)...)
	out := buf.String()
	if !strings.Contains(out, `"trace_id":"`+span.SpanContext().TraceID().String()) ||
		!strings.Contains(out, `"span_id":"`+span.SpanContext().SpanID().String()) {
		t.Errorf("log line %q lacks the trace and span ids", out)
	}
	if TraceArgs(context.Background()) != nil {
		t.Error("TraceArgs without a span should be nil")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
