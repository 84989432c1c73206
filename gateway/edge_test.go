package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// forEachServer runs an edge test against every public server: hopgate's
// own HTTP/1.1 server, the same on event loops, and net/http behind the
// edge listener (what serves when h2c or TLS is on). The edge's promises
// hold on all three.
func forEachServer(t *testing.T, test func(t *testing.T, opts PublicOptions)) {
	for _, s := range []struct {
		name string
		opts PublicOptions
	}{{"h1", PublicOptions{}}, {"loops", PublicOptions{EventLoops: true}}, {"net-http", PublicOptions{H2C: true}}} {
		t.Run(s.name, func(t *testing.T) { test(t, s.opts) })
	}
}

// edgeHarness serves the proxy the way the gateway binary does: the public
// server with its settings.
type edgeHarness struct {
	addr  string
	spans *tracetest.SpanRecorder
	gw    *Gateway
	srv   *PublicServer
}

func newEdgeHarness(t *testing.T, snap *discovery.Snapshot, settings *Settings, ss ServerSettings, opts PublicOptions) *edgeHarness {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	gw := New(Options{Settings: settings})
	gw.Apply(snap)
	p := NewProxy(gw, ProxyOptions{TracerProvider: tp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewPublicServer(ln, p, ss, opts)
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return &edgeHarness{addr: ln.Addr().String(), spans: spans, gw: gw, srv: srv}
}

// raw sends bytes on a fresh connection and returns every response read
// until the connection closes or goes quiet.
func (h *edgeHarness) raw(t *testing.T, payload string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		_, _ = io.ReadAll(resp.Body)
		out = append(out, resp)
		if resp.Close {
			return out
		}
		// More answers come at once or not at all.
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	}
}

func edgeSnapshot(rec *testBackend, routes ...string) *discovery.Snapshot {
	return snapshot(&discovery.Service{Name: "app", Instances: []discovery.Instance{rec.instance(routes...)}})
}

func TestEdgeHeaders(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		rec := newTestBackend(t, "app-1")
		h := newEdgeHarness(t, edgeSnapshot(rec, "/"), roundRobinSettings(), DefaultServerSettings, opts)

		// A client naming the gateway's and the backend's headers in
		// Connection cannot make the gateway drop them; its own forwarding
		// headers are replaced. Without the upgrade's headers, the event
		// loops serve the request themselves.
		head := "GET / HTTP/1.1\r\nHost: site\r\n" +
			"Connection: keep-alive, X-Forwarded-For, X-Real-IP, Traceparent, Authorization, X-Custom\r\n" +
			"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n" +
			"Authorization: Bearer secret\r\nX-Custom: hop\r\nBaggage: tenant=evil\r\n"
		for _, payload := range []string{head + "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", head + "\r\n"} {
			checkEdgeHeaders(t, h, rec, payload)
		}
	})
}

// checkEdgeHeaders sends payload and checks the headers the backend saw.
func checkEdgeHeaders(t *testing.T, h *edgeHarness, rec *testBackend, payload string) {
	t.Helper()
	resps := h.raw(t, payload)
	if len(resps) != 1 || resps[0].StatusCode != 200 {
		t.Fatalf("responses %v", resps)
	}
	got := rec.last().Header
	for name, want := range map[string]string{
		"X-Forwarded-For":  "127.0.0.1",
		"X-Forwarded-Host": "site",
		"X-Real-Ip":        "127.0.0.1",
		"Authorization":    "Bearer secret",
		"Forwarded":        "",
		"X-Custom":         "", // a true hop-by-hop header the client named
		"Upgrade":          "",
		"Http2-Settings":   "",
		"Baggage":          "",
	} {
		if v := got.Get(name); v != want {
			t.Errorf("backend saw %s %q, want %q", name, v, want)
		}
	}
	if got.Get("Traceparent") == "" {
		t.Error("the gateway's traceparent was dropped")
	}
}

