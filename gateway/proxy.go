package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
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
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/hopgate/hopgate/gateway/balance"
	"github.com/hopgate/hopgate/gateway/h1"
	"github.com/hopgate/hopgate/telemetry"
)

// Span attribute keys for what only the gateway knows: the discovery and
// balancing decisions behind each hop.
const (
	attrRoute      = attribute.Key("hopgate.route")
	attrService    = attribute.Key("hopgate.service")
	attrInstanceID = attribute.Key("hopgate.instance.id")
	attrNode       = attribute.Key("hopgate.instance.node")
	attrAttempt    = attribute.Key("hopgate.attempt")
	attrRetry      = attribute.Key("hopgate.retry.reason")
	attrPolicy     = attribute.Key("hopgate.lb.policy")
	attrPanic      = attribute.Key("hopgate.lb.panic")
)

// Errors the proxy answers itself.
var (
	errRouteOverloaded    = errors.New("route at its concurrency limit")
	errInstanceOverloaded = errors.New("every instance at its concurrency limit")
	errTimeout            = errors.New("upstream timed out")
)

// ProxyOptions configure the public handler.
type ProxyOptions struct {
	Logger hclog.Logger
	// Transport sends HTTP/1.1 attempts; NewTransport() when nil.
	Transport http.RoundTripper
	// H2CTransport sends attempts on routes with proto=h2c;
	// NewH2CTransport() when nil.
	H2CTransport http.RoundTripper
	// TracerProvider and Propagator default to the OpenTelemetry globals.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// AccessLog logs every request at info level (debug when false).
	AccessLog bool
}

// Proxy is the public HTTP handler: it matches the request on the current
// routing table, picks an instance with the route's policy and forwards the
// request, retrying on other instances when that is safe and the route's
// retry budget allows.
type Proxy struct {
	gw         *Gateway
	settings   *Settings
	log        hclog.Logger
	rp         *httputil.ReverseProxy
	transport  http.RoundTripper
	h2c        http.RoundTripper
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	accessLog  bool
	// spans is false under the no-op tracer provider (telemetry.Setup's
	// when nothing is exported): the proxy then starts no span at all and
	// leaves trace headers as they came, which is what injecting no-op
	// spans would write, at none of the cost.
	spans bool
}

// noSpan stands for the spans not started when spans is false.
var noSpan = trace.SpanFromContext(context.Background())

// Span kinds as start options, made once: each conversion to the option
// interface would allocate.
var (
	serverSpan = trace.WithSpanKind(trace.SpanKindServer)
	clientSpan = trace.WithSpanKind(trace.SpanKindClient)
	newRoot    = trace.WithNewRoot()
)

