package backend

import (
	"context"
	"math/rand/v2"
	"time"
)

// Retry pacing of the Registrar: the first retry comes quickly (an agent
// restart takes a second or two), later ones are spaced out but never more
// than retryMax apart, so a registration lost while the agent was away comes
// back within a few seconds of the agent's return.
const (
	retryMin = 200 * time.Millisecond
	retryMax = 3 * time.Second
)

// backoff is a capped exponential backoff with "equal jitter": the n-th wait
// is drawn uniformly from [d/2, d] with d = min(max, min*2^n). The floor keeps
// retries from bunching up at zero; the jitter spreads a fleet of backends
// that all lost the same agent. Not safe for concurrent use.
type backoff struct {
	min, max time.Duration
	n        int
	// jitter returns a value in [0, 1); nil means math/rand/v2.
	jitter func() float64
}

// next returns the wait before the next attempt and advances the schedule.
func (b *backoff) next() time.Duration {
	d := b.max
	if b.n < 32 { // beyond that min<<n overflows; d is capped long before
		if e := b.min << b.n; e > 0 && e < b.max {
			d = e
		}
	}
	b.n++
	j := rand.Float64
	if b.jitter != nil {
		j = b.jitter
	}
	half := d / 2
	return half + time.Duration(j()*float64(d-half))
}

// reset starts the schedule over after a success.
func (b *backoff) reset() { b.n = 0 }

// sleep waits for d or until ctx is done; it reports whether the full wait
// elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