func TestEdgeTrustedProxyKeepsForwarding(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		rec := newTestBackend(t, "app-1")
		settings := roundRobinSettings()
		settings.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		h := newEdgeHarness(t, edgeSnapshot(rec, "/"), settings, DefaultServerSettings, opts)
		h.raw(t, "GET / HTTP/1.1\r\nHost: site\r\nX-Forwarded-For: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\n"+
			"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n")
		got := rec.last().Header
		if v := got.Get("X-Forwarded-For"); v != "203.0.113.7, 127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want the trusted chain extended", v)
		}
		if got.Get("Forwarded") == "" {
			t.Error("a trusted proxy's Forwarded header was dropped")
		}
		if tp := got.Get("Traceparent"); !strings.HasPrefix(tp, "00-0af7651916cd43dd8448eb211c80319c-") {
			t.Errorf("traceparent %q: a trusted proxy's trace must continue", tp)
		}
	})
}

func TestEdgeTraceContextModes(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		const clientTrace = "0af7651916cd43dd8448eb211c80319c"
		for _, mode := range []string{TraceLink, TraceContinue, TraceIgnore} {
			t.Run(mode, func(t *testing.T) {
				rec := newTestBackend(t, "app-1")
				settings := roundRobinSettings()
				settings.TraceContext = mode
				h := newEdgeHarness(t, edgeSnapshot(rec, "/"), settings, DefaultServerSettings, opts)
				h.raw(t, "GET / HTTP/1.1\r\nHost: x\r\ntraceparent: 00-"+clientTrace+"-b7ad6b7169203331-01\r\n"+
					"tracestate: vendor=evil\r\nbaggage: user=evil\r\n\r\n")
				var server sdktrace.ReadOnlySpan
				for _, s := range h.spans.Ended() {
					if s.SpanKind() == trace.SpanKindServer {
						server = s
					}
				}
				continued := server.SpanContext().TraceID().String() == clientTrace
				linked := len(server.Links()) == 1 && server.Links()[0].SpanContext.TraceID().String() == clientTrace
				got := rec.last().Header
				switch mode {
				case TraceLink:
					if continued || !linked {
						t.Errorf("continued %v linked %v: want a new trace linked to the client's", continued, linked)
					}
				case TraceContinue:
					if !continued {
						t.Error("the client's trace was not continued")
					}
				case TraceIgnore:
					if continued || len(server.Links()) != 0 {
						t.Error("ignore mode kept the client's context")
					}
				}
				if mode != TraceContinue && (got.Get("Baggage") != "" || got.Get("Tracestate") != "") {
					t.Errorf("outside baggage/tracestate reached the backend: %v", got)
				}
			})
		}
		// Malformed or oversized trace headers are ignored; the request is served.
		rec := newTestBackend(t, "app-1")
		h := newEdgeHarness(t, edgeSnapshot(rec, "/"), roundRobinSettings(), DefaultServerSettings, opts)
		for _, bad := range []string{"zz-nonsense", "00-" + strings.Repeat("a", 4000) + "-01"} {
			if resps := h.raw(t, "GET / HTTP/1.1\r\nHost: x\r\ntraceparent: "+bad+"\r\n\r\n"); len(resps) != 1 || resps[0].StatusCode != 200 {
				t.Errorf("traceparent %.20q: %v, want 200", bad, resps)
			}
		}
	})
}

func TestEdgeUpgradeOnlyWebSocketWhereAllowed(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		rec := newTestBackend(t, "app-1")
		h := newEdgeHarness(t, edgeSnapshot(rec, "/plain", "/ws websocket=on"), roundRobinSettings(), DefaultServerSettings, opts)
		h.raw(t, "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		if u := rec.last().Header.Get("Upgrade"); u != "" {
			t.Errorf("a route without websocket=on passed Upgrade %q", u)
		}
		h.raw(t, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		if u := rec.last().Header.Get("Upgrade"); u != "" {
			t.Errorf("h2c upgrade passed on a websocket route: %q", u)
		}
		h.raw(t, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		if u := rec.last().Header.Get("Upgrade"); u != "websocket" {
			t.Errorf("websocket upgrade on an allowing route arrived as %q", u)
		}
	})
}