// NewProxy returns the public handler for gw.
func NewProxy(gw *Gateway, opts ProxyOptions) *Proxy {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport()
	}
	if opts.H2CTransport == nil {
		opts.H2CTransport = NewH2CTransport()
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = otel.GetTracerProvider()
	}
	if opts.Propagator == nil {
		opts.Propagator = otel.GetTextMapPropagator()
	}
	_, noSpans := opts.TracerProvider.(noop.TracerProvider)
	p := &Proxy{
		spans:      !noSpans,
		gw:         gw,
		settings:   &gw.settings,
		log:        opts.Logger,
		transport:  opts.Transport,
		h2c:        opts.H2CTransport,
		tracer:     opts.TracerProvider.Tracer("github.com/hopgate/hopgate/gateway"),
		propagator: opts.Propagator,
		accessLog:  opts.AccessLog,
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

type ctxKey struct{}

// exchange is what the proxy carries through forwarding for one
// request: the matched route, the replayable body and the attempts so far.
//
// Once the request is routed, the exchange is also its context: the
// cancellable one the route timeout and the client leaving end, answering
// for ctxKey itself. That saves a context per request, and the lookups the
// transport makes of it stop at the first link.
type exchange struct {
	context.Context
	route     *Route
	start     time.Time  // when the request came
	span      trace.Span // the gateway's server span, for events
	body      []byte     // the whole request body when it could be buffered
	bodyOK    bool       // body holds the whole body (or there is none)
	tried     []*balance.Endpoint
	filter    pickFilter // the current pick's (see pick)
	attemptAt time.Time  // when the current attempt began (see clock)
	attempts  int
	lastErr   error
	timedOut  atomic.Bool // the route timeout fired before headers came
	// The request has one deadline (setDeadline): the route timeout until
	// an answer's headers arrive, then the idle timeout of its body.
	// Passing, it cancels the request's context (expire). timed is false
	// for an upgrade, which neither bounds.
	timed     bool
	conn      h1.Info
	served    bool        // by h1: conn is set
	timer     *time.Timer // the deadline's, when not served by h1
	deadline  time.Time   // of the route timeout
	cancel    context.CancelFunc
	streaming atomic.Bool // headers arrived: the deadline is the body's
	trusted   bool        // the peer is a trusted proxy
	streamed  attemptBody // the request body when it streams through
	rec       statusRecorder
	triedBuf  [2]*balance.Endpoint // tried's room for most requests
	// attrs is room for one span's attributes at a time (spans copy what
	// they are given), made for requests whose spans record.
	attrs []attribute.KeyValue
	// aborted is set when the answer could not be copied to its end: the
	// connection is cut once the request is logged.
	aborted bool
	// Informational answers (103 Early Hints) pass to the client as they
	// come, until the final answer does; a transport may report them from
	// a goroutine of its own.
	hints      httptrace.ClientTrace
	hintsMu    sync.Mutex
	hintsTo    http.ResponseWriter
	hintsFinal bool
	// Served by h1, every end of the request's context also calls
	// interrupt, which then cuts the upstream connections in upConns: the
	// transport need not watch the context.
	upMu       sync.Mutex
	upConns    []watchedConn
	upConnsBuf [2]watchedConn
	// The outgoing request of the first attempt, its URL and its
	// forwarding headers' values (see forward and prepare).
	out     http.Request
	outURL  url.URL
	fwdVals [4]string
	// Served by h1, the transport keeps the head of an answer in the
	// common shape here, as it came, instead of in a Header: relayOf is
	// the answer it belongs to (its Header is nil), and forward has h1
	// write it as it is. Only the last answer's is kept, the only one
	// that can reach the client.
	relay   h1.AnswerHead
	relayOf *http.Response
	// resumed is what an event loop did of the request before handing
	// it over: its first attempt is the loop's (see loopResume).
	resumed *loopResume
}

// keepHead keeps head as the one of resp (see relay).
func (ex *exchange) keepHead(resp *http.Response, head *h1.AnswerHead) {
	ex.relay, ex.relayOf = *head, resp
}

// relayed returns the head kept for resp, nil when resp has its own
// Header.
func (ex *exchange) relayed(resp *http.Response) *h1.AnswerHead {
	if resp != ex.relayOf {
		return nil
	}
	return &ex.relay
}

// Value answers for ctxKey with the exchange, and for httptrace's key
// with its hooks.
func (ex *exchange) Value(key any) any {
	switch key {
	case ctxKey{}:
		return ex
	case clientTraceKey:
		if trace := ex.clientTrace(); trace != nil {
			return trace
		}
	}
	return ex.Context.Value(key)
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, served := h1.InfoOf(r)
	start := conn.Started
	if !served {
		start = time.Now()
	}
	trusted := p.settings.trusted(r)
	// A request an event loop began and handed over goes on from where
	// the loop left it: its start, its span and its first attempt.
	resumed, _ := conn.Note.(*loopResume)
	var ctx context.Context
	var span trace.Span
	if resumed != nil {
		start = resumed.start
		p.dropTraceContext(r, trusted)
		ctx, span = trace.ContextWithSpan(r.Context(), resumed.span), resumed.span
	} else {
		ctx, span = p.startServerSpan(r, trusted)
	}
	defer span.End()

	// The edge: refuse what must never reach an instance, and route on the
	// same normalised path the instance will see.
	var route *Route
	refusal, err := p.checkEdge(w, r)
	if err == nil {
		var routePath string
		if routePath, err = p.normalizeRequest(r); err != nil {
			refusal = http.StatusBadRequest
		} else {
			route = p.gw.Table().Match(r.Host, routePath)
		}
	}
	if resumed != nil && err == nil {
		route = resumed.route // the table may have changed since
	}
	dropUntrustedHeaders(r.Header, trusted)

	// One allocation for the request's state, its response recorder and
	// its first attempts.
	ex := &exchange{route: route, span: span, trusted: trusted, start: start, conn: conn, served: served, resumed: resumed}
	ex.tried = ex.triedBuf[:0]
	ex.rec.ResponseWriter = w
	rec := &ex.rec
	switch {
	case err != nil:
		span.AddEvent("refused at the edge", trace.WithAttributes(attribute.String("hopgate.reason", err.Error())))
		http.Error(rec, "hopgate: "+err.Error(), refusal)
	case route == nil:
		http.Error(rec, "hopgate: no route for "+r.Host+r.URL.Path, http.StatusNotFound)
	default:
		filterUpgrade(r.Header, route.policy.websocket)
		p.serveRoute(ctx, rec, r, ex)
	}

	status := rec.status()
	ex.recordServerSpan(r, status)
	p.gw.metrics.observeRequest(ctx, route, r.Method, status, start)
	p.logRequest(ctx, r, ex, status, start)
	if ex.aborted {
		panic(http.ErrAbortHandler)
	}
}

// dropUntrustedHeaders removes what a request's peer may not say: the
// forwarding headers of an untrusted peer, which the gateway's own
// replace (httputil.ReverseProxy does so for X-Forwarded-*), and the
// Connection tokens that would drop the gateway's headers.
func dropUntrustedHeaders(h http.Header, trusted bool) {
	if !trusted {
		delete(h, "Forwarded")
		delete(h, "X-Real-Ip")
	}
	sanitizeConnection(h)
}

// recordServerSpan names the server span for r, answered with status,
// and sets its attributes and status. Attributes cost allocations: only
// for spans that go somewhere, and all at once, so the span copies them
// once.
func (ex *exchange) recordServerSpan(r *http.Request, status int) {
	span := ex.span
	if !span.IsRecording() {
		return
	}
	span.SetName(spanName(r, ex.route))
	span.SetAttributes(serverAttributes(ex.attrBuf(), r, ex.route, status)...)
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
}

// serveRoute applies the route's limits and timeout, then proxies. ctx is
// r's context with the gateway's span; the exchange, made the request's
// context here, is given to the outgoing request once, as it is proxied.
func (p *Proxy) serveRoute(ctx context.Context, w http.ResponseWriter, r *http.Request, ex *exchange) {
	route := ex.route
	st := route.state
	inflight := st.inflight.Add(1)
	defer st.inflight.Add(-1)
	if max := route.policy.maxInflight; max > 0 && inflight > int64(max) {
		p.overloaded(w, r, ex, errRouteOverloaded)
		return
	}
	if ex.resumed == nil { // the loop counted it
		st.budget.request(p.gw.at(ex.start))
	}

	if ex.served {
		// The server's request context is this request's alone and ends
		// with it: the route timeout can end it too.
		ex.Context, ex.cancel = ctx, ex.conn.Cancel
		ex.conn.Watch(ex)
	} else {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ex.Context, ex.cancel = ctx, cancel
	}
	if !isUpgrade(r) {
		// The route timeout bounds the wait for an answer's headers,
		// retries included; a body then streams for as long as it flows,
		// so server-sent events and downloads are not cut. An upgraded
		// connection (WebSocket) is never cut by it.
		ex.timed = true
		ex.deadline = ex.start.Add(route.policy.timeout)
		ex.setDeadline(ex.deadline)
		if !ex.served {
			defer ex.timer.Stop()
		}
	}
	if max := route.policy.maxBody; max > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > max {
			ex.span.AddEvent("request body too large")
			http.Error(w, "hopgate: "+errBodyTooBig.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
	}
	if err := p.bufferBody(r, ex); err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			http.Error(w, "hopgate: "+errBodyTooBig.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "hopgate: reading request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	p.forward(w, r, ex)
}

// expire is the request's deadline passing: the route timeout before
// headers, the idle timeout of a body after.
func (ex *exchange) expire() {
	if !ex.streaming.Load() {
		ex.timedOut.Store(true)
	}
	ex.cancel()
	ex.interrupt()
}

// DeadlinePassed is expire, told by h1's connection timer.
func (ex *exchange) DeadlinePassed() { ex.expire() }

// ClientLeft is h1 telling of the client leaving: the request's context
// has ended, and the upstream connections are cut.
func (ex *exchange) ClientLeft() { ex.interrupt() }

// answered moves the request's deadline from the route timeout to the
// body's idle timeout, counted from now, when the headers came: the body
// may stream for as long as it flows.
func (ex *exchange) answered(now time.Time) {
	if !ex.timed {
		return
	}
	ex.streaming.Store(true)
	ex.idleFrom(now)
}

// bodyFlowed restarts the idle timeout: a byte of the body arrived.
func (ex *exchange) bodyFlowed() {
	if ex.timed && ex.route.policy.idle > 0 {
		ex.idleFrom(time.Now())
	}
}

// idleFrom sets the request's deadline to the idle timeout from now, or
// clears it when the route has none.
func (ex *exchange) idleFrom(now time.Time) {
	var t time.Time
	if idle := ex.route.policy.idle; idle > 0 {
		t = now.Add(idle)
	}
	ex.setDeadline(t)
}

// clock is the time for the transport's pool: the current attempt's
// start, a few microseconds old, rather than a clock reading more on
// every request. Without an attempt (a request not from the proxy), the
// clock's.
func (ex *exchange) clock() time.Time {
	if ex == nil || ex.attemptAt.IsZero() {
		return time.Now()
	}
	return ex.attemptAt
}

// setDeadline sets the request's one deadline, when expire runs; the zero
// time clears it. Served by h1, the connection's timer keeps it;
// otherwise the request's own timer, made on first use.
func (ex *exchange) setDeadline(t time.Time) {
	switch {
	case ex.served:
		ex.conn.SetDeadline(t)
	case t.IsZero():
		if ex.timer != nil {
			ex.timer.Stop()
		}
	case ex.timer == nil:
		ex.timer = time.AfterFunc(time.Until(t), ex.expire)
	default:
		ex.timer.Reset(time.Until(t))
	}
}

// bufferBody reads a small body of an idempotent request into memory so the
// request can be sent again after an instance saw it. Larger or
// non-idempotent bodies stream through, and only attempts that never reached
// an instance are retried.
func (p *Proxy) bufferBody(r *http.Request, ex *exchange) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		ex.bodyOK = true
		return nil
	}
	if !isIdempotent(r) || r.ContentLength < 0 || r.ContentLength > p.settings.MaxReplayBody {
		return nil
	}
	buf := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, buf); err != nil {
		return err
	}
	ex.body, ex.bodyOK = buf, true
	r.Body = io.NopCloser(bytes.NewReader(buf))
	return nil
}

