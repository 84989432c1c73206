package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"time"
)

// New builds the picker of cfg.Policy ("" means DefaultPolicy) over eps.
// The endpoints must have non-nil Stats; a weight below 1 counts as 1. now
// is the clock for slow start and latency decay (nil means time.Now).
//
// With no endpoints it returns a picker whose every Pick fails with
// ErrNoEndpoint. An unknown policy or hash key also gives an error picker,
// with an error that says so; ParseConfig rejects both before they get here.
//
// Slow start (cfg.SlowStart > 0) applies to every policy but hash: an
// endpoint whose Stats.Since is less than SlowStart ago is accepted, when
// drawn, with probability max(0.1, elapsed/SlowStart) (a linear ramp,
// aggression 1, as Envoy's), and otherwise the picker draws again. The
// draws are bounded; when only ramping endpoints are left, Pick returns the
// first one it turned down rather than fail. Hash ignores slow start: it
// would break the stickiness of the keys that hash to a new instance.
func New(cfg Config, eps []*Endpoint, now func() time.Time) Picker {
	if len(eps) == 0 {
		return errPicker{ErrNoEndpoint}
	}
	if now == nil {
		now = time.Now
	}
	eps = append([]*Endpoint(nil), eps...)
	ss := newSlowStart(cfg.SlowStart, eps, now)
	switch cfg.Policy {
	case RoundRobin:
		return newSmoothRR(eps, ss)
	case Random:
		return &random{s: newSampler(eps), ss: ss}
	case LeastRequest:
		return &leastRequest{s: newSampler(eps), ss: ss}
	case PeakEWMA, "":
		return &peakEWMA{s: newSampler(eps), ss: ss}
	case Hash:
		p, err := newRingHash(cfg.HashOn, eps)
		if err != nil {
			return errPicker{err}
		}
		return p
	}
	return errPicker{fmt.Errorf("unknown balancing policy %q", cfg.Policy)}
}

var (
	_ Picker = errPicker{}
	_ Picker = (*smoothRR)(nil)
	_ Picker = (*random)(nil)
	_ Picker = (*leastRequest)(nil)
	_ Picker = (*peakEWMA)(nil)
	_ Picker = (*ringHash)(nil)
)

// errPicker is the picker of a route with nothing to pick: the request path
// never checks for "no state", it just gets the error.
type errPicker struct{ err error }

func (p errPicker) Pick(*http.Request, Skipper) (*Endpoint, error) {
	return nil, p.err
}

func weight(e *Endpoint) uint64 { return uint64(max(e.Weight, 1)) }

// slowStart is the ramp of a picker's endpoints. until is when the last of
// them leaves its window, as of the build: after it (or with no window)
// Pick does not even read the clock for slow start.
type slowStart struct {
	window time.Duration
	until  time.Time
	now    func() time.Time
}

func newSlowStart(window time.Duration, eps []*Endpoint, now func() time.Time) slowStart {
	ss := slowStart{window: window, now: now}
	if window <= 0 {
		return ss
	}
	t := now()
	for _, e := range eps {
		if end := e.Stats.Since().Add(window); end.After(t) && end.After(ss.until) {
			ss.until = end
		}
	}
	return ss
}

// gate starts the candidate filter of one Pick. t is the time if the
// caller has read the clock already, else zero.
func (ss *slowStart) gate(skip Skipper, t time.Time) gate {
	g := gate{skip: skip}
	if ss.until.IsZero() {
		return g
	}
	if t.IsZero() {
		t = ss.now()
	}
	if t.Before(ss.until) {
		g.ramp, g.now, g.window = true, t, ss.window
	}
	return g
}

// gate is the candidate filter of one Pick: the caller's skip, then the
// slow-start ramp. It lives on the Pick's stack.
type gate struct {
	skip   Skipper
	ramp   bool
	now    time.Time
	window time.Duration
	// fallback is the first endpoint turned down by slow start only.
	fallback *Endpoint
}

func (g *gate) ok(e *Endpoint) bool {
	if g.skip != nil && g.skip.Skip(e) {
		return false
	}
	if g.ramp && !g.accept(e) {
		if g.fallback == nil {
			g.fallback = e
		}
		return false
	}
	return true
}