func TestEdgeTargetsAndPaths(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		admin, public := newTestBackend(t, "a"), newTestBackend(t, "p")
		snap := snapshot(
			&discovery.Service{Name: "admin", Instances: []discovery.Instance{admin.instance("/admin")}},
			&discovery.Service{Name: "public", Instances: []discovery.Instance{public.instance("/public", "shop.example/")}},
		)
		h := newEdgeHarness(t, snap, roundRobinSettings(), DefaultServerSettings, opts)
		status := func(payload string) int {
			resps := h.raw(t, payload)
			if len(resps) == 0 {
				return 0
			}
			return resps[0].StatusCode
		}
		for _, tc := range []struct {
			name, payload string
			status        int
			backend       *testBackend
			path          string
		}{
			{"dot segments reach only what the plain path reaches", "GET /public/../admin/x HTTP/1.1\r\nHost: h\r\n\r\n", 200, admin, "/admin/x"},
			{"encoded dots too", "GET /public/%2e%2e/admin HTTP/1.1\r\nHost: h\r\n\r\n", 200, admin, "/admin"},
			{"duplicate slashes", "GET //public//x HTTP/1.1\r\nHost: h\r\n\r\n", 200, public, "/public/x"},
			{"parameters do not hide a segment", "GET /admin;x=1/y HTTP/1.1\r\nHost: h\r\n\r\n", 200, admin, "/admin;x=1/y"},
			{"dot segment with parameters", "GET /public/..;/admin HTTP/1.1\r\nHost: h\r\n\r\n", 400, nil, ""},
			{"encoded slash", "GET /public%2f..%2fadmin HTTP/1.1\r\nHost: h\r\n\r\n", 400, nil, ""},
			{"absolute form routes by host rules, never to the host named", "GET http://shop.example/cart HTTP/1.1\r\nHost: other\r\n\r\n", 200, public, "/cart"},
			{"absolute form to an unknown host", "GET http://evil.example/x HTTP/1.1\r\nHost: shop.example\r\n\r\n", 404, nil, ""},
			{"CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405, nil, ""},
			{"unknown host, no default route", "GET /x HTTP/1.1\r\nHost: nobody.example\r\n\r\n", 404, nil, ""},
			{"invalid host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, nil, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := admin.count() + public.count()
				if got := status(tc.payload); got != tc.status {
					t.Fatalf("status %d, want %d", got, tc.status)
				}
				after := admin.count() + public.count()
				if tc.backend == nil {
					if after != before {
						t.Errorf("a refused request reached a backend")
					}
					return
				}
				if p := tc.backend.last().URL.EscapedPath(); p != tc.path {
					t.Errorf("backend saw %q, want %q", p, tc.path)
				}
			})
		}
	})
}

func TestEdgeSmuggling(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		rec := newTestBackend(t, "app-1")
		h := newEdgeHarness(t, edgeSnapshot(rec, "/"), roundRobinSettings(), DefaultServerSettings, opts)
		for _, tc := range []struct{ name, payload string }{
			{"Content-Length with Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"duplicate Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcdeGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"bare LF in a chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := rec.count()
				resps := h.raw(t, tc.payload)
				if len(resps) != 1 || resps[0].StatusCode != 400 {
					var codes []int
					for _, r := range resps {
						codes = append(codes, r.StatusCode)
					}
					t.Fatalf("answers %v, want exactly one 400 and the connection closed", codes)
				}
				// The backend may have seen the start of the bad request (its
				// body is streamed), never a second one hidden inside it.
				if n := rec.count() - before; n > 1 {
					t.Errorf("the backend saw %d requests, want at most the one", n)
				}
				rec.mu.Lock()
				for _, r := range rec.reqs {
					if r.URL.Path == "/smuggled" {
						t.Error("the smuggled request reached the backend")
					}
				}
				rec.mu.Unlock()
			})
		}
		// A well-formed chunked request goes through as exactly one request.
		resps := h.raw(t, "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		rec.mu.Lock()
		n := 0
		for _, r := range rec.reqs {
			if r.URL.Path == "/chunked" {
				n++
			}
		}
		rec.mu.Unlock()
		if len(resps) != 1 || resps[0].StatusCode != 200 || n != 1 {
			t.Errorf("chunked request: %d answers, backend saw it %d times", len(resps), n)
		}
	})
}

