package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/hopgate/hopgate/telemetry"
)

// Span attribute keys for what only the gateway knows: the discovery
// decision behind each hop.
const (
	attrRoute      = attribute.Key("hopgate.route")
	attrService    = attribute.Key("hopgate.service")
	attrInstanceID = attribute.Key("hopgate.instance.id")
	attrNode       = attribute.Key("hopgate.instance.node")
	attrAttempt    = attribute.Key("hopgate.attempt")
	attrRetry      = attribute.Key("hopgate.retry.reason")
)

// DefaultMaxAttempts bounds the attempts of one request: the first try plus
// retries on other instances after connection failures.
const DefaultMaxAttempts = 3

// ProxyOptions configure the public handler.
type ProxyOptions struct {
	Logger hclog.Logger
	// Transport sends each attempt; a tuned http.Transport when nil.
	Transport http.RoundTripper
	// MaxAttempts per request (first try included); DefaultMaxAttempts when 0.
	MaxAttempts int
	// TracerProvider and Propagator default to the OpenTelemetry globals.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
}

// Proxy is the public HTTP handler: it matches the request on the current
// routing table and forwards it to an instance, retrying connection
// failures on other instances.
type Proxy struct {
	gw          *Gateway
	log         hclog.Logger
	rp          *httputil.ReverseProxy
	transport   http.RoundTripper
	maxAttempts int
	tracer      trace.Tracer
	propagator  propagation.TextMapPropagator
}

// NewProxy returns the public handler for gw.
func NewProxy(gw *Gateway, opts ProxyOptions) *Proxy {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport()
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = otel.GetTracerProvider()
	}
	if opts.Propagator == nil {
		opts.Propagator = otel.GetTextMapPropagator()
	}
	p := &Proxy{
		gw:          gw,
		log:         opts.Logger,
		transport:   opts.Transport,
		maxAttempts: opts.MaxAttempts,
		tracer:      opts.TracerProvider.Tracer("github.com/hopgate/hopgate/gateway"),
		propagator:  opts.Propagator,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    roundTripperFunc(p.roundTrip),
		BufferPool:   bufferPool{},
		ErrorHandler: p.proxyError,
		ErrorLog:     opts.Logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	return p
}

// NewTransport returns the transport used for upstream requests: pooled
// keep-alive connections, short dial timeout (a dead instance must fail fast
// so the retry still fits the client's patience), no proxy from the
// environment (the gateway is the proxy).
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   2 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

type ctxKey struct{}

// exchange is what the proxy carries through httputil.ReverseProxy for one
// request: the matched route and the upstreams tried so far.
type exchange struct {
	route    *Route
	tried    []*Upstream
	attempts int
	lastErr  error
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	route := p.gw.Table().Match(r.Host, r.URL.Path)

	ctx := p.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	spanName := r.Method
	if route != nil {
		spanName = r.Method + " " + route.Name
	}
	ctx, span := p.tracer.Start(ctx, spanName,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(serverAttributes(r, route)...))
	defer span.End()

	rec := &statusRecorder{ResponseWriter: w}
	ex := &exchange{route: route}
	if route == nil {
		http.Error(rec, "hopgate: no route for "+r.Host+r.URL.Path, http.StatusNotFound)
	} else {
		p.rp.ServeHTTP(rec, r.WithContext(context.WithValue(ctx, ctxKey{}, ex)))
	}

	status := rec.status()
	span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	args := []any{"method", r.Method, "host", r.Host, "path", r.URL.Path, "status", status,
		"duration", time.Since(start), "attempts", ex.attempts}
	if route != nil {
		args = append(args, "route", route.Name, "service", route.Service)
	}
	if n := len(ex.tried); n > 0 {
		args = append(args, "upstream", ex.tried[n-1].HostPort)
	}
	p.log.Debug("request", append(args, telemetry.TraceArgs(ctx)...)...)
}

func serverAttributes(r *http.Request, route *Route) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(r.Method),
		semconv.URLPath(r.URL.Path),
		semconv.ServerAddress(r.Host),
		semconv.URLScheme(scheme(r)),
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		attrs = append(attrs, semconv.ClientAddress(host))
	}
	if route != nil {
		attrs = append(attrs,
			semconv.HTTPRoute(route.PathPrefix),
			attrRoute.String(route.Name),
			attrService.String(route.Service))
	}
	return attrs
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// rewrite shapes the outgoing request. The upstream host is filled in per
// attempt by roundTrip; the client's Host header is kept.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	ex := pr.In.Context().Value(ctxKey{}).(*exchange)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = ex.route.Service // replaced per attempt
	if s := ex.route.Strip; s != "" {
		pr.Out.URL.Path, pr.Out.URL.RawPath = stripPrefix(pr.Out.URL.Path, pr.Out.URL.RawPath, s)
	}
	pr.SetXForwarded()
	pr.Out.Host = pr.In.Host
}

