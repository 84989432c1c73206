package balance

import (
	"math"
	"net/http"
	"sync/atomic"
	"time"
)

// Latency-estimate parameters of the peak_ewma policy.
const (
	// DecayTime is the time constant (tau) of the latency estimate: a
	// sample's weight falls to 1/e after DecayTime. Between requests the
	// estimate also decays toward zero with the same constant, so an
	// instance that was slow once is probed again after a while.
	DecayTime = 10 * time.Second
	// PenaltyLatency is the sample a failed attempt (connect error,
	// timeout) or a 429/503 answer counts as, unless the attempt itself
	// took longer. A fixed penalty, as in Finagle: it makes a failing
	// instance expensive at once, whatever its latency was, and lets it
	// earn its way back as good samples decay the peak.
	PenaltyLatency = time.Second
	// DefaultLatency is the estimate of an instance that has answered
	// nothing yet. It is small so that a new instance gets probed; slow
	// start keeps it from being flooded. (The peak_ewma picker, comparing
	// one measured and one unmeasured instance, lends the unmeasured one
	// its rival's estimate instead, so the two compete on load alone.)
	DefaultLatency = time.Millisecond
)

// Stats are the live measurements of one instance, shared by every routing
// table that holds it so that a new snapshot keeps what was learnt. All
// methods are safe for concurrent use and take no lock.
type Stats struct {
	// since is when the instance first became routable (slow start).
	since    time.Time
	inflight atomic.Int64
	latency  ewma
	outlier  outlierState
}

// NewStats starts the measurements of an instance first seen at now.
func NewStats(now time.Time) *Stats {
	return &Stats{since: now}
}

// Since is when the instance first became routable.
func (s *Stats) Since() time.Time { return s.since }

// Inflight is the number of requests the gateway has open to the instance.
func (s *Stats) Inflight() int64 { return s.inflight.Load() }

// Begin counts an attempt to the instance as in flight. Every Begin must be
// matched by one End or EndAt.
func (s *Stats) Begin() { s.inflight.Add(1) }

// End closes an attempt begun with Begin and feeds its round-trip time to
// the latency estimate: rtt is from sending the request to the response
// headers (or to the failure), status the answer's status code (0 when
// there was none), failed whether the attempt failed without an answer.
func (s *Stats) End(rtt time.Duration, status int, failed bool) {
	s.EndAt(time.Now(), rtt, status, failed)
}

// EndAt is End for a caller that already knows the time the attempt ended.
func (s *Stats) EndAt(now time.Time, rtt time.Duration, status int, failed bool) {
	s.inflight.Add(-1)
	s.Observe(now, rtt, status, failed)
}

// Observe feeds one sample to the latency estimate without touching the
// in-flight count. A failed attempt, or a 429 or 503 answer, counts as at
// least PenaltyLatency.
func (s *Stats) Observe(now time.Time, rtt time.Duration, status int, failed bool) {
	sample := float64(rtt)
	if failed || status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		sample = max(sample, float64(PenaltyLatency))
	}
	s.latency.observe(clock(now), sample)
}

// Latency is the peak-EWMA latency estimate at now; ok is false while the
// instance has answered nothing (and the estimate is DefaultLatency).
func (s *Stats) Latency(now time.Time) (d time.Duration, ok bool) {
	v, ok := s.latency.at(clock(now))
	if !ok {
		return DefaultLatency, false
	}
	return time.Duration(v), true
}

// Cost is the peak_ewma load of the instance at now: its latency estimate
// in nanoseconds times (in-flight requests + 1). An instance not measured
// yet costs DefaultLatency per request.
func (s *Stats) Cost(now time.Time) float64 {
	v, ok := s.latency.at(clock(now))
	if !ok {
		v = float64(DefaultLatency)
	}
	return v * float64(s.inflight.Load()+1)
}

// epoch is the origin of the estimate's time stamps: times are stored as
// nanoseconds since it, using the monotonic clock when they carry one. It
// lies a century back so that every stamp is positive (0 is "never").
var epoch = time.Now().Add(-100 * 365 * 24 * time.Hour)