func TestEdgeLimits(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		rec := newTestBackend(t, "app-1")
		ss := DefaultServerSettings
		ss.HeaderTimeout = 300 * time.Millisecond
		ss.BodyTimeout = 300 * time.Millisecond
		ss.MaxHeaderBytes = 4 << 10
		settings := roundRobinSettings()
		settings.MaxRequestsPerConn = 2
		h := newEdgeHarness(t, edgeSnapshot(rec, "/ max_body=10"), settings, ss, opts)

		t.Run("oversized head is 431", func(t *testing.T) {
			resps := h.raw(t, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
			if len(resps) != 1 || resps[0].StatusCode != 431 {
				t.Errorf("answers %v, want 431", resps)
			}
		})
		t.Run("body over the route limit is 413", func(t *testing.T) {
			for _, payload := range []string{
				"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n01234567890",
				"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n01234567890\r\n0\r\n\r\n",
			} {
				if resps := h.raw(t, payload); len(resps) != 1 || resps[0].StatusCode != 413 {
					t.Errorf("answers %v, want 413", resps)
				}
			}
			if resps := h.raw(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"); len(resps) != 1 || resps[0].StatusCode != 200 {
				t.Errorf("a body at the limit: %v, want 200", resps)
			}
		})
		for _, tc := range []struct{ name, partial string }{
			{"slow head is cut at the header timeout", "GET / HTTP/1.1\r\nHost: x\r\n"},
			{"slow body is cut at the body timeout", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c, err := net.Dial("tcp", h.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				start := time.Now()
				_, _ = io.WriteString(c, tc.partial)
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.ReadAll(c) // returns when the gateway closes the connection
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("connection lasted %v, want about 300ms", d)
				}
			})
		}
		t.Run("requests per connection", func(t *testing.T) {
			resps := h.raw(t, strings.Repeat("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 3))
			if len(resps) != 2 || !resps[1].Close {
				t.Errorf("%d answers on one connection, want 2, the second closing it", len(resps))
			}
		})
	})
}

func TestEdgeSmugglingPipelinedHeadsMatchInOrder(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		rec := newTestBackend(t, "app-1")
		h := newEdgeHarness(t, edgeSnapshot(rec, "/"), roundRobinSettings(), DefaultServerSettings, opts)
		// The same request line twice: a plain POST, then one with both
		// framings. The second must be judged by its own head.
		resps := h.raw(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"+
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		if len(resps) != 2 || resps[0].StatusCode != 200 || resps[1].StatusCode != 400 {
			var codes []int
			for _, r := range resps {
				codes = append(codes, r.StatusCode)
			}
			t.Errorf("answers %v, want 200 then 400", codes)
		}
		// Both framings first, then the same line with one: the first head is
		// the one judged, not the last one read.
		resps = h.raw(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		if len(resps) != 1 || resps[0].StatusCode != 400 {
			t.Errorf("%d answers (first %v), want one 400", len(resps), resps)
		}
	})
}

// scriptedInstance answers every request with the raw bytes script gives
// for its path, then closes the connection.
func scriptedInstance(t *testing.T, script func(path string) string) int {
	t.Helper()
	addr, _ := scriptedUpstream(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, script(req.URL.Path))
	})
	return portOf(t, addr)
}

// scriptedAnswers is a route to one instance that answers each path with
// the bytes given for it, and other paths with a 404.
func scriptedAnswers(t *testing.T, answers map[string]string) *discovery.Snapshot {
	port := scriptedInstance(t, func(path string) string {
		if a, ok := answers[path]; ok {
			return a
		}
		return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
	})
	return snapshot(&discovery.Service{Name: "app", Instances: []discovery.Instance{instance("app-1", port, "/")}})
}

