package telemetry

import (
	"bytes"
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// wireClient is an OTLP client that does what the real ones do with a
// batch, marshal it, and keeps the last request it would have sent.
type wireClient struct {
	sent int
	last []byte
}

func (*wireClient) Start(context.Context) error { return nil }
func (*wireClient) Stop(context.Context) error  { return nil }
func (c *wireClient) UploadTraces(_ context.Context, rs []*tracepb.ResourceSpans) error {
	b, err := proto.Marshal(&coltrace.ExportTraceServiceRequest{ResourceSpans: rs})
	if err != nil {
		return err
	}
	c.sent, c.last = c.sent+1, b
	return nil
}

// received is the request c was last sent, as a collector reads it.
func (c *wireClient) received(t *testing.T) *coltrace.ExportTraceServiceRequest {
	t.Helper()
	if c.sent == 0 {
		t.Fatal("nothing was sent")
	}
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(c.last, &req); err != nil {
		t.Fatalf("the request does not parse: %v", err)
	}
	return &req
}

// viaOTel is what the OTel OTLP exporter sends for spans.
func viaOTel(t *testing.T, spans []sdktrace.ReadOnlySpan) *coltrace.ExportTraceServiceRequest {
	t.Helper()
	c := &wireClient{}
	exp := otlptrace.NewUnstarted(c)
	if err := exp.ExportSpans(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	return c.received(t)
}

// viaHopgate is what hopgate's exporter sends for spans, batch by batch
// through one exporter; it returns the last request.
func viaHopgate(t *testing.T, batches ...[]sdktrace.ReadOnlySpan) *coltrace.ExportTraceServiceRequest {
	t.Helper()
	c := &wireClient{}
	exp := &otlpExporter{client: c}
	for _, spans := range batches {
		if err := exp.ExportSpans(context.Background(), spans); err != nil {
			t.Fatal(err)
		}
	}
	return c.received(t)
}

// sameRequests fails unless want and got carry the same resources, scopes
// and spans. The OTel exporter orders resources by map iteration, so the
// resources are compared in the order of their encoded attributes.
func sameRequests(t *testing.T, want, got *coltrace.ExportTraceServiceRequest) {
	t.Helper()
	byResource := func(a, b *tracepb.ResourceSpans) int {
		ka, _ := proto.MarshalOptions{Deterministic: true}.Marshal(a.Resource)
		kb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(b.Resource)
		return bytes.Compare(ka, kb)
	}
	slices.SortFunc(want.ResourceSpans, byResource)
	slices.SortFunc(got.ResourceSpans, byResource)
	if !proto.Equal(want, got) {
		t.Fatalf("hopgate's request differs from the OTel exporter's\nwant:\n%s\ngot:\n%s",
			prototext.Format(want), prototext.Format(got))
	}
}

// everyValue is an attribute of each kind a span can hold, zero values
// included, which a receiver must still see as set.
func everyValue() []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.Bool("bool.false", false),
		attribute.Bool("bool.true", true),
		attribute.Int64("int.zero", 0),
		attribute.Int64("int.negative", -42),
		attribute.Int64("int.max", math.MaxInt64),
		attribute.Float64("float.zero", 0),
		attribute.Float64("float", -1.5),
		attribute.String("string.empty", ""),
		attribute.String("string", "héllo\x00world"),
		attribute.String("string.long", strings.Repeat("x", 300)), // a length of two bytes
		attribute.BoolSlice("bools", []bool{true, false}),
		attribute.Int64Slice("ints", []int64{0, 1, -1}),
		attribute.Float64Slice("floats", []float64{0, 2.5}),
		attribute.StringSlice("strings", []string{"", "a"}),
		attribute.StringSlice("strings.empty", []string{}),
		attribute.ByteSlice("bytes", []byte{0, 1, 2}),
		attribute.ByteSlice("bytes.empty", nil),
		attribute.Slice("mixed", attribute.IntValue(1), attribute.StringValue("two"),
			attribute.SliceValue(attribute.BoolValue(true))),
		attribute.Map("map", attribute.String("k", "v"), attribute.Int("n", 0),
			attribute.Map("inner", attribute.Bool("deep", true))),
		{Key: "empty"}, // a Value of no type
	}
}