// stripPrefix removes prefix from the path on a segment boundary; the
// result always starts with "/". The raw (escaped) form is kept only when it
// carries the same prefix, otherwise it is dropped and Go re-escapes.
func stripPrefix(path, raw, prefix string) (string, string) {
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		return path, raw
	}
	if rest == "" {
		rest = "/"
	}
	if raw != "" {
		if r, ok := strings.CutPrefix(raw, prefix); ok && (r == "" || r[0] == '/') {
			if r == "" {
				r = "/"
			}
			return rest, r
		}
	}
	return rest, ""
}

// roundTrip sends the request to an instance picked for the route. A
// connection that could not be made is retried on another instance, for any
// method: nothing reached the instance, so nothing can happen twice. Each
// attempt is a client span, a child of the gateway's server span.
func (p *Proxy) roundTrip(req *http.Request) (*http.Response, error) {
	ex := req.Context().Value(ctxKey{}).(*exchange)
	// httputil.ReverseProxy closes the real body when the handler returns.
	body := &attemptBody{ReadCloser: req.Body}
	for {
		up, err := ex.route.Picker.Pick(ex.tried)
		if err != nil {
			if ex.lastErr != nil {
				return nil, ex.lastErr // every instance failed: report the real cause
			}
			return nil, err
		}
		ex.tried = append(ex.tried, up)
		ex.attempts++
		resp, err := p.attempt(req, ex, up, body)
		if err == nil {
			return resp, nil
		}
		ex.lastErr = err
		if !isDialError(err) || body.read.Load() || ex.attempts >= p.maxAttempts || req.Context().Err() != nil {
			return nil, err
		}
		p.log.Debug("retrying on another instance", "route", ex.route.Name,
			"failed", up.HostPort, "error", err)
	}
}

func (p *Proxy) attempt(req *http.Request, ex *exchange, up *Upstream, body *attemptBody) (*http.Response, error) {
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(req.Method),
		semconv.ServerAddress(up.Instance.Address),
		semconv.ServerPort(up.Instance.Port),
		semconv.URLFull("http://" + up.HostPort + req.URL.RequestURI()),
		attrService.String(up.Service),
		attrInstanceID.String(up.Instance.ID),
		attrNode.String(up.Instance.Node),
		attrAttempt.Int(ex.attempts),
	}
	if ex.attempts > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(ex.attempts-1),
			attrRetry.String("connect_failure"))
	}
	ctx, span := p.tracer.Start(req.Context(), req.Method,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))

	out := req.WithContext(ctx)
	u := *req.URL
	u.Host = up.HostPort
	out.URL = &u
	if req.Body != nil {
		out.Body = body
	}
	// The header map is shared by all attempts; each injection replaces the
	// previous attempt's traceparent with this attempt's span.
	p.propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))

	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
		span.End()
		return nil, err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode))
	if resp.StatusCode >= 500 {
		span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection (WebSocket) lives on past the exchange, and
		// ReverseProxy needs the body's Write method: end the span here.
		span.End()
		return resp, nil
	}
	// The span ends when the body has been copied to the client, so its
	// duration covers the whole exchange with the instance.
	resp.Body = &spanEndingBody{ReadCloser: resp.Body, span: span}
	return resp, nil
}

// proxyError answers when no attempt produced a response.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := r.Context().Value(ctxKey{}).(*exchange)
	status := http.StatusBadGateway
	msg := fmt.Sprintf("hopgate: route %s: upstream failed after %d attempt(s)", ex.route.Name, ex.attempts)
	switch {
	case errors.Is(err, ErrNoUpstream):
		status = http.StatusServiceUnavailable
		msg = fmt.Sprintf("hopgate: route %s: no healthy instance of service %s", ex.route.Name, ex.route.Service)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away: nobody reads this answer, but the access
		// log and span say what happened (nginx's 499).
		status = 499
	case isTimeout(err):
		status = http.StatusGatewayTimeout
		msg = fmt.Sprintf("hopgate: route %s: upstream timed out", ex.route.Name)
	}
	p.log.Warn("proxy error", append([]any{"route", ex.route.Name, "status", status,
		"attempts", ex.attempts, "error", err}, telemetry.TraceArgs(r.Context())...)...)
	if status == 499 {
		w.WriteHeader(status)
		return
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, msg, status)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func errorType(err error) string {
	switch {
	case isDialError(err):
		return "connect_failure"
	case isTimeout(err):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "transport"
}

// attemptBody lets one request body serve several attempts: the transport
// closes a body when an attempt fails, but a failed dial read nothing, so
// the body is still whole for the next instance. read records whether that
// is still true.
type attemptBody struct {
	io.ReadCloser
	read atomic.Bool // written by the transport's writer goroutine
}

func (b *attemptBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.ReadCloser.Read(p)
}

// Close does nothing: the real body is closed once, by httputil.ReverseProxy.
func (b *attemptBody) Close() error { return nil }

type spanEndingBody struct {
	io.ReadCloser
	span trace.Span
	once sync.Once
}

func (b *spanEndingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.span.End() })
	return err
}

// statusRecorder remembers the status code for the span and the access log.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 && code >= 200 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and Hijack underneath.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// bufferPool shares copy buffers between requests; without it every proxied
// response allocates 32 KiB.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