func clock(t time.Time) int64 { return int64(t.Sub(epoch)) }

// ewma is a peak exponentially weighted moving average of latency
// (Finagle's and linkerd's "peak EWMA"): a sample above the estimate
// replaces it at once; a lower one pulls it down with weight
// 1-exp(-dt/DecayTime), dt being the time since the last update.
//
// It is lock-free: the estimate (float64 nanoseconds, 0 meaning never
// measured) and the time of the last update live in two atomics. An update
// first advances the stamp with a compare-and-swap (so concurrent updates
// share out the elapsed time instead of each counting it), then folds the
// sample into the estimate with a compare-and-swap loop. A reader may see
// the two fields from different updates; that costs a rounding error in a
// heuristic, not a data race.
type ewma struct {
	bits  atomic.Uint64
	stamp atomic.Int64
}

func (e *ewma) observe(now int64, sample float64) {
	sample = max(sample, 1) // 0 bits are "never measured"
	var dt int64
	for {
		last := e.stamp.Load()
		if now <= last {
			break
		}
		if e.stamp.CompareAndSwap(last, now) {
			dt = now - last
			break
		}
	}
	w := decay(dt)
	for {
		old := e.bits.Load()
		v := math.Float64frombits(old)
		next := sample
		if old != 0 && sample < v {
			next = v*w + sample*(1-w)
		}
		if e.bits.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// at is the estimate at now, decayed toward zero for the time since the
// last update, as linkerd's load estimate does; it writes nothing.
func (e *ewma) at(now int64) (float64, bool) {
	old := e.bits.Load()
	if old == 0 {
		return 0, false
	}
	v := math.Float64frombits(old)
	if dt := now - e.stamp.Load(); dt > 0 {
		v *= decay(dt)
	}
	return v, true
}

// decay is exp(-dt/DecayTime). Under load dt is mostly well under a
// millisecond, where the second-order Taylor polynomial is exact to 1e-9
// and costs a fraction of math.Exp on the hot path.
func decay(dt int64) float64 {
	x := float64(dt) / float64(DecayTime)
	if x < 1e-3 {
		return 1 - x + x*x/2
	}
	return math.Exp(-x)
}

// Registry keeps the Stats of instances across routing tables, by instance
// key (discovery.Instance.Key), so that a new table keeps the in-flight
// counts and latency estimates of the instances it shares with the last.
//
// It counts references: whoever routes to an instance Acquires it and
// Releases it when the instance leaves, so a table build touches only the
// instances that changed, never the whole registry. An instance whose last
// reference is released is forgotten: if it comes back it gets fresh Stats,
// and so ramps up again under slow start.
//
// A Registry is not safe for concurrent use: only the goroutine that builds
// the tables may call it (the Stats it hands out are safe anywhere). Its
// zero value is ready to use.
type Registry struct {
	m map[string]*regEntry
}

// NewRegistry returns an empty Registry (the zero value is one too).
func NewRegistry() *Registry { return &Registry{} }

type regEntry struct {
	stats *Stats
	refs  int
}

// Acquire returns the Stats of the instance key and takes one reference to
// them, starting new ones (first seen at now) for an instance it does not
// hold.
func (r *Registry) Acquire(key string, now time.Time) *Stats {
	if r.m == nil {
		r.m = map[string]*regEntry{}
	}
	e := r.m[key]
	if e == nil {
		e = &regEntry{stats: NewStats(now)}
		r.m[key] = e
	}
	e.refs++
	return e.stats
}

// Release drops one reference taken by Acquire, and forgets the instance
// with its last one.
func (r *Registry) Release(key string) {
	e := r.m[key]
	if e == nil {
		return
	}
	if e.refs--; e.refs <= 0 {
		delete(r.m, key)
	}
}

// Len is the number of instances the registry holds.
func (r *Registry) Len() int { return len(r.m) }