func (g *gate) accept(e *Endpoint) bool {
	elapsed := g.now.Sub(e.Stats.Since())
	if elapsed >= g.window {
		return true
	}
	ramp := max(0.1, float64(elapsed)/float64(g.window))
	return rand.Float64() < ramp
}

// result is what a Pick returns once its candidates are exhausted.
func (g *gate) result() (*Endpoint, error) {
	if g.fallback != nil {
		return g.fallback, nil
	}
	return nil, ErrNoEndpoint
}

// draws is how many random draws a Pick makes for one candidate before it
// falls back to a scan of all endpoints: skip is called at most
// len(eps)+2*draws times per Pick.
const draws = 3

// sampler draws endpoints at random in proportion to their weights: a
// uniform draw when all weights are equal, else a binary search of the
// cumulative weights.
type sampler struct {
	eps   []*Endpoint
	cum   []uint64 // cum[i] is the sum of the weights of eps[:i+1]; nil if all equal
	total uint64
}

func newSampler(eps []*Endpoint) sampler {
	s := sampler{eps: eps}
	equal := true
	cum := make([]uint64, len(eps))
	for i, e := range eps {
		s.total += weight(e)
		cum[i] = s.total
		equal = equal && weight(e) == weight(eps[0])
	}
	if !equal {
		s.cum = cum
	}
	return s
}

func (s *sampler) index() int {
	if s.cum == nil {
		return int(rand.Uint64N(uint64(len(s.eps))))
	}
	return s.search(rand.Uint64N(s.total))
}

// search is the index of the endpoint that owns weight unit x.
func (s *sampler) search(x uint64) int {
	lo, hi := 0, len(s.cum)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.cum[m] > x {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// indexExcept draws an index other than i, weighted, without replacement.
func (s *sampler) indexExcept(i int) int {
	n := len(s.eps)
	if s.cum == nil {
		j := int(rand.Uint64N(uint64(n - 1)))
		if j >= i {
			j++
		}
		return j
	}
	w := weight(s.eps[i])
	x := rand.Uint64N(s.total - w)
	if x >= s.cum[i]-w { // at or past i's share: shift over it
		x += w
	}
	return s.search(x)
}

// one draws an endpoint that passes g: up to draws weighted draws, then a
// scan of every endpoint from a random start. -1 when none passes.
func (s *sampler) one(g *gate) int {
	for range draws {
		if i := s.index(); g.ok(s.eps[i]) {
			return i
		}
	}
	i, _ := s.scan(g, false)
	return i
}

// scan asks g about every endpoint once and draws from those that pass, in
// proportion to weight: a with the smallest, b with the second smallest
// exponential clock -ln(u)/weight (weighted sampling without replacement,
// Efraimidis-Spirakis). b is -1 unless want2 and two pass; a is -1 when
// none passes. It is the fallback when random draws keep hitting skipped
// endpoints, so that the rest still share by weight.
func (s *sampler) scan(g *gate, want2 bool) (a, b int) {
	a, b = -1, -1
	var ka, kb float64
	for i, e := range s.eps {
		if !g.ok(e) {
			continue
		}
		k := -math.Log(1-rand.Float64()) / float64(weight(e))
		switch {
		case a < 0 || k < ka:
			a, ka, b, kb = i, k, a, ka
		case want2 && (b < 0 || k < kb):
			b, kb = i, k
		}
	}
	if !want2 {
		b = -1
	}
	return a, b
}

// two draws two distinct endpoints that pass g for a power-of-two-choices
// pick, both in proportion to weight. b is -1 when only a passes; a is -1
// when none does. g.ok is called at most len(eps)+2*draws times.
func (s *sampler) two(g *gate) (a, b int) {
	a = -1
	for range draws {
		if i := s.index(); g.ok(s.eps[i]) {
			a = i
			break
		}
	}
	if a < 0 {
		// Mostly skipped: take the first two that pass in a scan.
		return s.scan(g, true)
	}
	if len(s.eps) == 1 {
		return a, -1
	}
	for range draws {
		if i := s.indexExcept(a); g.ok(s.eps[i]) {
			return a, i
		}
	}
	return a, -1
}

// zeroTime tells slowStart.gate that the caller has not read the clock.
var zeroTime time.Time
