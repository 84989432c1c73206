package gateway

// The attempt loop: picking an instance, sending one try, classifying what
// came back, passive health, and when to try again.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hopgate/hopgate/gateway/balance"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// outcome classifies one attempt for retries and passive health.
type outcome int

const (
	succeeded    outcome = iota
	notConnected         // the instance was never reached: safe to retry anything
	failedSent           // the instance may have seen the request
	answered5xx          // 502, 503 or 504: retryable when idempotent
	answeredErr          // another 5xx: counts against the instance, not retried
)

func (o outcome) String() string {
	switch o {
	case notConnected:
		return "connect_failure"
	case failedSent:
		return "reset"
	case answered5xx:
		return "status_5xx"
	}
	return ""
}

func classify(resp *http.Response, err error) outcome {
	switch {
	case err != nil && isDialError(err):
		return notConnected
	case err != nil:
		return failedSent
	}
	return classifyStatus(resp.StatusCode)
}

// classifyStatus classifies an answer by its status.
func classifyStatus(status int) outcome {
	switch {
	case status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		return answered5xx
	case status >= 500:
		return answeredErr
	}
	return succeeded
}

// roundTrip sends the request to an instance picked by the route's policy
// and retries when that is safe: a connection that could not be made is
// retried on another instance for any method (nothing reached it); a reset
// or a 502/503/504 only for idempotent requests whose body could be
// replayed. Every retry spends the route's retry budget and waits a
// jittered backoff. Each attempt is a client span, a child of the gateway's
// server span.
func (p *Proxy) roundTrip(req *http.Request) (resp *http.Response, err error) {
	ex := req.Context().Value(ctxKey{}).(*exchange)
	// The last clock reading, after the last attempt: when the answer
	// given the client, the last one or one held before it, is had.
	var last time.Time
	defer func() {
		if resp != nil {
			ex.answered(last) // the client's answer: its body may now stream
		}
	}()
	route := ex.route
	ex.streamed.ReadCloser = req.Body // for bodies not buffered
	streamed := &ex.streamed
	// held is the last retryable answer (a 502/503/504), kept until a
	// better one comes: if no instance is left to try, it is the client's.
	var held *http.Response
	defer func() { release(held) }()
	var reason outcome
	for {
		attemptStart := time.Now()
		var ep *balance.Endpoint
		var err error
		if res := ex.resumed; res != nil && ex.attempts == 0 {
			attemptStart, ep = res.attemptAt, res.ep // the loop's pick
		} else {
			ep, err = p.pick(req, ex, p.gw.at(attemptStart))
		}
		last, ex.attemptAt = attemptStart, attemptStart
		if err != nil {
			if held != nil {
				resp := held
				held = nil
				return resp, nil
			}
			if ex.lastErr != nil {
				return nil, ex.lastErr // every instance failed: report the real cause
			}
			return nil, err
		}
		ex.tried = append(ex.tried, ep)
		ex.attempts++
		resp, ended, err := p.attempt(req, ex, ep, streamed, reason, attemptStart)
		last = ended
		reason = classify(resp, err)
		p.gw.metrics.observeAttempt(req.Context(), route, ep, reason, attemptStart, ended)
		p.passiveHealth(req, ex, ep, reason, p.gw.at(ended))
		if reason == succeeded || reason == answeredErr {
			return resp, nil
		}
		retryable := reason == notConnected && !streamed.read.Load() ||
			ex.bodyOK && isIdempotent(req)
		if retryable && ex.attempts < route.policy.attempts && req.Context().Err() == nil {
			now := p.gw.at(ended)
			if route.state.budget.allowRetry(now) {
				if resp != nil {
					release(held)
					held = resp
					err = fmt.Errorf("instance %s answered %s", ep.Addr, resp.Status)
				}
				ex.lastErr = err
				route.state.counts.Retries.Add(1)
				p.gw.metrics.observeRetry(route, reason)
				p.log.Debug("retrying on another instance", "route", route.Name,
					"failed", ep.Addr, "reason", reason, "error", err)
				if !sleepCtx(req.Context(), retryBackoff(ex.attempts)) {
					return nil, p.ctxErr(req, ex)
				}
				continue
			}
			p.budgetExhausted(ex, now)
		}
		// No retry: the last answer, 5xx or not, is the client's.
		switch {
		case err == nil:
			return resp, nil
		case held != nil && req.Context().Err() == nil:
			resp := held // an earlier 5xx says more than this attempt's error
			held = nil
			return resp, nil
		case req.Context().Err() != nil:
			return nil, p.ctxErr(req, ex)
		}
		return nil, err
	}
}

// release frees a response that will not be used, leaving its connection
// reusable when the rest of the body is short.
func release(resp *http.Response) {
	if resp != nil {
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
	}
}

