package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strconv"
	"testing"

	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/gateway/internal/cputime"
	"github.com/hopgate/hopgate/telemetry"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkProxy is one proxied GET through the whole handler (edge
// checks, routing, picking, the upstream transport over loopback, the
// response copy), with tracing and metrics off and on, called without a
// server; its allocs/op include the in-process net/http upstream's.
// BenchmarkProxyServed is the gateway's own figure.
func BenchmarkProxy(b *testing.B) {
	port := benchBackend(b)
	snap := snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("b", port, "/")}})
	for _, tc := range []struct {
		name      string
		opts      ProxyOptions
		noMetrics bool
	}{
		{"tracing=off,metrics=off", ProxyOptions{TracerProvider: noop.NewTracerProvider(), Propagator: propagation.TraceContext{}}, true},
		{"tracing=off,metrics=on", ProxyOptions{TracerProvider: noop.NewTracerProvider(), Propagator: propagation.TraceContext{}}, false},
		{"tracing=on,metrics=on", ProxyOptions{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder())),
			Propagator: propagation.TraceContext{}}, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			gw := New(Options{NoMetrics: tc.noMetrics})
			gw.Apply(snap)
			p := NewProxy(gw, tc.opts)
			benchGET(b, p, "/hello", 0)
		})
	}
}

// BenchmarkProxyScale is the served GET of BenchmarkProxyServed on a
// small table and a large one: routing and picking must cost the same
// with 10 routes of 3 instances and 10,000 routes, the matched one with
// 1,000 instances (all of them one canned upstream, registered under
// distinct IDs).
//
// Eight requests per instance go before measuring, so that the lazily
// made metric series of 1,000 instances are not counted against the
// measured requests: the default policy picks at random, and after two
// per instance about one instance in eight has still had none.
func BenchmarkProxyScale(b *testing.B) {
	port := cannedUpstream(b)
	for _, size := range []struct{ routes, instances int }{{10, 3}, {10000, 1000}} {
		b.Run(fmt.Sprintf("routes=%d,instances=%d", size.routes, size.instances), func(b *testing.B) {
			var svcs []*discovery.Service
			for i := range size.routes {
				svc := &discovery.Service{Name: fmt.Sprintf("svc-%05d", i)}
				n := 1
				if i == 7 {
					n = size.instances
				}
				for j := range n {
					svc.Instances = append(svc.Instances, instance(fmt.Sprintf("i-%04d", j), port, fmt.Sprintf("/svc/%d", i)))
				}
				svcs = append(svcs, svc)
			}
			gw := New(Options{})
			gw.Apply(snapshot(svcs...))
			p := NewProxy(gw, ProxyOptions{TracerProvider: noop.NewTracerProvider(), Propagator: propagation.TraceContext{}})
			benchServed(b, p, "/svc/7/users/42", 8*size.instances)
		})
	}
}

// BenchmarkProxyTraced is one proxied GET, served as BenchmarkProxyServed
// is, with every request sampled and exported over OTLP/HTTP, as
// telemetry.Setup wires it for the binary, to a collector that discards:
// the gateway's whole cost of tracing, export included. Each request
// comes fresh off the wire, without trace context, as a load generator's
// do.
func BenchmarkProxyTraced(b *testing.B) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer collector.Close()
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_SDK_DISABLED", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"} {
		b.Setenv(k, "")
	}
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	b.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	was := otel.GetTracerProvider()
	defer otel.SetTracerProvider(was)
	shutdown, err := telemetry.Setup(context.Background(), telemetry.Options{ServiceName: "hopgate"})
	if err != nil {
		b.Fatal(err)
	}
	defer shutdown(context.Background())
	port := cannedUpstream(b)
	gw := New(Options{})
	gw.Apply(snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("b", port, "/")}}))
	p := NewProxy(gw, ProxyOptions{TracerProvider: otel.GetTracerProvider(), Propagator: propagation.TraceContext{}})
	benchServed(b, p, "/hello", 100)
}

// benchBackend is the upstream of the proxy benchmarks; it returns its port.
func benchBackend(b *testing.B) int {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "Hello from bench")
	}))
	b.Cleanup(backend.Close)
	return backend.Listener.Addr().(*net.TCPAddr).Port
}