func TestOTLPEncodingMatchesTheOTelExporter(t *testing.T) {
	tid := trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	state, err := trace.ParseTraceState("vendor=x,other=y")
	if err != nil {
		t.Fatal(err)
	}
	remoteParent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: trace.SpanID{9}, TraceFlags: trace.FlagsSampled, Remote: true})
	sc := func(sid byte, flags trace.TraceFlags) trace.SpanContext {
		return trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: tid, SpanID: trace.SpanID{sid}, TraceFlags: flags, TraceState: state})
	}
	resA := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.40.0",
		append(everyValue(), attribute.String("service.name", "a"))...)
	resB := resource.NewSchemaless(attribute.String("service.name", "b"))
	scope1 := instrumentation.Scope{Name: "one", Version: "1.2.3", SchemaURL: "https://example.com/s",
		Attributes: attribute.NewSet(attribute.String("scope.attr", "x"))}
	scope2 := instrumentation.Scope{Name: "two"}
	start := time.Unix(1700000000, 123456789)

	stubs := []tracetest.SpanStub{
		{ // a server span with every attribute kind, events, links and a remote parent
			Name: "GET /hello", SpanContext: sc(1, trace.FlagsSampled), Parent: remoteParent,
			SpanKind: trace.SpanKindServer, StartTime: start, EndTime: start.Add(time.Millisecond),
			Attributes: everyValue(), DroppedAttributes: 3,
			Events: []sdktrace.Event{
				{Name: "retry", Time: start.Add(time.Microsecond), Attributes: []attribute.KeyValue{attribute.Int("n", 2)}, DroppedAttributeCount: 1},
				{Name: "", Time: time.Time{}},
			},
			DroppedEvents: 5,
			Links: []sdktrace.Link{
				{SpanContext: remoteParent, Attributes: []attribute.KeyValue{attribute.String("why", "caller")}, DroppedAttributeCount: 2},
				{SpanContext: sc(7, 0)},
			},
			DroppedLinks:         1,
			Status:               sdktrace.Status{Code: codes.Error, Description: "upstream failed"},
			Resource:             resA,
			InstrumentationScope: scope1,
		},
		{ // a local child with the least a span can have
			Name: "GET", SpanContext: sc(2, 0), Parent: sc(1, trace.FlagsSampled),
			SpanKind: trace.SpanKindClient, StartTime: start, EndTime: start,
			Status: sdktrace.Status{Code: codes.Ok}, Resource: resA, InstrumentationScope: scope1,
		},
		{ // another scope of the same resource
			Name: "internal", SpanContext: sc(3, trace.FlagsSampled), SpanKind: trace.SpanKindInternal,
			StartTime: start, EndTime: start.Add(time.Hour), Resource: resA, InstrumentationScope: scope2,
		},
		{ // another resource; a kind OTLP has no number for; times before 1970
			Name: "consume", SpanContext: sc(4, trace.FlagsSampled), SpanKind: trace.SpanKind(99),
			StartTime: time.Unix(-5, 0), EndTime: time.Unix(-1, 0), Resource: resB,
			InstrumentationScope: scope2,
		},
		{ // back to the first resource and scope: grouped with them
			Name: "PUT", SpanContext: sc(5, trace.FlagsSampled), SpanKind: trace.SpanKindProducer,
			StartTime: start, EndTime: start.Add(time.Second), Resource: resA, InstrumentationScope: scope1,
		},
		{ // no resource, no scope
			Name: "bare", SpanContext: sc(6, trace.FlagsSampled), SpanKind: trace.SpanKindConsumer,
			StartTime: start, EndTime: start.Add(time.Second),
		},
	}
	spans := tracetest.SpanStubs(stubs).Snapshots()

	t.Run("one batch", func(t *testing.T) {
		sameRequests(t, viaOTel(t, spans), viaHopgate(t, spans))
	})
	t.Run("each span alone", func(t *testing.T) {
		for i := range spans {
			sameRequests(t, viaOTel(t, spans[i:i+1]), viaHopgate(t, spans[i:i+1]))
		}
	})
	t.Run("batches through one exporter", func(t *testing.T) {
		// The encoder keeps its buffers and encoded resources from batch
		// to batch: a batch must not carry anything of the one before.
		sameRequests(t, viaOTel(t, spans[3:]), viaHopgate(t, spans, spans[:2], spans[3:]))
	})
	t.Run("many spans", func(t *testing.T) {
		// A batch as large as a gateway's, whose fields need long lengths.
		var many []sdktrace.ReadOnlySpan
		for range 2048 {
			many = append(many, spans[0], spans[1])
		}
		sameRequests(t, viaOTel(t, many), viaHopgate(t, many))
	})
}

