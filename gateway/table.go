package gateway

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/discovery/routetag"
)

// Upstream is one instance a route can send requests to. It points into the
// snapshot it was built from and is immutable.
type Upstream struct {
	Service  string
	Instance *discovery.Instance
	// HostPort is precomputed: the request path must not format addresses.
	HostPort string
}

// Route is one entry of the routing table: requests whose host and path
// match go to the passing instances of Service.
type Route struct {
	// Name is the route as written in its tag, without options, e.g.
	// "api.example.com/v1" or "/": the span and log name of the route.
	Name       string
	Host       string
	PathPrefix string
	Strip      string
	Service    string
	Upstreams  []*Upstream
	Picker     Picker
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
	route routetag.Route
	err   error
}

// tableBuilder turns snapshots into tables. It is used by one goroutine.
type tableBuilder struct {
	log   hclog.Logger
	tags  tagCache
	picks PickerFactory
}

// routeKey identifies a route across instances: the same host and prefix
// from several instances is one route.
type routeKey struct{ host, prefix string }

// build makes the routing table for a snapshot. Only passing instances are
// routable. Each instance contributes to the routes its own tags name, so a
// deploy that changes a route moves traffic instance by instance.
func (b *tableBuilder) build(snap *discovery.Snapshot) *Table {
	seen := make(tagCache, len(b.tags))
	routes := map[routeKey]*Route{}
	for _, svc := range snap.Services {
		for i := range svc.Instances {
			inst := &svc.Instances[i]
			if inst.Health != discovery.Passing {
				continue
			}
			var up *Upstream
			for _, value := range routetag.Values(inst.Tags) {
				rt, ok := b.parse(seen, svc.Name, value)
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
				if r.Strip != rt.Strip() {
					b.log.Warn("instances disagree on route options; keeping the first",
						"route", r.Name, "service", svc.Name, "instance", inst.ID)
				}
				if up == nil {
					up = &Upstream{Service: svc.Name, Instance: inst, HostPort: inst.HostPort()}
				}
				r.Upstreams = append(r.Upstreams, up)
			}
		}
	}
	b.tags = seen

	t := &Table{byHost: map[string]routesByPrefix{}, anyHost: routesByPrefix{}, index: snap.Index}
	for key, r := range routes {
		r.Picker = b.picks(r.Upstreams)
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
	slices.SortFunc(t.routes, func(a, b *Route) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.PathPrefix, b.PathPrefix)
	})
	return t
}

// parse returns the parsed tag, logging problems only the first time a tag
// value is seen.
func (b *tableBuilder) parse(seen tagCache, service, value string) (routetag.Route, bool) {
	p, cached := b.tags[value]
	if !cached {
		if p, cached = seen[value]; !cached {
			var warnings []string
			p.route, warnings, p.err = routetag.Parse(value)
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
	return p.route, p.err == nil
}

// String is for logs and test failures.
func (r *Route) String() string {
	return fmt.Sprintf("%s -> %s (%d upstreams)", r.Name, r.Service, len(r.Upstreams))
}
