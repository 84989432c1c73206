package telemetry

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
)

// Metrics are exported with the Prometheus client library (client_golang),
// not the OpenTelemetry metrics SDK: its counter and histogram handles cost
// a few atomic adds per observation, label values can be resolved once
// into a handle and kept, and it writes exemplars carrying trace IDs in the
// OpenMetrics format that Prometheus negotiates. See the gateway's metrics
// benchmark for the measured cost.

// LatencyBuckets are the histogram buckets (seconds) of every request
// duration, from half a millisecond to ten seconds.
var LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves reg in the Prometheus text format, or OpenMetrics
// (with exemplars) when the scraper asks for it in its Accept header.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: reg})
}

// Method classes: the label values of a request's method. Anything else is
// "other", so a client cannot create series at will.
var methodClasses = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}

// NumMethodClasses is the number of values MethodClass returns.
const NumMethodClasses = len(methodClasses)

// MethodClass maps a method to its index in the method classes.
func MethodClass(m string) int {
	for i, c := range methodClasses[:len(methodClasses)-1] {
		if m == c {
			return i
		}
	}
	return len(methodClasses) - 1
}

// MethodClassName is the label value of a method class.
func MethodClassName(i int) string { return methodClasses[i] }

// statusClasses are the label values of status codes: 1xx to 5xx.
var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// NumStatusClasses is the number of values StatusClass returns.
const NumStatusClasses = len(statusClasses)

// StatusClass maps a status code to its class index (0 for 1xx, 4 for 5xx
// and anything out of range).
func StatusClass(code int) int {
	c := code/100 - 1
	if c < 0 || c >= len(statusClasses) {
		return len(statusClasses) - 1
	}
	return c
}

// StatusClassName is the label value of a status class.
func StatusClassName(i int) string { return statusClasses[i] }

// ExemplarThrottle is the least time between two exemplars on one series:
// Prometheus keeps one exemplar per bucket, so more would only cost.
const ExemplarThrottle = 100 * time.Millisecond

// Exemplars decides when an observation carries its trace ID as an
// exemplar: when its span is sampled and the last exemplar is at least
// ExemplarThrottle old. The zero value is ready.
type Exemplars struct{ last atomic.Int64 }

// Observe records v on h, with the trace ID of sc as an exemplar when due.
func (e *Exemplars) Observe(h prometheus.Observer, v float64, sc trace.SpanContext, now time.Time) {
	if sc.IsSampled() {
		last := e.last.Load()
		if n := now.UnixNano(); n-last >= int64(ExemplarThrottle) && e.last.CompareAndSwap(last, n) {
			if eo, ok := h.(prometheus.ExemplarObserver); ok {
				eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String()})
				return
			}
		}
	}
	h.Observe(v)
}

// HTTPMetrics are a server's request metrics: requests by method and
// status class, a duration histogram with trace-ID exemplars, and the
// requests in flight. The backends use them; the gateway has its own, per
// route and upstream.
type HTTPMetrics struct {
	reg       *prometheus.Registry
	requests  [NumMethodClasses][NumStatusClasses]prometheus.Counter
	duration  prometheus.Histogram
	inflight  prometheus.Gauge
	exemplars Exemplars
}

// NewHTTPMetrics registers a server's request metrics, named
// <namespace>_http_requests_total and so on, on a new registry.
func NewHTTPMetrics(namespace string) *HTTPMetrics {
	m := &HTTPMetrics{reg: NewRegistry()}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "http_requests_total",
		Help: "HTTP requests served, by method and status class.",
	}, []string{"method", "code"})
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "http_request_duration_seconds",
		Help:    "Time from a request's arrival to the end of its handler.",
		Buckets: LatencyBuckets,
	})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "http_inflight_requests", Help: "HTTP requests being served.",
	})
	m.reg.MustRegister(requests, m.duration, m.inflight)
	for mc := range m.requests {
		for sc := range m.requests[mc] {
			m.requests[mc][sc] = requests.WithLabelValues(methodClasses[mc], statusClasses[sc])
		}
	}
	return m
}

// Registry is where the metrics live, for more of them.
func (m *HTTPMetrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics (see MetricsHandler).
func (m *HTTPMetrics) Handler() http.Handler { return MetricsHandler(m.reg) }

// Wrap measures every request to next for which skip (may be nil) is
// false. Put it inside the tracing handler so exemplars see the span.
func (m *HTTPMetrics) Wrap(next http.Handler, skip func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if skip != nil && skip(r) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		m.inflight.Inc()
		rec := &codeRecorder{ResponseWriter: w}
		defer func() {
			m.inflight.Dec()
			now := time.Now()
			m.requests[MethodClass(r.Method)][StatusClass(rec.status())].Inc()
			m.exemplars.Observe(m.duration, now.Sub(start).Seconds(), trace.SpanContextFromContext(r.Context()), now)
		}()
		next.ServeHTTP(rec, r)
	})
}

type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) {
	if c.code == 0 && code >= 200 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeRecorder) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

func (c *codeRecorder) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *codeRecorder) status() int {
	if c.code == 0 {
		return http.StatusOK
	}
	return c.code
}