func TestOTLPEncoderLetsGoOfAnOutsizedBatch(t *testing.T) {
	var enc spanEncoder
	enc.encode(tracetest.SpanStubs{{Name: "big", Attributes: []attribute.KeyValue{
		attribute.String("blob", strings.Repeat("x", 2*maxKeptBuffer))}}}.Snapshots())
	if cap(enc.buf) <= maxKeptBuffer {
		t.Fatalf("the outsized batch took %d bytes, no more than the %d kept", cap(enc.buf), maxKeptBuffer)
	}
	small := tracetest.SpanStubs{{Name: "small"}}.Snapshots()
	enc.encode(small)
	if cap(enc.buf) > maxKeptBuffer {
		t.Errorf("after a small batch the encoder still holds %d bytes, want at most %d", cap(enc.buf), maxKeptBuffer)
	}
	sameRequests(t, viaOTel(t, small), viaHopgate(t, small))
}

func TestOTLPExporterSendsNothingForNoSpans(t *testing.T) {
	c := &wireClient{}
	exp := &otlpExporter{client: c}
	if err := exp.ExportSpans(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := exp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := exp.ExportSpans(context.Background(), tracetest.SpanStubs{{Name: "late"}}.Snapshots()); err != nil {
		t.Fatal(err)
	}
	if c.sent != 0 {
		t.Fatalf("sent %d requests, want none: an empty batch, then spans after shutdown", c.sent)
	}
}

// BenchmarkOTLPExport compares hopgate's encoding of a gateway's batch of
// spans (two a request) with the OTel exporter's conversion, both
// marshalled into a request as an OTLP client does.
func BenchmarkOTLPExport(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "hopgate"),
			attribute.String("host.name", "gateway-1"), attribute.String("telemetry.sdk.language", "go"))))
	tracer := tp.Tracer("github.com/hopgate/hopgate/gateway")
	for range 1024 {
		ctx, server := tracer.Start(context.Background(), "GET", trace.WithSpanKind(trace.SpanKindServer))
		_, client := tracer.Start(ctx, "GET", trace.WithSpanKind(trace.SpanKindClient))
		client.SetAttributes(attribute.String("http.request.method", "GET"), attribute.String("server.address", "10.0.0.7"),
			attribute.Int("server.port", 8080), attribute.String("url.full", "http://10.0.0.7:8080/hello"),
			attribute.String("hopgate.service", "hello"), attribute.String("hopgate.instance.id", "hello-7"),
			attribute.String("hopgate.instance.node", "node-1"), attribute.Int("hopgate.attempt", 1),
			attribute.Int("http.response.status_code", 200))
		client.End()
		server.SetAttributes(attribute.String("http.request.method", "GET"), attribute.String("url.path", "/hello"),
			attribute.String("server.address", "localhost:8080"), attribute.String("url.scheme", "http"),
			attribute.Int("http.response.status_code", 200), attribute.String("client.address", "127.0.0.1"),
			attribute.String("http.route", "/hello"), attribute.String("hopgate.route", "hello"),
			attribute.String("hopgate.service", "hello"), attribute.String("hopgate.lb.policy", "round_robin"))
		server.End()
	}
	spans := rec.Ended()
	for _, bc := range []struct {
		name string
		exp  sdktrace.SpanExporter
	}{
		{"hopgate", &otlpExporter{client: &wireClient{}}},
		{"otel", otlptrace.NewUnstarted(&wireClient{})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.exp.ExportSpans(context.Background(), spans); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
		})
	}
}