func TestEdgeAnswersPassOnOrAreCutShort(t *testing.T) {
	snap := scriptedAnswers(t, map[string]string{
		"/hints":       "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/cut-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
		"/cut-length":  "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
	})
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		h := newEdgeHarness(t, snap, roundRobinSettings(), DefaultServerSettings, opts)
		get := func(path string) (*bufio.Reader, net.Conn) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			return bufio.NewReader(c), c
		}

		br, _ := get("/hints")
		first, err := http.ReadResponse(br, nil)
		if err != nil || first.StatusCode != 103 || first.Header.Get("Link") != "</a.css>" {
			t.Fatalf("first answer %v (%v), want 103 with its Link", first, err)
		}
		final, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if body, _ := io.ReadAll(final.Body); final.StatusCode != 200 || string(body) != "ok" || final.Header.Get("Link") != "" {
			t.Errorf("final answer %d %q %v, want 200 ok without the hint's headers", final.StatusCode, body, final.Header)
		}
		if ct, ok := final.Header["Content-Type"]; ok {
			t.Errorf("the answer got a Content-Type (%q) its instance did not send", ct)
		}

		// An instance that breaks off mid-answer: the client must see the
		// answer cut short, never a complete-looking one.
		for _, path := range []string{"/cut-chunked", "/cut-length"} {
			br, _ := get(path)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				continue // cut before the head was out: cut short too
			}
			if body, err := io.ReadAll(resp.Body); err == nil {
				t.Errorf("%s: read %q as a whole answer, want it cut short", path, body)
			}
		}
	})
}

func TestEdgeMaxConns(t *testing.T) {
	rec := newTestBackend(t, "app-1")
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		opts.MaxConns = 1
		h := newEdgeHarness(t, edgeSnapshot(rec, "/"), roundRobinSettings(), DefaultServerSettings, opts)
		open := func() (net.Conn, *bufio.Reader) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			return c, bufio.NewReader(c)
		}
		first, br1 := open()
		_ = first.SetReadDeadline(time.Now().Add(5 * time.Second))
		if resp, err := http.ReadResponse(br1, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("first connection: %v %v", resp, err)
		}
		// The first connection stays open, kept alive: the second waits in
		// the backlog, unanswered.
		second, br2 := open()
		_ = second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if resp, err := http.ReadResponse(br2, nil); err == nil {
			t.Fatalf("a second connection was served (%d) with -max-conns 1", resp.StatusCode)
		}
		first.Close()
		_ = second.SetReadDeadline(time.Now().Add(5 * time.Second))
		if resp, err := http.ReadResponse(br2, nil); err != nil || resp.StatusCode != 200 {
			t.Errorf("second connection after the first closed: %v %v", resp, err)
		}
	})
}

// A client that leaves while its request waits on an instance ends the
// instance's request too: the gateway closes the connection it waits on.
func TestEdgeClientLeavingCancelsTheUpstream(t *testing.T) {
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		started := make(chan struct{}, 1)
		ended := make(chan struct{}, 1)
		backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				ended <- struct{}{}
			case <-time.After(20 * time.Second):
			}
		}))
		t.Cleanup(backend.Close)
		u, _ := url.Parse(backend.URL)
		port, _ := strconv.Atoi(u.Port())
		snap := snapshot(&discovery.Service{Name: "app", Instances: []discovery.Instance{instance("app-1", port, "/")}})
		h := newEdgeHarness(t, snap, roundRobinSettings(), DefaultServerSettings, opts)

		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: site\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("the request never reached the instance")
		}
		c.Close()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the instance's request ran on after the client left")
		}
	})
}