// attrBuf returns the exchange's room for span attributes, emptied.
func (ex *exchange) attrBuf() []attribute.KeyValue {
	if ex.attrs == nil {
		ex.attrs = make([]attribute.KeyValue, 0, 12)
	}
	return ex.attrs[:0]
}

// getBody is the buffered body anew, for a request sent again.
func (ex *exchange) getBody() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(ex.body)), nil
}

// startServerSpan starts the gateway's server span. Only a trusted peer,
// or a gateway told to continue callers' traces, chooses the trace; by
// default the client's context becomes a link of a new trace, and its
// trace headers and baggage go no further.
func (p *Proxy) startServerSpan(r *http.Request, trusted bool) (context.Context, trace.Span) {
	ctx := r.Context()
	continued := p.continuesTrace(trusted)
	defer p.dropTraceContext(r, trusted)
	switch {
	case !p.spans:
		return ctx, noSpan
	case continued:
		return p.tracer.Start(p.propagator.Extract(ctx, propagation.HeaderCarrier(r.Header)), r.Method, serverSpan)
	case p.settings.TraceContext != TraceIgnore:
		remote := trace.SpanContextFromContext(p.propagator.Extract(ctx, propagation.HeaderCarrier(r.Header)))
		if remote.IsValid() {
			return p.tracer.Start(ctx, r.Method, serverSpan, newRoot, trace.WithLinks(trace.Link{SpanContext: remote}))
		}
	}
	return p.tracer.Start(ctx, r.Method, serverSpan, newRoot)
}

