package gateway

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"

	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/gateway/balance"
	"github.com/hopgate/hopgate/telemetry"
)

// noRoute is the route label of requests that matched no route (404s).
const noRoute = "none"

// Metrics are the gateway's Prometheus metrics (client_golang). What the
// request path records goes through handles resolved once per route and per
// route instance when a table is built, so a request costs a few atomic adds
// and no label lookup. What the gateway already counts (in-flight requests,
// ejections, panics, budget exhaustion) and discovery's state are read at
// scrape time by a collector, never counted twice.
type Metrics struct {
	reg *prometheus.Registry

	requests         *prometheus.CounterVec   // route, method, code
	duration         *prometheus.HistogramVec // route
	upstreamDuration *prometheus.HistogramVec // route, instance, node
	attempts         *prometheus.CounterVec   // route, instance, node, outcome
	retries          *prometheus.CounterVec   // route, reason
	routeUpdate      prometheus.Histogram

	none *routeMetrics // requests with no route

	discovery atomic.Pointer[func() discovery.Status]
	built     atomic.Int64 // unix nanos: Snapshot.Built of the table in force

	rateMu sync.Mutex // guards the rate samples of every route and upstream
}

// Attempt outcomes, the outcome label of hopgate_upstream_attempts_total.
var outcomeNames = [...]string{
	succeeded:    "ok",
	notConnected: "connect_failure",
	failedSent:   "reset",
	answered5xx:  "status_5xx",
	answeredErr:  "error_5xx",
}

// retryReasons are the reasons a request is retried (outcome values).
var retryReasons = [...]outcome{notConnected, failedSent, answered5xx}

func newMetrics(gw *Gateway) *Metrics {
	m := &Metrics{reg: telemetry.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hopgate_requests_total",
		Help: "Requests answered by the gateway, by route, method and status class (route \"none\": no route matched).",
	}, []string{"route", "method", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hopgate_request_duration_seconds",
		Help:    "Time from a request's arrival to the end of its answer, retries included, by route.",
		Buckets: telemetry.LatencyBuckets,
	}, []string{"route"})
	m.upstreamDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hopgate_upstream_duration_seconds",
		Help:    "Time from sending one attempt to an instance to its answer's headers (or failure), by route and instance.",
		Buckets: telemetry.LatencyBuckets,
	}, []string{"route", "instance", "node"})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hopgate_upstream_attempts_total",
		Help: "Attempts sent to instances, by route, instance and outcome (ok, connect_failure, reset, status_5xx, error_5xx).",
	}, []string{"route", "instance", "node", "outcome"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hopgate_upstream_retries_total",
		Help: "Retries on another instance, by route and the reason the previous attempt failed.",
	}, []string{"route", "reason"})
	m.routeUpdate = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hopgate_discovery_route_update_seconds",
		Help:    "Time from discovery receiving Consul's answer at a new index to the gateway's routing table for it being in force.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	})
	m.reg.MustRegister(m.requests, m.duration, m.upstreamDuration, m.attempts, m.retries, m.routeUpdate,
		&scrapeCollector{gw: gw, m: m})
	m.none = m.newRouteMetrics(noRoute)
	return m
}

// Registry holds every gateway metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves /metrics: Prometheus text, or OpenMetrics with exemplars
// when asked.
func (m *Metrics) Handler() http.Handler { return telemetry.MetricsHandler(m.reg) }

// routeMetrics are one route's handles. They live in its routeState, so
// they outlive tables like the route does.
type routeMetrics struct {
	m         *Metrics
	name      string
	requests  [telemetry.NumMethodClasses][telemetry.NumStatusClasses]lazyCounter
	duration  prometheus.Observer
	exemplars telemetry.Exemplars
	retries   [len(retryReasons)]prometheus.Counter
	// upstreams by instance key; touched only by the table builder.
	upstreams map[string]*upstreamMetrics
	rate      rateSample // guarded by Metrics.rateMu
}

// upstreamMetrics are the handles of one instance on one route.
type upstreamMetrics struct {
	instance, node string
	duration       lazyObserver // made by the first attempt: ~2 KB an instance
	exemplars      telemetry.Exemplars
	attempts       [len(outcomeNames)]lazyCounter
	rate           rateSample // guarded by Metrics.rateMu
}

// lazyCounter resolves its series on first use, so combinations that never
// happen (DELETE answered 1xx) export nothing.
type lazyCounter struct {
	c atomic.Pointer[prometheus.Counter]
}

