package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
)

const (
	// backoffStart is the first delay after a failed query; it doubles with
	// every further failure up to Config.MaxBackoff.
	backoffStart = 250 * time.Millisecond
	// queryGrace is added to a blocking query's own deadline (its wait plus
	// the wait/16 jitter Consul adds) before we give up on it: a connection
	// that died without a reset would otherwise hang the watch for ever.
	queryGrace = 15 * time.Second
)

// cursor applies Consul's blocking-query index rules to one watch (see the
// "Blocking Queries" implementation notes, and consul-template's
// watch/view.go).
type cursor struct {
	answered bool   // an answer has been used since the start or the last reset
	last     uint64 // X-Consul-Index of the last answer used
	wait     uint64 // WaitIndex for the next query
}

// advance records an answer at index got and reports whether its data is
// new and must be used.
func (c *cursor) advance(got uint64) bool {
	switch {
	case c.answered && got < c.last:
		// The index went backwards (snapshot restore, a rebuilt cluster,
		// a stale server): our index means nothing any more. Start again
		// with a non-blocking read and trust that rather than this answer.
		*c = cursor{}
		return false
	case c.answered && got == c.last:
		// A blocking query may return without a change (wait timed out,
		// idempotent write): nothing new.
		c.wait = max(got, 1)
		return false
	}
	c.answered, c.last = true, got
	// An index of 0 would make every following query return at once;
	// waiting on 1 is always safe.
	c.wait = max(got, 1)
	return true
}

// poll runs one blocking-query watch until ctx ends. It sends each query with
// the index of the last answer, hands answers with new data to handle (which
// returns false to stop), and paces itself: a jittered MinInterval between
// two queries, and a capped, jittered exponential backoff after errors.
// Errors never reach handle: the last good data stays in force. After an
// error the next query is a non-blocking re-read whose answer is always used.
func poll[T any](ctx context.Context, w *Watcher, what string,
	query func(*api.QueryOptions) (T, *api.QueryMeta, error),
	handle func(data T, index uint64) bool,
) {
	var (
		cur       cursor
		lastStart time.Time
		failures  int
		delay     time.Duration
	)
	for {
		if !lastStart.IsZero() {
			delay = max(delay, time.Until(lastStart.Add(jitter(w.cfg.MinInterval))))
		}
		if !sleep(ctx, delay) {
			return
		}
		delay = 0
		lastStart = time.Now()

		q := &api.QueryOptions{
			Datacenter: w.cfg.Datacenter,
			AllowStale: w.cfg.AllowStale,
			WaitIndex:  cur.wait,
			WaitTime:   w.cfg.WaitTime,
		}
		qctx, cancel := context.WithTimeout(ctx, w.cfg.WaitTime+w.cfg.WaitTime/16+queryGrace)
		data, meta, err := query(q.WithContext(qctx))
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && meta == nil {
			err = errNoMeta
		}
		if err != nil {
			// The next answer may come from another Consul (a rebuilt
			// agent, a restored snapshot) whose indexes mean nothing next
			// to ours, and could even equal ours by chance: re-read
			// without blocking, and use what it says.
			cur = cursor{}
			failures++
			delay = backoff(failures, w.cfg.MaxBackoff)
			w.noteError(err)
			if w.connectionLimit(err) {
				continue // explained once for all watches
			}
			w.log.Warn("consul query failed; keeping the last data", "watch", what,
				"attempt", failures, "retry_in", delay.Round(time.Millisecond), "error", err)
			continue
		}
		if failures > 0 {
			w.log.Info("consul query succeeded again", "watch", what, "failed_attempts", failures)
			failures = 0
		}
		w.noteContact()
		if !cur.advance(meta.LastIndex) {
			continue
		}
		if !handle(data, meta.LastIndex) {
			return
		}
	}
}

var errNoMeta = errors.New("consul answered without query metadata")

// connectionLimit reports whether err is Consul refusing a connection over
// its per-client limit (limits.http_max_conns_per_client, 200 by default),
// and says so, with the remedy, at most once a minute for all watches: each
// opted-in service's watch holds a connection of its own, so past the limit
// hundreds of watches fail together, and the services they miss keep the
// gateway from becoming ready.
func (w *Watcher) connectionLimit(err error) bool {
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusTooManyRequests {
		return false
	}
	now := time.Now().UnixNano()
	last := w.limitWarning.Load()
	if now-last >= int64(time.Minute) && w.limitWarning.CompareAndSwap(last, now) {
		w.log.Error("consul refuses connections over its per-client limit; the gateway holds one per "+
			"opted-in service: raise limits { http_max_conns_per_client } on the agent above the number "+
			"of watches (these keep retrying)", "watches", w.watches.Load()+1, "error", err)
	}
	return true
}

// backoff is the delay after the n-th consecutive failure: 250ms doubling up
// to limit, jittered downwards by up to 20% so that watches that failed
// together (Consul went away) do not retry in lockstep, and never above
// limit.
func backoff(n int, limit time.Duration) time.Duration {
	d := limit
	if n <= 20 { // beyond that the shift overflows; we are at the cap anyway
		if b := backoffStart << (n - 1); b < limit {
			d = b
		}
	}
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleep waits for d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