// pick chooses the instance for the next attempt, at now: never one this
// request already tried, never an ejected one unless the route is in
// panic mode, never one at its concurrency limit.
func (p *Proxy) pick(req *http.Request, ex *exchange, now time.Time) (*balance.Endpoint, error) {
	route := ex.route
	f := &ex.filter
	*f = pickFilter{
		tried:     ex.tried,
		now:       now,
		panicking: route.state.panic.Load(),
		limit:     int64(p.settings.MaxInflightPerInstance),
	}
	ep, err := route.picker.Pick(req, f)
	if ex.attempts == 0 {
		ex.notePanic()
	}
	if err != nil && f.atLimit {
		return nil, errInstanceOverloaded
	}
	return ep, err
}

// notePanic notes on the server span that the route's first pick
// ignored ejections.
func (ex *exchange) notePanic() {
	if ex.filter.panicking {
		ex.span.SetAttributes(attrPanic.Bool(true))
		ex.span.AddEvent("panic mode: ejections ignored")
	}
}

// pickFilter is what one pick passes over. It lives in the exchange:
// handed to the picker from there it costs no allocation, where a closure
// over the same state would cost one on every request.
type pickFilter struct {
	tried     []*balance.Endpoint
	now       time.Time
	panicking bool
	limit     int64
	atLimit   bool // an instance was passed over for its limit
}

var _ balance.Skipper = (*pickFilter)(nil)

// Skip implements balance.Skipper.
func (f *pickFilter) Skip(ep *balance.Endpoint) bool {
	if containsEndpoint(f.tried, ep) || (!f.panicking && ep.Stats.Ejected(f.now)) {
		return true
	}
	if f.limit > 0 && ep.Stats.Inflight() >= f.limit {
		f.atLimit = true
		return true
	}
	return false
}

// attempt sends one try to ep, begun at start, and says when it ended:
// when the answer's headers or the error came.
func (p *Proxy) attempt(req *http.Request, ex *exchange, ep *balance.Endpoint, streamed *attemptBody, why outcome, start time.Time) (*http.Response, time.Time, error) {
	ctx, span := req.Context(), noSpan
	resumed := ex.resumed
	ex.resumed = nil // for the first attempt only
	switch {
	case resumed != nil:
		ctx, span = trace.ContextWithSpan(ctx, resumed.attemptSpan), resumed.attemptSpan
	case p.spans:
		ctx, span = p.tracer.Start(ctx, req.Method, clientSpan)
	}
	// Attributes cost allocations: only for spans that go somewhere, and
	// all at once when the attempt has its answer.
	setAttributes := func(status int, err error) {
		if span.IsRecording() {
			span.SetAttributes(clientAttributes(ex.attrBuf(), req, ex, ep, why, status, err)...)
		}
	}

	// The try timeout bounds the wait for headers, like the route timeout;
	// it needs a timer of its own only when it ends before the route's.
	var try *tryTimer
	if d := ex.route.policy.tryTimeout; d < ex.route.policy.timeout && ex.timed && time.Until(ex.deadline) > d {
		try = &tryTimer{ex: ex}
		ctx, try.cancel = context.WithCancel(ctx)
		try.timer = time.AfterFunc(d, try.expire)
	}

	// The first attempt sends the gateway's own copy of the request as it
	// is; another gets a copy of its own, as a transport may still hold
	// the one before, and so does one in a context of its own.
	out := req
	if ctx != req.Context() || ex.attempts > 1 {
		out = req.WithContext(ctx)
		u := *req.URL
		out.URL = &u
	}
	out.URL.Host = ep.Addr
	switch {
	case ex.body != nil:
		// Known in full, the body can be sent again by the transport when
		// a pooled connection turns out stale.
		out.Body = io.NopCloser(bytes.NewReader(ex.body))
		out.GetBody = ex.getBody
	case req.Body != nil:
		out.Body = streamed
	}
	// The header map is shared by all attempts; each injection replaces the
	// previous attempt's traceparent with this attempt's span.
	if p.spans {
		p.propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
	}

	transport := p.transport
	if ex.route.policy.h2c {
		transport = p.h2c
	}
	var resp *http.Response
	var err error
	switch {
	case resumed == nil:
		ep.Stats.Begin()
		resp, err = transport.RoundTrip(out)
	case resumed.up != nil:
		// Sent by the loop, which began the instance's count too: its
		// answer is read here.
		resp, err = p.transport.(*Transport).answerOn(out, resumed.up)
	default:
		err = resumed.err
	}
	ended := time.Now()
	timedOut := try.stop()
	if err != nil {
		if timedOut && req.Context().Err() == nil {
			err = fmt.Errorf("%w: no answer from %s within %v", errTimeout, ep.Addr, ex.route.policy.tryTimeout)
		}
		ep.Stats.EndAt(ended, ended.Sub(start), 0, true)
		try.end()
		setAttributes(0, err)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.End()
		return nil, ended, err
	}
	rtt := ended.Sub(start)
	setAttributes(resp.StatusCode, nil)
	if resp.StatusCode >= 500 {
		span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
	}
	// The span, the in-flight count and the attempt's context end when the
	// body has been copied to the client, so they cover the whole exchange.
	// An upgraded connection (101) keeps its body as the tunnel:
	// ReverseProxy needs its Write method, so it is not wrapped.
	if resp.StatusCode == http.StatusSwitchingProtocols {
		ep.Stats.EndAt(ended, rtt, resp.StatusCode, false)
		span.End()
		return resp, ended, nil
	}
	resp.Body = &attemptResponse{ReadCloser: resp.Body, ex: ex, ep: ep, answered: ended, rtt: rtt, status: resp.StatusCode, span: span, try: try}
	return resp, ended, nil
}

