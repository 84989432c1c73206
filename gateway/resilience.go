package gateway

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/hopgate/hopgate/gateway/balance"
)

// routeState is what a route keeps from one table to the next: requests in
// flight when a snapshot lands still count against the new table's limits,
// and the retry budget remembers the last seconds of traffic.
type routeState struct {
	inflight atomic.Int64
	budget   retryBudget
	panic    atomic.Bool
	// lastBudgetLog rate-limits the budget-exhausted log line (unix nanos).
	lastBudgetLog atomic.Int64
	counts        routeCounts
	metrics       *routeMetrics // nil without metrics
}

// routeCounts count what resilience did on a route, for /routes and
// metrics.
type routeCounts struct {
	Retries         atomic.Int64
	Ejections       atomic.Int64
	BudgetExhausted atomic.Int64
	Panics          atomic.Int64 // times the route entered panic mode
}

func newRouteState(s *Settings) *routeState {
	st := &routeState{}
	st.budget.ratio = s.RetryBudget
	st.budget.floor = s.RetryFloor
	return st
}

// retryBudget caps retries at a share of the route's requests over the last
// budgetWindow seconds, plus a small floor per second so a quiet route can
// still retry (Finagle's and Linkerd's retry budgets). It is a ring of
// one-second buckets updated with atomics: counts may be off by a request
// at a bucket boundary, which a budget can afford.
type retryBudget struct {
	ratio   float64
	floor   int
	buckets [budgetWindow]budgetBucket
}

const budgetWindow = 10

type budgetBucket struct {
	second   atomic.Int64
	requests atomic.Int64
	retries  atomic.Int64
}

func (b *retryBudget) bucket(now time.Time) *budgetBucket {
	sec := now.Unix()
	bk := &b.buckets[sec%budgetWindow]
	if old := bk.second.Load(); old != sec && bk.second.CompareAndSwap(old, sec) {
		bk.requests.Store(0)
		bk.retries.Store(0)
	}
	return bk
}

// request counts one request (not attempt) on the route.
func (b *retryBudget) request(now time.Time) { b.bucket(now).requests.Add(1) }

// allowRetry reports whether one more retry fits the budget, and counts it
// when it does.
func (b *retryBudget) allowRetry(now time.Time) bool {
	var requests, retries int64
	sec := now.Unix()
	for i := range b.buckets {
		bk := &b.buckets[i]
		if s := bk.second.Load(); s > sec-budgetWindow && s <= sec {
			requests += bk.requests.Load()
			retries += bk.retries.Load()
		}
	}
	allowed := float64(b.floor*budgetWindow) + b.ratio*float64(requests)
	if float64(retries) >= allowed {
		return false
	}
	b.bucket(now).retries.Add(1)
	return true
}

// retryBackoff is the pause before retry n (1-based): full jitter over
// 25 ms doubling, at most 250 ms, so retries do not arrive in lockstep.
func retryBackoff(n int) time.Duration {
	d := 25 * time.Millisecond << min(n-1, 4)
	d = min(d, 250*time.Millisecond)
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// healthy counts the endpoints not ejected at now.
func healthy(eps []*balance.Endpoint, now time.Time) int {
	n := 0
	for _, ep := range eps {
		if !ep.Stats.Ejected(now) {
			n++
		}
	}
	return n
}

// updatePanic recomputes whether the route is in panic mode: fewer than the
// threshold share of the service's instances (Consul-critical ones
// included) are healthy. It returns whether the mode changed.
func (r *Route) updatePanic(now time.Time, threshold float64) (changed, panicking bool) {
	total := len(r.Endpoints) + r.Unroutable
	panicking = total > 0 && float64(healthy(r.Endpoints, now)) < threshold*float64(total)
	changed = r.state.panic.Swap(panicking) != panicking
	if changed && panicking {
		r.state.counts.Panics.Add(1)
	}
	return changed, panicking
}
