package balance

import (
	"sync/atomic"
	"time"
)

// OutlierConfig tunes passive health checking: an instance that fails
// Consecutive attempts in a row (connection failures or 5xx answers) is
// ejected from its routes for BaseEjection times the number of times it
// has been ejected, at most MaxEjection. The defaults are Envoy's.
type OutlierConfig struct {
	// Consecutive failures that eject; 0 disables outlier detection.
	Consecutive  int
	BaseEjection time.Duration
	MaxEjection  time.Duration
	// MaxEjectedShare caps the share of a route's instances that may be
	// ejected at once, so passive health can never empty a route.
	MaxEjectedShare float64
}

// DefaultOutlierConfig is 5 failures in a row, 30 s growing to 300 s, at
// most half of a route's instances.
var DefaultOutlierConfig = OutlierConfig{
	Consecutive:     5,
	BaseEjection:    30 * time.Second,
	MaxEjection:     300 * time.Second,
	MaxEjectedShare: 0.5,
}

// outlierState is the passive-health state of one instance. The fields are
// updated with atomics from many requests at once; exactness is not needed
// (a failure counted twice or a success racing an ejection changes nothing
// that matters), freedom from locks is.
type outlierState struct {
	consecutive  atomic.Int32
	ejections    atomic.Int32 // how many times ejected: the next ejection lasts longer
	ejectedUntil atomic.Int64 // unix nanos; 0 when never ejected
}

// Ejected reports whether passive health keeps the instance out at now.
func (s *Stats) Ejected(now time.Time) bool {
	return now.UnixNano() < s.outlier.ejectedUntil.Load()
}

// EjectedUntil is when the current or last ejection ends (zero if never).
func (s *Stats) EjectedUntil() time.Time {
	if n := s.outlier.ejectedUntil.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// RecordSuccess ends a failure streak. An instance that has stayed in for
// a whole MaxEjection since its last ejection starts afresh: its next
// ejection is short again.
func (s *Stats) RecordSuccess(now time.Time, cfg OutlierConfig) {
	if s.outlier.consecutive.Load() != 0 {
		s.outlier.consecutive.Store(0)
	}
	if s.outlier.ejections.Load() != 0 && now.UnixNano()-s.outlier.ejectedUntil.Load() > int64(cfg.MaxEjection) {
		s.outlier.ejections.Store(0)
	}
}

// RecordFailure extends the failure streak and reports whether it has
// reached the ejection threshold; the caller, which knows the route, then
// decides whether ejecting respects MaxEjectedShare and calls Eject.
func (s *Stats) RecordFailure(cfg OutlierConfig) (shouldEject bool) {
	if cfg.Consecutive <= 0 {
		return false
	}
	return int(s.outlier.consecutive.Add(1)) >= cfg.Consecutive
}

// Eject takes the instance out until now plus its ejection time, and
// returns that time. The streak starts over, so a returning instance gets
// Consecutive fresh chances.
func (s *Stats) Eject(now time.Time, cfg OutlierConfig) time.Duration {
	n := s.outlier.ejections.Add(1)
	d := cfg.BaseEjection * time.Duration(n)
	if d > cfg.MaxEjection || d <= 0 {
		d = cfg.MaxEjection
	}
	s.outlier.ejectedUntil.Store(now.Add(d).UnixNano())
	s.outlier.consecutive.Store(0)
	return d
}