// dropTraceContext removes the caller's trace headers and baggage from
// r, unless its trace is continued.
func (p *Proxy) dropTraceContext(r *http.Request, trusted bool) {
	if !p.continuesTrace(trusted) {
		delete(r.Header, "Traceparent")
		delete(r.Header, "Tracestate")
		delete(r.Header, "Baggage")
	}
}

// continuesTrace says whether the caller's trace context is continued:
// only a trusted peer's, or anyone's when the gateway is told so.
func (p *Proxy) continuesTrace(trusted bool) bool {
	return trusted || p.settings.TraceContext == TraceContinue
}

// logContext is ctx for a log line's trace fields: when no span was
// started, the caller's context the gateway passed on.
func (p *Proxy) logContext(ctx context.Context, h http.Header, trusted bool) context.Context {
	if p.spans || !p.continuesTrace(trusted) {
		return ctx
	}
	return p.propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

func spanName(r *http.Request, route *Route) string {
	if route == nil {
		return r.Method
	}
	return r.Method + " " + route.Name
}

// normalizeRequest rewrites the request's path to its normal form (see
// normalizePath) and returns the path to route on.
func (p *Proxy) normalizeRequest(r *http.Request) (string, error) {
	escaped := r.URL.EscapedPath()
	upstream, routePath, err := normalizePath(escaped)
	if err != nil {
		return "", err
	}
	if upstream != escaped {
		u, err := url.PathUnescape(upstream)
		if err != nil {
			return "", errPathBadEscape
		}
		r.URL.Path, r.URL.RawPath = u, upstream
	}
	return routePath, nil
}

// serverAttributes appends the server span's attributes to attrs.
func serverAttributes(attrs []attribute.KeyValue, r *http.Request, route *Route, status int) []attribute.KeyValue {
	attrs = append(attrs,
		semconv.HTTPRequestMethodKey.String(r.Method),
		semconv.URLPath(r.URL.Path),
		semconv.ServerAddress(r.Host),
		semconv.URLScheme(scheme(r)),
		semconv.HTTPResponseStatusCode(status))
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		attrs = append(attrs, semconv.ClientAddress(host))
	}
	if route != nil {
		attrs = append(attrs,
			semconv.HTTPRoute(route.PathPrefix),
			attrRoute.String(route.Name),
			attrService.String(route.Service),
			attrPolicy.String(route.policy.balance.Policy))
	}
	return attrs
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// rewrite shapes the outgoing request of an upgrade, which
// httputil.ReverseProxy carries.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	p.prepare(pr.Out, pr.In, pr.In.Context().Value(ctxKey{}).(*exchange))
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

func (p *Proxy) overloaded(w http.ResponseWriter, r *http.Request, ex *exchange, err error) {
	ex.span.AddEvent("overloaded", trace.WithAttributes(attribute.String("hopgate.reason", err.Error())))
	w.Header().Set("Retry-After", "1")
	http.Error(w, fmt.Sprintf("hopgate: route %s: %v", ex.route.Name, err), http.StatusServiceUnavailable)
}

// proxyError answers when no attempt produced a response.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := r.Context().Value(ctxKey{}).(*exchange)
	status := http.StatusBadGateway
	msg := fmt.Sprintf("hopgate: route %s: upstream failed after %d attempt(s)", ex.route.Name, ex.attempts)
	switch {
	case errors.Is(err, errInstanceOverloaded):
		p.overloaded(w, r, ex, err)
		return
	case errors.As(err, new(*http.MaxBytesError)):
		status = http.StatusRequestEntityTooLarge
		msg = "hopgate: " + errBodyTooBig.Error()
	case ex.streamed.bad.Load():
		status = http.StatusBadRequest
		msg = "hopgate: malformed request body"
	case errors.Is(err, balance.ErrNoEndpoint):
		status = http.StatusServiceUnavailable
		msg = fmt.Sprintf("hopgate: route %s: no healthy instance of service %s", ex.route.Name, ex.route.Service)
	case errors.Is(err, errTimeout) || ex.timedOut.Load():
		status = http.StatusGatewayTimeout
		msg = fmt.Sprintf("hopgate: route %s: %v", ex.route.Name, err)
	case errors.Is(err, context.Canceled):
		// The client went away: nobody reads this answer, but the access
		// log and span say what happened (nginx's 499).
		status = 499
	}
	p.log.Warn("proxy error", append([]any{"route", ex.route.Name, "status", status,
		"attempts", ex.attempts, "error", err}, telemetry.TraceArgs(p.logContext(r.Context(), r.Header, ex.trusted))...)...)
	if status == 499 {
		w.WriteHeader(status)
		return
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, msg, status)
}

// isIdempotent is true for the safe methods of RFC 9110 (GET, HEAD,
// OPTIONS, TRACE) and for any request carrying an Idempotency-Key, by which
// the client vouches that repeating it is harmless. PUT and DELETE are
// idempotent on paper but not always in practice, so, as in Go's own
// transport, they need the header.
func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return first(r.Header, "Idempotency-Key") != ""
}

func isUpgrade(r *http.Request) bool { return first(r.Header, "Upgrade") != "" }

// first is h.Get(name) for a name already in canonical form: the hot
// path's lookups skip canonicalising their constant names again.
func first(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// bufferPool shares copy buffers between requests; without it every proxied
// response allocates 32 KiB.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