// tryTimer is an attempt's own timeout, when it ends before the route's.
type tryTimer struct {
	ex       *exchange
	timer    *time.Timer
	cancel   context.CancelFunc
	timedOut atomic.Bool
}

func (t *tryTimer) expire() {
	t.timedOut.Store(true)
	t.cancel()
	t.ex.interrupt()
}

// stop stops the timer and says whether it had fired. Nil-safe, as are
// all its methods: an attempt without a timer of its own has a nil one.
func (t *tryTimer) stop() bool {
	if t == nil {
		return false
	}
	t.timer.Stop()
	return t.timedOut.Load()
}

// end releases the attempt's context.
func (t *tryTimer) end() {
	if t != nil {
		t.cancel()
	}
}

// clientAttributes appends an attempt span's attributes to attrs: the
// instance chosen, why this is a retry, and the answer's status or the
// error's type.
func clientAttributes(attrs []attribute.KeyValue, req *http.Request, ex *exchange, ep *balance.Endpoint,
	why outcome, status int, err error) []attribute.KeyValue {
	inst := ep.Instance
	attrs = append(attrs,
		semconv.HTTPRequestMethodKey.String(req.Method),
		semconv.ServerAddress(inst.Address),
		semconv.ServerPort(inst.Port),
		semconv.URLFull("http://"+ep.Addr+req.URL.RequestURI()),
		attrService.String(ex.route.Service),
		attrInstanceID.String(inst.ID),
		attrNode.String(inst.Node),
		attrAttempt.Int(ex.attempts))
	if ex.attempts > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(ex.attempts-1), attrRetry.String(why.String()))
	}
	if err != nil {
		return append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
	}
	return append(attrs, semconv.HTTPResponseStatusCode(status))
}

// passiveHealth feeds one attempt's outcome, known at now, to outlier
// detection.
func (p *Proxy) passiveHealth(req *http.Request, ex *exchange, ep *balance.Endpoint, o outcome, now time.Time) {
	cfg := p.settings.Outlier
	switch {
	case o == succeeded:
		ep.Stats.RecordSuccess(now, cfg)
		return
	case req.Context().Err() != nil && !ex.timedOut.Load():
		return // the client left: not the instance's fault
	}
	if !ep.Stats.RecordFailure(cfg) {
		return
	}
	route := ex.route
	ejected := len(route.Endpoints) - healthy(route.Endpoints, now)
	if float64(ejected+1) > cfg.MaxEjectedShare*float64(len(route.Endpoints)) {
		p.log.Debug("not ejecting: the route is at its ejection cap", "route", route.Name,
			"instance", ep.Instance.ID, "ejected", ejected, "routable", len(route.Endpoints))
		return
	}
	d := ep.Stats.Eject(now, cfg)
	route.state.counts.Ejections.Add(1)
	ex.span.AddEvent("instance ejected", trace.WithAttributes(
		attrInstanceID.String(ep.Instance.ID), attribute.String("hopgate.ejection.duration", d.String())))
	p.log.Warn("instance ejected after consecutive failures", "route", route.Name,
		"instance", ep.Instance.ID, "address", ep.Addr, "for", d, "failures", cfg.Consecutive)
	if changed, panicking := route.updatePanic(now, p.settings.PanicThreshold); changed {
		p.gw.logPanic(route, panicking, now)
	}
}

func (p *Proxy) budgetExhausted(ex *exchange, now time.Time) {
	ex.span.AddEvent("retry budget exhausted")
	ex.route.state.counts.BudgetExhausted.Add(1)
	last := ex.route.state.lastBudgetLog.Load()
	if now.UnixNano()-last > int64(time.Second) && ex.route.state.lastBudgetLog.CompareAndSwap(last, now.UnixNano()) {
		p.log.Warn("retry budget exhausted: not retrying", "route", ex.route.Name,
			"budget", p.settings.RetryBudget, "floor_per_second", p.settings.RetryFloor)
	}
}

// ctxErr names why the request context ended: the route timeout, or the
// client going away.
func (p *Proxy) ctxErr(req *http.Request, ex *exchange) error {
	if ex.timedOut.Load() {
		return fmt.Errorf("%w: no answer within the route timeout of %v", errTimeout, ex.route.policy.timeout)
	}
	return req.Context().Err()
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func errorType(err error) string {
	switch {
	case isDialError(err):
		return "connect_failure"
	case errors.Is(err, errTimeout):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "transport"
}

func containsEndpoint(eps []*balance.Endpoint, ep *balance.Endpoint) bool {
	for _, e := range eps {
		if e == ep {
			return true
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