// benchGET proxies GET path through p for the benchmark's iterations,
// after warm requests that are not measured; cpu-ns/op includes the
// in-process upstream's CPU.
func benchGET(b *testing.B, p *Proxy, path string, warm int) {
	req := httptest.NewRequest("GET", "http://site"+path, nil)
	req.RemoteAddr = "127.0.0.1:40000"
	serve := func() {
		// The proxy edits the request's header as its own (forwarding
		// fields, trace context), as a handler may: each request must
		// arrive bare, not carrying the last one's traceparent.
		clear(req.Header)
		w := httptest.NewRecorder()
		p.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("status %d", w.Code)
		}
	}
	measure(b, warm, serve)
}

// measure runs op warm times unmeasured, then for the benchmark's
// iterations, reporting allocations and cpu-ns/op: the whole process's
// CPU time per op, steadier than ns/op on a shared machine.
func measure(b *testing.B, warm int, op func()) {
	for range warm {
		op()
	}
	b.ReportAllocs()
	user0, sys0 := cputime.Split()
	for b.Loop() {
		op()
	}
	user, sys := cputime.Split()
	b.ReportMetric(float64(user-user0+sys-sys0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(user-user0)/float64(b.N), "user-ns/op")
}

// BenchmarkProxyServed is one proxied GET the way the binary serves it:
// over a keep-alive loopback connection to the public server (h1), through
// the proxy with metrics on and spans off, to an upstream over loopback.
// Client and upstream speak canned HTTP/1.1 and allocate nothing, so
// allocs/op and B/op are the gateway's own.
func BenchmarkProxyServed(b *testing.B) {
	port := cannedUpstream(b)
	gw := New(Options{})
	gw.Apply(snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("b", port, "/")}}))
	p := NewProxy(gw, ProxyOptions{TracerProvider: noop.NewTracerProvider(), Propagator: propagation.TraceContext{}})
	benchServed(b, p, "/hello", 100)
}

// BenchmarkProxyLoops is BenchmarkProxyServed on event loops
// (-event-loops).
func BenchmarkProxyLoops(b *testing.B) {
	port := cannedUpstream(b)
	gw := New(Options{})
	gw.Apply(snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("b", port, "/")}}))
	p := NewProxy(gw, ProxyOptions{TracerProvider: noop.NewTracerProvider(), Propagator: propagation.TraceContext{}})
	benchServedOn(b, p, "/hello", 100, PublicOptions{EventLoops: true})
}

// benchServed serves p on loopback and sends it GET path over one
// keep-alive connection, for the benchmark's iterations, after warm
// requests that are not measured. cpu-ns/op is the whole process's CPU
// time per request: the canned client's and upstream's share is small
// and the same at every size.
//
// It runs as the binary does, with GOGC=400. At Go's default the
// collector costs a tenth more CPU per request, and scans a large table's
// live heap (about 1,000 times a small one's routes and metric series)
// four times as often.
func benchServed(b *testing.B, p *Proxy, path string, warm int) {
	benchServedOn(b, p, path, warm, PublicOptions{})
}

// benchServedOn is benchServed on a public server with opts.
func benchServedOn(b *testing.B, p *Proxy, path string, warm int, opts PublicOptions) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewPublicServer(ln, p, DefaultServerSettings, opts)
	go func() { _ = srv.Serve() }()
	b.Cleanup(func() { _ = srv.Close() })

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: site\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReader(conn)
	get := func() {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if ok, err := readCanned(br); err != nil || !ok {
			b.Fatalf("not a 200 (%v)", err)
		}
	}
	measure(b, warm, get)
}

// cannedUpstream serves one fixed answer to every request head, with no
// body read and nothing allocated per request; it returns its port.
func cannedUpstream(b *testing.B) int {
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sat, 28 Nov 2026 05:00:00 GMT\r\nContent-Length: 16\r\n\r\nHello from bench")
	addr, _ := scriptedUpstream(b, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := skipHead(br); err != nil {
				return
			}
			if _, err := c.Write(answer); err != nil {
				return
			}
		}
	})
	return portOf(b, addr)
}

// skipHead reads an HTTP head through its blank line and returns the
// value of its Content-Length, 0 when it has none.
func skipHead(br *bufio.Reader) (int, error) {
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			return n, nil
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
}

// readCanned reads one answer to a canned client and reports whether it
// was a 200.
func readCanned(br *bufio.Reader) (bool, error) {
	line, err := br.Peek(12)
	if err != nil {
		return false, err
	}
	ok := bytes.HasPrefix(line, []byte("HTTP/1.1 200"))
	n, err := skipHead(br)
	if err != nil {
		return false, err
	}
	_, err = br.Discard(n)
	return ok, err
}
