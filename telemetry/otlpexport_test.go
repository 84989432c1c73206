package telemetry

import (
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// receiver keeps the spans a collector was sent, with their resources.
type receiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	res   []string // each span's service.name
	gzip  bool     // a request came compressed
}

func (r *receiver) take(req *coltrace.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, s)
				r.res = append(r.res, service)
			}
		}
	}
}

// readExport reads an OTLP/HTTP export request, gzip-compressed or not,
// as a collector does.
func readExport(r *http.Request) (req *coltrace.ExportTraceServiceRequest, gzipped bool, err error) {
	var body io.Reader = r.Body
	if gzipped = r.Header.Get("Content-Encoding") == "gzip"; gzipped {
		if body, err = gzip.NewReader(r.Body); err != nil {
			return nil, true, err
		}
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, gzipped, err
	}
	req = &coltrace.ExportTraceServiceRequest{}
	return req, gzipped, proto.Unmarshal(b, req)
}

// httpReceiver is an OTLP/HTTP collector.
func httpReceiver(t *testing.T, r *receiver) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		msg, gzipped, err := readExport(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.gzip = r.gzip || gzipped
		r.mu.Unlock()
		r.take(msg)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// grpcReceiver is an OTLP/gRPC collector.
type grpcReceiver struct {
	coltrace.UnimplementedTraceServiceServer
	r *receiver
}

func (g grpcReceiver) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	g.r.take(req)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

func startGRPCReceiver(t *testing.T, r *receiver) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(srv, grpcReceiver{r: r})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return "http://" + ln.Addr().String()
}

// Spans reach a real collector over each OTLP protocol, through the OTel
// clients, with their names, attributes, parents and resource intact.
func TestSetupExportsOverEachOTLPProtocol(t *testing.T) {
	for _, tt := range []struct {
		name, protocol, compression string
		start                       func(*testing.T, *receiver) string
	}{
		{"http", "http/protobuf", "", httpReceiver},
		{"http gzip", "http/protobuf", "gzip", httpReceiver},
		{"grpc", "grpc", "", startGRPCReceiver},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clearOTEL(t)
			r := &receiver{}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tt.start(t, r))
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tt.protocol)
			t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", tt.compression)
			t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
			shutdown, err := Setup(context.Background(), Options{ServiceName: "gw"})
			if err != nil {
				t.Fatal(err)
			}
			tracer := otel.GetTracerProvider().Tracer("t")
			const requests = 300
			for i := range requests {
				ctx, server := tracer.Start(context.Background(), "GET", trace.WithSpanKind(trace.SpanKindServer))
				_, client := tracer.Start(ctx, "GET", trace.WithSpanKind(trace.SpanKindClient),
					trace.WithAttributes(attribute.Int("hopgate.attempt", i), attribute.Bool("retried", false)))
				client.End()
				server.End()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := shutdown(ctx); err != nil {
				t.Fatal(err)
			}

			r.mu.Lock()
			defer r.mu.Unlock()
			if r.gzip != (tt.compression == "gzip") {
				t.Fatalf("OTEL_EXPORTER_OTLP_COMPRESSION=%q: requests compressed: %v", tt.compression, r.gzip)
			}
			if len(r.spans) != 2*requests {
				t.Fatalf("the collector received %d spans, want %d", len(r.spans), 2*requests)
			}
			servers := map[string]bool{}
			for _, s := range r.spans {
				if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
					servers[string(s.SpanId)] = true
				}
			}
			attempts := map[int64]bool{}
			for i, s := range r.spans {
				if r.res[i] != "gw" {
					t.Fatalf("span %d: service.name %q, want gw", i, r.res[i])
				}
				if s.Name != "GET" || len(s.TraceId) != 16 || len(s.SpanId) != 8 || s.EndTimeUnixNano < s.StartTimeUnixNano {
					t.Fatalf("span %d is malformed: %v", i, s)
				}
				if s.Kind != tracepb.Span_SPAN_KIND_CLIENT {
					continue
				}
				if !servers[string(s.ParentSpanId)] {
					t.Fatalf("client span %d: parent %x is none of the server spans", i, s.ParentSpanId)
				}
				got := map[string]any{}
				for _, kv := range s.Attributes {
					switch v := kv.Value.Value.(type) {
					case *commonpb.AnyValue_IntValue:
						got[kv.Key] = v.IntValue
					case *commonpb.AnyValue_BoolValue:
						got[kv.Key] = v.BoolValue
					default:
						got[kv.Key] = v
					}
				}
				if got["retried"] != false || len(got) != 2 {
					t.Fatalf("client span %d: attributes %v", i, got)
				}
				attempts[got["hopgate.attempt"].(int64)] = true
			}
			if len(attempts) != requests {
				t.Fatalf("%d distinct attempt numbers arrived, want %d", len(attempts), requests)
			}
		})
	}
}

func TestSetupRejectsAnUnknownOTLPProtocol(t *testing.T) {
	clearOTEL(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
	_, err := Setup(context.Background(), Options{ServiceName: "t"})
	if err == nil || !strings.Contains(err.Error(), `"http/json"`) {
		t.Fatalf("err = %v, want one naming the protocol", err)
	}
}