func (l *lazyCounter) get(vec *prometheus.CounterVec, labels ...string) prometheus.Counter {
	if c := l.c.Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(labels...)
	l.c.CompareAndSwap(nil, &c)
	return c
}

// lazyObserver is lazyCounter for a histogram: at thousands of instances,
// histograms made before any traffic would be most of the gateway's heap.
// The two are not one generic type: through the interface that would need,
// the labels escape, three allocations on every request.
type lazyObserver struct {
	o atomic.Pointer[prometheus.Observer]
}

func (l *lazyObserver) get(vec *prometheus.HistogramVec, labels ...string) prometheus.Observer {
	if o := l.o.Load(); o != nil {
		return *o
	}
	o := vec.WithLabelValues(labels...)
	l.o.CompareAndSwap(nil, &o)
	return o
}

// load returns the histogram, nil before its first use.
func (l *lazyObserver) load() prometheus.Observer {
	if o := l.o.Load(); o != nil {
		return *o
	}
	return nil
}

func (m *Metrics) newRouteMetrics(name string) *routeMetrics {
	rm := &routeMetrics{m: m, name: name, duration: m.duration.WithLabelValues(name),
		upstreams: map[string]*upstreamMetrics{}}
	for i, r := range retryReasons {
		rm.retries[i] = m.retries.WithLabelValues(name, r.String())
	}
	return rm
}

// upstream returns the handles of instance ep on the route, made on first
// sight. Called by the table builder only.
func (rm *routeMetrics) upstream(key string, ep *balance.Endpoint) *upstreamMetrics {
	if um := rm.upstreams[key]; um != nil {
		return um
	}
	um := &upstreamMetrics{instance: ep.Instance.ID, node: ep.Instance.Node}
	rm.upstreams[key] = um
	return um
}

// prune forgets the instances that left the route, and their series.
// Series are deleted by their exact labels: a partial-match delete scans
// every series of a metric, which would make one instance leaving cost as
// much as the whole table.
func (rm *routeMetrics) prune(keep map[string]bool) {
	for key, um := range rm.upstreams {
		if !keep[key] {
			delete(rm.upstreams, key)
			rm.dropUpstream(um)
		}
	}
}

func (rm *routeMetrics) dropUpstream(um *upstreamMetrics) {
	if um.duration.load() != nil {
		rm.m.upstreamDuration.DeleteLabelValues(rm.name, um.instance, um.node)
	}
	for o := range um.attempts {
		if um.attempts[o].c.Load() != nil {
			rm.m.attempts.DeleteLabelValues(rm.name, um.instance, um.node, outcomeNames[o])
		}
	}
}

// drop deletes every series of a route that left the table, by their exact
// labels (see prune).
func (rm *routeMetrics) drop() {
	for mc := range rm.requests {
		for sc := range rm.requests[mc] {
			if rm.requests[mc][sc].c.Load() != nil {
				rm.m.requests.DeleteLabelValues(rm.name, telemetry.MethodClassName(mc), telemetry.StatusClassName(sc))
			}
		}
	}
	rm.m.duration.DeleteLabelValues(rm.name)
	for _, r := range retryReasons {
		rm.m.retries.DeleteLabelValues(rm.name, r.String())
	}
	for _, um := range rm.upstreams {
		rm.dropUpstream(um)
	}
}

// observeRequest records one answered request. route is nil for a 404.
func (m *Metrics) observeRequest(ctx context.Context, route *Route, method string, status int, start time.Time) {
	if m == nil {
		return
	}
	rm := m.none
	if route != nil && route.state.metrics != nil {
		rm = route.state.metrics
	}
	now := time.Now()
	mc, sc := telemetry.MethodClass(method), telemetry.StatusClass(status)
	rm.requests[mc][sc].get(m.requests, rm.name, telemetry.MethodClassName(mc), telemetry.StatusClassName(sc)).Inc()
	rm.exemplars.Observe(rm.duration, now.Sub(start).Seconds(), trace.SpanContextFromContext(ctx), now)
}

// observeAttempt records one attempt to ep, from start to end, and its
// outcome.
func (m *Metrics) observeAttempt(ctx context.Context, route *Route, ep *balance.Endpoint, o outcome, start, end time.Time) {
	if m == nil {
		return
	}
	um := route.upstreams[ep]
	if um == nil {
		return
	}
	rm := route.state.metrics
	um.attempts[o].get(m.attempts, rm.name, um.instance, um.node, outcomeNames[o]).Inc()
	duration := um.duration.get(m.upstreamDuration, rm.name, um.instance, um.node)
	um.exemplars.Observe(duration, end.Sub(start).Seconds(), trace.SpanContextFromContext(ctx), end)
}