// The route timeout and the body's idle timeout end a request on both
// servers: h1 keeps the deadline on its connection's timer, net/http's
// requests on a timer of their own.
func TestEdgeTimeouts(t *testing.T) {
	release := make(chan struct{})
	addr, _ := scriptedUpstream(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/stall-body" {
			// The head now, the rest of the body never.
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
		}
		<-release
	})
	t.Cleanup(func() { close(release) }) // before the upstream's own cleanup
	snap := snapshot(&discovery.Service{Name: "app", Instances: []discovery.Instance{
		instance("app-1", portOf(t, addr), "/ timeout=150ms idle_timeout=150ms")}})
	forEachServer(t, func(t *testing.T, opts PublicOptions) {
		h := newEdgeHarness(t, snap, roundRobinSettings(), DefaultServerSettings, opts)
		start := time.Now()
		if resps := h.raw(t, "GET /stall HTTP/1.1\r\nHost: x\r\n\r\n"); len(resps) == 0 || resps[0].StatusCode != 504 {
			t.Errorf("no answer from the instance: %d responses, want a 504", len(resps))
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the 504 took %v, want about the 150ms route timeout", d)
		}
		start = time.Now()
		client := &http.Client{Timeout: 5 * time.Second}
		resp, err := client.Get("http://" + h.addr + "/stall-body")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if d := time.Since(start); err == nil || d > 2*time.Second {
			t.Errorf("a stalled body ended after %v (%v), want cut after about the 150ms idle timeout", d, err)
		}
	})
}

// An instance's answer head reaches the client whole but for its
// hop-by-hop fields, with one length and one date, on both servers. On h1
// the common shape goes as it came (RelayHead); a Connection naming other
// fields takes the path through a Header.
func TestEdgeAnswerHeads(t *testing.T) {
	const date = "Sat, 28 Nov 2026 03:00:00 GMT"
	snap := scriptedAnswers(t, map[string]string{
		"/relayed": "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n" +
			"x-lower: 1\r\nContent-Length: 2\r\nProxy-Connection: keep-alive\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n" +
			"Upgrade: h2c\r\nDate: " + date + "\r\n\r\nok",
		"/named":   "HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok",
		"/no-date": "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
	})
	for _, tc := range []struct {
		path   string
		status int
		want   http.Header // every field the client gets but Date and Content-Length
		date   string      // "": the gateway's own
		length string
		body   string
	}{
		{"/relayed", 201, http.Header{"Content-Type": {"text/plain"}, "X-Lower": {"1"}, "Set-Cookie": {"a=1", "b=2"}}, date, "2", "ok"},
		{"/named", 200, http.Header{"X-Public": {"yes"}}, "", "2", "ok"},
		{"/no-date", 404, http.Header{}, "", "4", "nope"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			forEachServer(t, func(t *testing.T, opts PublicOptions) {
				h := newEdgeHarness(t, snap, roundRobinSettings(), DefaultServerSettings, opts)
				c, err := net.Dial("tcp", h.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
				br := bufio.NewReader(c)
				status, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				// The head line by line, as sent: a field sent twice shows.
				got := http.Header{}
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						t.Fatal(err)
					}
					if line == "\r\n" {
						break
					}
					name, value, _ := strings.Cut(strings.TrimSuffix(line, "\r\n"), ":")
					got.Add(name, strings.TrimSpace(value))
				}
				if want := fmt.Sprintf("HTTP/1.1 %d %s\r\n", tc.status, http.StatusText(tc.status)); status != want {
					t.Errorf("%s: status line %q, want %q", tc.path, status, want)
				}
				if d := got.Values("Date"); len(d) != 1 || tc.date != "" && d[0] != tc.date {
					t.Errorf("%s: Date %q, want one, %q", tc.path, d, tc.date)
				}
				if l := got.Values("Content-Length"); len(l) != 1 || l[0] != tc.length {
					t.Errorf("%s: Content-Length %q, want %s", tc.path, l, tc.length)
				}
				got.Del("Date")
				got.Del("Content-Length")
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s: header %v, want %v", tc.path, got, tc.want)
				}
				body := make([]byte, len(tc.body))
				if _, err := io.ReadFull(br, body); err != nil || string(body) != tc.body {
					t.Errorf("%s: body %q (%v), want %q", tc.path, body, err, tc.body)
				}
			})
		})
	}
}
