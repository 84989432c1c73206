// Package gateway routes HTTP requests to the passing instances of the
// services that discovery reports. It owns the routing table, the proxy
// handler with its retries and passive health, and the admin API; it
// consumes discovery snapshots and never calls back into discovery. The
// balancing policies live in gateway/balance.
package gateway

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/discovery"
)

// Gateway holds the current routing table. Apply swaps in a new one for
// each snapshot; the proxy reads it with one atomic load per request.
type Gateway struct {
	log      hclog.Logger
	settings Settings
	now      func() time.Time
	ownClock bool // now is not time.Now (see at)
	builder  tableBuilder
	table    atomic.Pointer[Table]
	applied  atomic.Int64 // unix nanos of the last Apply; 0 before the first
	draining atomic.Bool
	metrics  *Metrics // nil with Options.NoMetrics
}

// Options configure a Gateway.
type Options struct {
	Logger hclog.Logger
	// Settings are the route defaults; DefaultSettings when zero.
	Settings *Settings
	// Now is the clock; time.Now when nil (tests pass a fake one).
	Now func() time.Time
	// NoMetrics turns the Prometheus metrics off (benchmarks compare).
	NoMetrics bool
}

// at is the gateway's time for t, a reading of the real clock the caller
// made: t itself, unless the gateway was given a clock of its own. The
// request path reads the clock a dozen times; where one reading serves
// two purposes, it is read once.
func (g *Gateway) at(t time.Time) time.Time {
	if g.ownClock {
		return g.now()
	}
	return t
}

// New returns a gateway with an empty table: every request is a 404 until
// the first snapshot is applied.
func New(opts Options) *Gateway {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	settings := DefaultSettings
	if opts.Settings != nil {
		settings = *opts.Settings
	}
	ownClock := opts.Now != nil
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Gateway{log: opts.Logger, settings: settings, now: opts.Now, ownClock: ownClock}
	if !opts.NoMetrics {
		g.metrics = newMetrics(g)
	}
	g.builder = newTableBuilder(opts.Logger.Named("routes"), &g.settings, opts.Now, g.metrics)
	g.table.Store(&Table{})
	return g
}

// Apply builds the routing table for snap and makes it current. It is meant
// to be discovery's publish callback, called from one goroutine. Its cost
// follows what changed since the last snapshot, not the size of the table.
func (g *Gateway) Apply(snap *discovery.Snapshot) {
	t, fresh := g.builder.build(snap)
	now := g.now()
	// Routes that stand keep their panic state; WatchHealth follows them.
	for _, r := range fresh {
		r.updatePanic(now, g.settings.PanicThreshold)
	}
	g.table.Store(t)
	g.applied.Store(now.UnixNano())
	g.metrics.applied(snap, time.Now())
	g.log.Info("routes applied", "index", snap.Index, "services", len(snap.Services),
		"instances", snap.Instances(), "routes", len(t.routes), "changed_routes", len(fresh))
}

// Metrics are the gateway's Prometheus metrics; nil with
// Options.NoMetrics.
func (g *Gateway) Metrics() *Metrics { return g.metrics }

// Table returns the routing table in force.
func (g *Gateway) Table() *Table { return g.table.Load() }

// Ready reports whether a snapshot has been applied and the gateway is not
// draining.
func (g *Gateway) Ready() bool { return g.applied.Load() != 0 && !g.draining.Load() }

// Drain makes /readyz fail so load balancers in front stop sending new
// connections, while requests keep being served.
func (g *Gateway) Drain() { g.draining.Store(true) }

// WatchHealth re-evaluates panic mode every interval until ctx ends: an
// ejection ends by the clock, not by an event, so something must look.
func (g *Gateway) WatchHealth(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := g.now()
			for _, r := range g.Table().routes {
				if changed, panicking := r.updatePanic(now, g.settings.PanicThreshold); changed {
					g.logPanic(r, panicking, now)
				}
			}
		}
	}
}

func (g *Gateway) logPanic(r *Route, panicking bool, now time.Time) {
	args := []any{"route", r.Name, "service", r.Service, "healthy", healthy(r.Endpoints, now),
		"routable", len(r.Endpoints), "critical", r.Unroutable}
	if panicking {
		g.log.Warn("panic mode: too few healthy instances, spreading load over all of them", args...)
	} else {
		g.log.Info("panic mode over", args...)
	}
}
