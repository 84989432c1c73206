package gateway

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/discovery/routetag"
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
// snapshot and swapped in atomically, so lookups take no lock.
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

// tagCache remembers parsed route tags between builds so a bad tag is
// reported once, when it first appears, not on every snapshot.
type tagCache map[string]parsedTag

type parsedTag struct {
	route  routetag.Route
	policy routePolicy
	err    error
}

// tableBuilder turns snapshots into tables. It is used by one goroutine.
type tableBuilder struct {
	log      hclog.Logger
	settings *Settings
	now      func() time.Time
	tags     tagCache
	stats    *balance.Registry        // per instance, across tables
	states   map[routeKey]*routeState // per route, across tables
	metrics  *Metrics                 // nil without metrics
}

// routeKey identifies a route across instances: the same host and prefix
// from several instances is one route.
type routeKey struct{ host, prefix string }

// build makes the routing table for a snapshot. Each instance contributes to
// the routes its own tags name, so a deploy that changes a route moves
// traffic instance by instance.
func (b *tableBuilder) build(snap *discovery.Snapshot) *Table {
	now := b.now()
	seen := make(tagCache, len(b.tags))
	routes := map[routeKey]*Route{}
	used := map[string]bool{}
	for _, svc := range snap.Services {
		for i := range svc.Instances {
			inst := &svc.Instances[i]
			weight, ok := b.routable(inst)
			if !ok {
				continue
			}
			var ep *balance.Endpoint
			for _, value := range routetag.Values(inst.Tags) {
				rt, policy, ok := b.parse(seen, svc.Name, value)
				if !ok {
					continue
				}
				key := routeKey{rt.Host, rt.PathPrefix}
				r := routes[key]
				if r == nil {
					r = &Route{
						Name:       rt.Host + rt.PathPrefix,
						Host:       rt.Host,
						PathPrefix: rt.PathPrefix,
						Strip:      rt.Strip(),
						Service:    svc.Name,
						Unroutable: svc.Unroutable,
						policy:     policy,
					}
					routes[key] = r
				}
				if r.Service != svc.Name {
					// Services come in name order, so the first claimant
					// keeps the route on every build: no flapping.
					b.log.Warn("route claimed by two services; keeping the first",
						"route", r.Name, "kept", r.Service, "ignored", svc.Name)
					continue
				}
				if r.policy != policy || r.Strip != rt.Strip() {
					b.log.Warn("instances disagree on route options; keeping the first",
						"route", r.Name, "service", svc.Name, "instance", inst.ID)
				}
				if ep == nil {
					key := inst.Key()
					used[key] = true
					ep = &balance.Endpoint{Instance: inst, Addr: inst.HostPort(), Weight: weight,
						Stats: b.stats.Get(key, now)}
				}
				r.Endpoints = append(r.Endpoints, ep)
			}
		}
	}
	b.tags = seen
	b.stats.Prune(func(key string) bool { return used[key] })

	t := &Table{byHost: map[string]routesByPrefix{}, anyHost: routesByPrefix{}, index: snap.Index}
	states := make(map[routeKey]*routeState, len(routes))
	for key, r := range routes {
		r.picker = balance.New(r.policy.balance, r.Endpoints, b.now)
		if r.state = b.states[key]; r.state == nil {
			r.state = newRouteState(b.settings)
			if b.metrics != nil {
				r.state.metrics = b.metrics.newRouteMetrics(r.Name)
			}
		}
		states[key] = r.state
		if rm := r.state.metrics; rm != nil {
			r.upstreams = make(map[*balance.Endpoint]*upstreamMetrics, len(r.Endpoints))
			keep := make(map[string]bool, len(r.Endpoints))
			for _, ep := range r.Endpoints {
				k := ep.Instance.Key()
				keep[k] = true
				r.upstreams[ep] = rm.upstream(k, ep)
			}
			rm.prune(keep)
		}
		t.routes = append(t.routes, r)
		if key.host == "" {
			t.anyHost[key.prefix] = r
			continue
		}
		m := t.byHost[key.host]
		if m == nil {
			m = routesByPrefix{}
			t.byHost[key.host] = m
		}
		m[key.prefix] = r
	}
	for key, st := range b.states {
		if states[key] == nil && st.metrics != nil {
			st.metrics.drop() // the route is gone, and its series with it
		}
	}
	b.states = states
	slices.SortFunc(t.routes, func(a, b *Route) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.PathPrefix, b.PathPrefix)
	})
	return t
}

// routable says whether an instance gets traffic, and with what weight:
// passing instances always (Weights.Passing), warning ones only when the
// gateway is told to use them (Weights.Warning; 0 means none).
func (b *tableBuilder) routable(inst *discovery.Instance) (int, bool) {
	switch {
	case inst.Weight <= 0:
		return 0, false
	case inst.Health == discovery.Passing:
		return inst.Weight, true
	case inst.Health == discovery.Warning && b.settings.UseWarning:
		return inst.Weight, true
	}
	return 0, false
}

// parse returns the parsed tag and its route policy, logging problems only
// the first time a tag value is seen.
func (b *tableBuilder) parse(seen tagCache, service, value string) (routetag.Route, routePolicy, bool) {
	p, cached := b.tags[value]
	if !cached {
		if p, cached = seen[value]; !cached {
			var warnings []string
			p.route, warnings, p.err = routetag.Parse(value)
			if p.err == nil {
				p.policy, p.err = b.settings.policyFor(p.route.Options)
			}
			tag := routetag.Prefix + value
			if p.err != nil {
				b.log.Warn("route tag disabled", "service", service, "tag", tag, "error", p.err)
			}
			for _, w := range warnings {
				b.log.Warn("route tag", "service", service, "tag", tag, "warning", w)
			}
		}
	}
	seen[value] = p
	return p.route, p.policy, p.err == nil
}

// String is for logs and test failures.
func (r *Route) String() string {
	return fmt.Sprintf("%s -> %s (%d endpoints)", r.Name, r.Service, len(r.Endpoints))
}
