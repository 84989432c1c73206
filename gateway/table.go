package gateway

import (
	"fmt"
	"net"
	"strings"

	"github.com/hopgate/hopgate/gateway/balance"
)

// Route is one entry of the routing table: requests whose host and path
// match go to the routable instances of Service.
type Route struct {
	// Name is the route as written in its tag, without options, e.g.
	// "api.example.com/v1" or "/": the span and log name of the route.
	Name       string
	Host       string
	PathPrefix string
	Strip      string
	Service    string
	Endpoints  []*balance.Endpoint
	// Unroutable counts the service's instances that Consul reports
	// critical: they count toward the service's size for panic mode.
	Unroutable int

	policy routePolicy
	picker balance.Picker
	state  *routeState // outlives tables: in-flight count, retry budget, panic
	// upstreams are the metric handles of each endpoint on this route;
	// nil without metrics.
	upstreams map[*balance.Endpoint]*upstreamMetrics
}

// Table is an immutable routing table. A new one is built for every
// snapshot and swapped in atomically, so lookups take no lock. Tables share
// the routes and maps that did not change between them (see tableBuilder).
type Table struct {
	byHost  map[string]routesByPrefix
	anyHost routesByPrefix
	routes  []*Route // every route, sorted by host then prefix, for /routes
	index   uint64
}

// routesByPrefix maps a clean path prefix (no trailing slash, "/" for the
// root) to its route.
type routesByPrefix map[string]*Route

// Routes lists every route, sorted by host and path prefix.
func (t *Table) Routes() []*Route { return t.routes }

// Index is the Consul index of the snapshot the table was built from.
func (t *Table) Index() uint64 { return t.index }

// Match finds the route for a request host (port and case ignored) and path.
// Host-specific routes win over host-less ones; among either, the longest
// prefix that matches on a path-segment boundary wins. The cost is one map
// lookup per path segment, whatever the number of routes.
func (t *Table) Match(host, path string) *Route {
	if len(t.byHost) > 0 {
		if routes, ok := t.byHost[canonicalHost(host)]; ok {
			if r := routes.match(path); r != nil {
				return r
			}
		}
	}
	return t.anyHost.match(path)
}

func (m routesByPrefix) match(path string) *Route {
	if len(m) == 0 {
		return nil
	}
	p := path
	if p == "" { // absolute-form target with no path
		p = "/"
	}
	for {
		if r, ok := m[p]; ok {
			return r
		}
		i := strings.LastIndexByte(p, '/')
		switch {
		case i < 0 || p == "/":
			return nil
		case i == 0:
			p = "/"
		default:
			p = p[:i]
		}
	}
}

// canonicalHost lower-cases a Host header and drops its port, allocating
// only when the header is not already in canonical form.
func canonicalHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
			if strings.Contains(h, ":") { // IPv6 literal keeps its brackets, as in route tags
				h = "[" + h + "]"
			}
		}
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// String is for logs and test failures.
func (r *Route) String() string {
	return fmt.Sprintf("%s -> %s (%d endpoints)", r.Name, r.Service, len(r.Endpoints))
}