// observeRetry counts a retry and its reason.
func (m *Metrics) observeRetry(route *Route, reason outcome) {
	if m == nil || route.state.metrics == nil {
		return
	}
	for i, r := range retryReasons {
		if r == reason {
			route.state.metrics.retries[i].Inc()
		}
	}
}

// applied records a table put in force at done for snap. The route-update
// latency runs from the arrival of Consul's answer (snap.Changed), so that
// it includes discovery's coalescing and assembly, not only the table build.
func (m *Metrics) applied(snap *discovery.Snapshot, done time.Time) {
	if m == nil || snap.Built.IsZero() {
		return
	}
	m.built.Store(snap.Built.UnixNano())
	changed := snap.Changed
	if changed.IsZero() { // a snapshot made by hand
		changed = snap.Built
	}
	m.routeUpdate.Observe(done.Sub(changed).Seconds())
}

// SetDiscovery gives the metrics discovery's state, read at scrape time.
func (m *Metrics) SetDiscovery(status func() discovery.Status) {
	if m != nil && status != nil {
		m.discovery.Store(&status)
	}
}

// scrapeCollector exports, at scrape time, what the gateway already keeps:
// per route and instance state, resilience counts, discovery's state.
type scrapeCollector struct {
	gw *Gateway
	m  *Metrics
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descRouteInflight   = desc("hopgate_route_inflight_requests", "Requests in flight on a route.", "route")
	descRouteInstances  = desc("hopgate_route_instances", "Routable (Consul-passing) instances of a route.", "route")
	descRouteCritical   = desc("hopgate_route_instances_critical", "Instances of a route's service that Consul reports critical.", "route")
	descRoutePanic      = desc("hopgate_route_panic", "1 while a route is in panic mode (too few healthy instances; ejections ignored).", "route")
	descRoutePanics     = desc("hopgate_route_panics_total", "Times a route entered panic mode.", "route")
	descRouteEjections  = desc("hopgate_route_ejections_total", "Instances ejected from a route by passive health.", "route")
	descRouteBudget     = desc("hopgate_route_retry_budget_exhausted_total", "Retries not made because the route's retry budget was spent.", "route")
	descUpInflight      = desc("hopgate_upstream_inflight_requests", "Attempts open to an instance.", "route", "instance", "node")
	descUpEjected       = desc("hopgate_upstream_ejected", "1 while passive health keeps an instance out of a route.", "route", "instance", "node")
	descReady           = desc("hopgate_ready", "1 once the first snapshot is applied and while not draining.")
	descTableIndex      = desc("hopgate_routes_consul_index", "Consul index of the snapshot the routing table was built from.")
	descSnapshotAge     = desc("hopgate_discovery_snapshot_age_seconds", "Age of the snapshot the routing table was built from (it grows while nothing changes in Consul).")
	descDiscIndex       = desc("hopgate_discovery_consul_index", "Consul index of the last snapshot discovery built.")
	descDiscErrors      = desc("hopgate_discovery_consul_errors_total", "Failed Consul queries.")
	descDiscStale       = desc("hopgate_discovery_stale", "1 while the last Consul query failed and the last good routes serve (fail static).")
	descDiscContact     = desc("hopgate_discovery_last_contact_age_seconds", "Seconds since Consul last answered a query.")
	descDiscServices    = desc("hopgate_discovery_watched_services", "Opted-in services discovery watches.")
	descDiscInstances   = desc("hopgate_discovery_watched_instances", "Non-critical instances in the last snapshot.")
	scrapeCollectorDesc = []*prometheus.Desc{descRouteInflight, descRouteInstances, descRouteCritical, descRoutePanic,
		descRoutePanics, descRouteEjections, descRouteBudget, descUpInflight, descUpEjected, descReady, descTableIndex,
		descSnapshotAge, descDiscIndex, descDiscErrors, descDiscStale, descDiscContact, descDiscServices, descDiscInstances}
)

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range scrapeCollectorDesc {
		ch <- d
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.gw.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	t := c.gw.Table()
	gauge(descReady, b2f(c.gw.Ready()))
	gauge(descTableIndex, float64(t.Index()))
	if b := c.m.built.Load(); b != 0 {
		gauge(descSnapshotAge, now.Sub(time.Unix(0, b)).Seconds())
	}
	for _, r := range t.Routes() {
		st := r.state
		gauge(descRouteInflight, float64(st.inflight.Load()), r.Name)
		gauge(descRouteInstances, float64(len(r.Endpoints)), r.Name)
		gauge(descRouteCritical, float64(r.Unroutable), r.Name)
		gauge(descRoutePanic, b2f(st.panic.Load()), r.Name)
		counter(descRoutePanics, float64(st.counts.Panics.Load()), r.Name)
		counter(descRouteEjections, float64(st.counts.Ejections.Load()), r.Name)
		counter(descRouteBudget, float64(st.counts.BudgetExhausted.Load()), r.Name)
		for _, ep := range r.Endpoints {
			in := ep.Instance
			gauge(descUpInflight, float64(ep.Stats.Inflight()), r.Name, in.ID, in.Node)
			gauge(descUpEjected, b2f(ep.Stats.Ejected(now)), r.Name, in.ID, in.Node)
		}
	}
	if f := c.m.discovery.Load(); f != nil {
		st := (*f)()
		gauge(descDiscIndex, float64(st.Index))
		counter(descDiscErrors, float64(st.Errors))
		gauge(descDiscStale, b2f(st.LastError != ""))
		if !st.LastContact.IsZero() {
			gauge(descDiscContact, now.Sub(st.LastContact).Seconds())
		}
		gauge(descDiscServices, float64(st.Services))
		gauge(descDiscInstances, float64(st.Instances))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// rateSample turns a cumulative histogram into a recent rate and p99: the
// dashboard asks at most once a second, and each answer compares the
// histogram with the one taken at the previous ask.
type rateSample struct {
	at      time.Time
	count   uint64
	buckets []uint64
	// The last window's figures.
	rps float64
	p99 float64 // seconds; 0 when the window saw no request
	ok  bool
}

// Rate is a recent request rate and 99th-percentile latency.
type Rate struct {
	RPS   float64  `json:"rps"`
	P99Ms *float64 `json:"p99_ms,omitempty"` // nil when no request in the window
}

// minRateWindow is the shortest window rates are computed over.
const minRateWindow = 900 * time.Millisecond

// sampleRate updates s from histogram h at now and returns the figures.
func sampleRate(s *rateSample, h prometheus.Observer, now time.Time) Rate {
	if s.at.IsZero() || now.Sub(s.at) >= minRateWindow {
		if count, buckets, ok := histogramCounts(h); ok {
			if !s.at.IsZero() && count >= s.count && len(buckets) == len(s.buckets) {
				dt := now.Sub(s.at).Seconds()
				n := count - s.count
				s.rps = float64(n) / dt
				s.p99 = 0
				if n > 0 {
					s.p99 = quantile(0.99, n, telemetry.LatencyBuckets, buckets, s.buckets)
				}
				s.ok = true
			}
			s.at, s.count, s.buckets = now, count, buckets
		}
	}
	r := Rate{RPS: s.rps}
	if s.ok && s.p99 > 0 {
		ms := s.p99 * 1000
		r.P99Ms = &ms
	}
	return r
}

// histogramCounts reads a latency histogram's count and cumulative bucket
// counts. A histogram not made yet (nil: nothing observed) counts zero.
func histogramCounts(h prometheus.Observer) (uint64, []uint64, bool) {
	if h == nil {
		return 0, make([]uint64, len(telemetry.LatencyBuckets)), true
	}
	metric, ok := h.(prometheus.Metric)
	if !ok {
		return 0, nil, false
	}
	var d dto.Metric
	if metric.Write(&d) != nil || d.Histogram == nil {
		return 0, nil, false
	}
	buckets := make([]uint64, len(d.Histogram.Bucket))
	for i, b := range d.Histogram.Bucket {
		buckets[i] = b.GetCumulativeCount()
	}
	return d.Histogram.GetSampleCount(), buckets, true
}

// quantile estimates the q quantile of the n observations between two
// cumulative bucket snapshots, interpolating linearly inside a bucket as
// Prometheus's histogram_quantile does.
func quantile(q float64, n uint64, bounds []float64, now, before []uint64) float64 {
	rank := q * float64(n)
	var prev uint64
	for i, ub := range bounds {
		if i >= len(now) {
			break
		}
		c := now[i] - before[i]
		if float64(c) >= rank {
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			inBucket := c - prev
			if inBucket == 0 {
				return ub
			}
			return lo + (ub-lo)*(rank-float64(prev))/float64(inBucket)
		}
		prev = c
	}
	return bounds[len(bounds)-1] // above the last bucket: its bound is all we know
}
