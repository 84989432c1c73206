// Package gateway routes HTTP requests to the passing instances of the
// services that discovery reports. It owns the routing table, the pickers,
// the proxy handler and the admin API; it consumes discovery snapshots and
// never calls back into discovery.
package gateway

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hopgate/hopgate/discovery"
)

// Gateway holds the current routing table. Apply swaps in a new one for
// each snapshot; the proxy reads it with one atomic load per request.
type Gateway struct {
	log     hclog.Logger
	builder tableBuilder
	table   atomic.Pointer[Table]
	applied atomic.Int64 // unix nanos of the last Apply; 0 before the first
}

// Options configure a Gateway.
type Options struct {
	Logger hclog.Logger
	// Pickers builds each route's picker; NewRoundRobin when nil.
	Pickers PickerFactory
}

// New returns a gateway with an empty table: every request is a 404 until
// the first snapshot is applied.
func New(opts Options) *Gateway {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Pickers == nil {
		opts.Pickers = NewRoundRobin
	}
	g := &Gateway{
		log:     opts.Logger,
		builder: tableBuilder{log: opts.Logger.Named("routes"), picks: opts.Pickers},
	}
	g.table.Store(&Table{})
	return g
}

// Apply builds the routing table for snap and makes it current. It is meant
// to be discovery's publish callback, called from one goroutine.
func (g *Gateway) Apply(snap *discovery.Snapshot) {
	t := g.builder.build(snap)
	g.table.Store(t)
	g.applied.Store(time.Now().UnixNano())
	g.log.Info("routes applied", "index", snap.Index, "services", len(snap.Services),
		"instances", snap.Instances(), "routes", len(t.routes))
}

// Table returns the routing table in force.
func (g *Gateway) Table() *Table { return g.table.Load() }

// Ready reports whether a snapshot has been applied.
func (g *Gateway) Ready() bool { return g.applied.Load() != 0 }
