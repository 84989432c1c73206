package gateway

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/discovery/routetag"
	"github.com/hopgate/hopgate/gateway/balance"
)

// tableBuilder turns snapshots into tables. It is used by one goroutine.
//
// Builds are incremental, so that one flapping instance among thousands
// costs the work of its own service, not of the whole catalog. Discovery
// keeps the *Service pointer of every service whose content did not change
// (see discovery.Snapshot), so the builder keeps what each service
// contributes (serviceRoutes: its candidate routes, their endpoints and the
// instance Stats they hold) and redoes only the services whose pointer
// changed, appeared or left. A route whose owner and candidate did not
// change keeps its *Route, picker and metric handles from table to table.
type tableBuilder struct {
	log      hclog.Logger
	settings *Settings
	now      func() time.Time
	stats    *balance.Registry // per instance, across tables
	metrics  *Metrics          // nil without metrics

	last     *discovery.Snapshot       // the snapshot of table; nil before the first build
	table    *Table                    // the last table built
	services map[string]*serviceRoutes // by name: every service of last
	// claims lists, per route, the services whose instances name it,
	// sorted by name. The first owns the route: services come and go in
	// any order, and the same one keeps a contested route whatever the
	// order was, so it never flaps.
	claims map[routeKey][]string
	live   map[routeKey]liveRoute // the routes of table
}

// routeKey identifies a route across instances: the same host and prefix
// from several instances is one route.
type routeKey struct{ host, prefix string }

func (r *Route) key() routeKey { return routeKey{r.Host, r.PathPrefix} }

// serviceRoutes is what one service's instances contribute to the table: a
// candidate route per route they name, built from this service alone. A
// candidate is used (copied into the table) only while the service owns
// its route. Immutable once built: a changed service gets a new one.
type serviceRoutes struct {
	// routes are the candidates (no picker, state or metrics), one per
	// route key. A slice: a service names few routes, and a map per
	// service would cost more than it saves.
	routes []*Route
	held   []string // instance keys whose Stats it holds in the Registry
	tags   tagCache // the route tags of its instances, parsed
}

// route returns the candidate for key, or nil.
func (sr *serviceRoutes) route(key routeKey) *Route {
	for _, r := range sr.routes {
		if r.key() == key {
			return r
		}
	}
	return nil
}

// liveRoute is a route in force and the candidate it was made from: while
// the owner's candidate is the same pointer, the route stands as it is.
type liveRoute struct {
	from  *Route
	route *Route
}

// tagCache remembers parsed route tags between builds of a service so a bad
// tag is reported once, when it first appears, not on every change. A
// slice, searched in order, for the same reason as serviceRoutes.routes.
type tagCache []parsedTag

type parsedTag struct {
	value  string // as written after routetag.Prefix
	route  routetag.Route
	policy routePolicy
	err    error
}

func (c tagCache) find(value string) (parsedTag, bool) {
	for _, p := range c {
		if p.value == value {
			return p, true
		}
	}
	return parsedTag{}, false
}

func newTableBuilder(log hclog.Logger, settings *Settings, now func() time.Time, metrics *Metrics) tableBuilder {
	return tableBuilder{
		log:      log,
		settings: settings,
		now:      now,
		stats:    balance.NewRegistry(),
		metrics:  metrics,
		table:    &Table{},
		services: map[string]*serviceRoutes{},
		claims:   map[routeKey][]string{},
		live:     map[routeKey]liveRoute{},
	}
}

// build makes the routing table for a snapshot, and returns it with the
// routes that are new in it (new, or remade because their instances
// changed). Each instance contributes to the routes its own tags name, so
// a deploy that changes a route moves traffic instance by instance.
func (b *tableBuilder) build(snap *discovery.Snapshot) (*Table, []*Route) {
	var prev []*discovery.Service
	if b.last != nil {
		prev = b.last.Services
	}
	dirty := map[routeKey]bool{}
	changedServices(prev, snap.Services, func(name string, svc *discovery.Service) {
		b.update(name, svc, dirty)
	})
	b.last = snap
	changes := b.settle(dirty)
	b.table = b.table.with(snap.Index, changes)
	var fresh []*Route
	for _, r := range changes {
		if r != nil {
			fresh = append(fresh, r)
		}
	}
	return b.table, fresh
}

// changedServices calls f for each service that differs between two lists
// sorted by name: with the new *Service, or nil for one that left. A
// service that kept its pointer is unchanged and costs one comparison.
func changedServices(prev, next []*discovery.Service, f func(name string, svc *discovery.Service)) {
	i, j := 0, 0
	for i < len(prev) || j < len(next) {
		switch {
		case i < len(prev) && j < len(next) && prev[i] == next[j]:
			i++
			j++
		case j == len(next) || (i < len(prev) && prev[i].Name < next[j].Name):
			f(prev[i].Name, nil)
			i++
		case i == len(prev) || next[j].Name < prev[i].Name:
			f(next[j].Name, next[j])
			j++
		default: // same name, new pointer
			f(next[j].Name, next[j])
			i++
			j++
		}
	}
}

// update replaces what service name contributes by what svc's instances
// name (nothing when svc is nil: the service left), and marks every route
// either of them names as dirty, to be settled.
func (b *tableBuilder) update(name string, svc *discovery.Service, dirty map[routeKey]bool) {
	old := b.services[name]
	next := &serviceRoutes{} // nothing, for a service that left
	if svc != nil {
		next = b.contribution(svc, old)
		b.services[name] = next
	} else {
		delete(b.services, name)
	}
	if old != nil {
		for _, r := range old.routes {
			key := r.key()
			if next.route(key) == nil {
				b.unclaim(key, name)
			}
			dirty[key] = true
		}
		// After the new contribution took its references, so that an
		// instance still there keeps its Stats.
		for _, k := range old.held {
			b.stats.Release(k)
		}
	}
	for _, r := range next.routes {
		key := r.key()
		if old == nil || old.route(key) == nil {
			b.claim(key, name)
		}
		dirty[key] = true
	}
}

// contribution builds the candidate routes of one service's routable
// instances, reusing the tags its last contribution parsed.
func (b *tableBuilder) contribution(svc *discovery.Service, old *serviceRoutes) *serviceRoutes {
	now := b.now()
	sr := &serviceRoutes{}
	var known tagCache
	if old != nil {
		known = old.tags
	}
	for i := range svc.Instances {
		inst := &svc.Instances[i]
		weight, ok := b.routable(inst)
		if !ok {
			continue
		}
		var ep *balance.Endpoint // one per instance, shared by its routes
		for _, value := range routetag.Values(inst.Tags) {
			rt, policy, ok := b.parse(known, &sr.tags, svc.Name, value)
			if !ok {
				continue
			}
			r := sr.route(routeKey{rt.Host, rt.PathPrefix})
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
				sr.routes = append(sr.routes, r)
			} else if r.policy != policy || r.Strip != rt.Strip() {
				b.log.Warn("instances disagree on route options; keeping the first",
					"route", r.Name, "service", svc.Name, "instance", inst.ID)
			}
			if ep == nil {
				k := inst.Key()
				sr.held = append(sr.held, k)
				ep = &balance.Endpoint{Instance: inst, Addr: inst.HostPort(), Weight: weight,
					Stats: b.stats.Acquire(k, now)}
			}
			r.Endpoints = append(r.Endpoints, ep)
		}
	}
	return sr
}

// claim records that service name's instances name the route.
func (b *tableBuilder) claim(key routeKey, name string) {
	names := b.claims[key]
	i, _ := slices.BinarySearch(names, name)
	names = slices.Insert(names, i, name)
	b.claims[key] = names
	if len(names) > 1 {
		ignored := name
		if i == 0 {
			ignored = names[1]
		}
		b.log.Warn("route claimed by two services; keeping the first",
			"route", key.host+key.prefix, "kept", names[0], "ignored", ignored)
	}
}

// unclaim records that service name's instances no longer name the route.
func (b *tableBuilder) unclaim(key routeKey, name string) {
	names := b.claims[key]
	if i, found := slices.BinarySearch(names, name); found {
		names = slices.Delete(names, i, i+1)
	}
	if len(names) == 0 {
		delete(b.claims, key)
		return
	}
	b.claims[key] = names
}

// settle decides the route in force for each dirty key: its owner's
// candidate, made into a table route with a picker, the route's lasting
// state and metric handles; or none when no service names it any more. It
// returns what changed: the new route, or nil for a route that left.
func (b *tableBuilder) settle(dirty map[routeKey]bool) map[routeKey]*Route {
	changes := make(map[routeKey]*Route, len(dirty))
	for key := range dirty {
		cur, live := b.live[key]
		names := b.claims[key]
		if len(names) == 0 {
			if live {
				if rm := cur.route.state.metrics; rm != nil {
					rm.drop() // the route is gone, and its series with it
				}
				delete(b.live, key)
				changes[key] = nil
			}
			continue
		}
		cand := b.services[names[0]].route(key)
		if live && cur.from == cand {
			continue // same owner, same instances: the route stands
		}
		var st *routeState
		if live {
			st = cur.route.state // in-flight counts and budget outlive tables
		} else {
			st = newRouteState(b.settings)
			if b.metrics != nil {
				st.metrics = b.metrics.newRouteMetrics(cand.Name)
			}
		}
		r := b.install(cand, st)
		b.live[key] = liveRoute{from: cand, route: r}
		changes[key] = r
	}
	return changes
}

// install makes a table route of a candidate. It copies the candidate: a
// route in a published table never changes, and a candidate may be
// installed again later (its service lost the route and won it back).
func (b *tableBuilder) install(cand *Route, st *routeState) *Route {
	r := *cand
	r.state = st
	r.picker = balance.New(r.policy.balance, r.Endpoints, b.now)
	if rm := st.metrics; rm != nil {
		r.upstreams = make(map[*balance.Endpoint]*upstreamMetrics, len(r.Endpoints))
		keep := make(map[string]bool, len(r.Endpoints))
		for _, ep := range r.Endpoints {
			k := ep.Instance.Key()
			keep[k] = true
			r.upstreams[ep] = rm.upstream(k, ep)
		}
		rm.prune(keep)
	}
	return &r
}

// with returns a copy of t at index with changes applied (a route, or nil
// to remove one). It copies only what the changes touch: the sorted route
// list (pointers), and the host-less map or the map of a changed host;
// everything else is shared with t, which stays as it was.
func (t *Table) with(index uint64, changes map[routeKey]*Route) *Table {
	next := &Table{byHost: t.byHost, anyHost: t.anyHost, routes: t.routes, index: index}
	if len(changes) == 0 {
		return next
	}
	next.routes = next.sortedWith(changes)
	// Copy each map the first time a change touches it.
	var anyCopied, byHostCopied bool
	hostCopied := map[string]bool{}
	for key, r := range changes {
		var m routesByPrefix
		switch {
		case key.host == "":
			if !anyCopied {
				next.anyHost, anyCopied = cloneOrMake(next.anyHost), true
			}
			m = next.anyHost
		default:
			if !byHostCopied {
				next.byHost, byHostCopied = maps.Clone(next.byHost), true
				if next.byHost == nil {
					next.byHost = map[string]routesByPrefix{}
				}
			}
			if !hostCopied[key.host] {
				next.byHost[key.host], hostCopied[key.host] = cloneOrMake(next.byHost[key.host]), true
			}
			m = next.byHost[key.host]
		}
		if r != nil {
			m[key.prefix] = r
			continue
		}
		delete(m, key.prefix)
		if key.host != "" && len(m) == 0 {
			delete(next.byHost, key.host)
			hostCopied[key.host] = false // a later change makes a new one
		}
	}
	return next
}

func cloneOrMake(m routesByPrefix) routesByPrefix {
	if m == nil {
		return routesByPrefix{}
	}
	return maps.Clone(m)
}

// sortedWith returns a copy of the route list with changes applied, still
// sorted by host then prefix: replacements and removals in place by binary
// search, then the additions merged in, so the cost is one copy of the list
// plus a little per change.
func (t *Table) sortedWith(changes map[routeKey]*Route) []*Route {
	routes := slices.Clone(t.routes)
	var added []*Route
	var removed []int
	for key, r := range changes {
		i, found := slices.BinarySearchFunc(routes, key, func(e *Route, k routeKey) int { return compareKeys(e.key(), k) })
		switch {
		case found && r == nil:
			removed = append(removed, i) // not yet: the search needs every entry
		case found:
			routes[i] = r
		case r != nil:
			added = append(added, r)
		}
	}
	if len(removed) > 0 {
		for _, i := range removed {
			routes[i] = nil
		}
		routes = slices.DeleteFunc(routes, func(r *Route) bool { return r == nil })
	}
	if len(added) == 0 {
		return routes
	}
	slices.SortFunc(added, func(a, b *Route) int { return compareKeys(a.key(), b.key()) })
	merged := make([]*Route, 0, len(routes)+len(added))
	for len(routes) > 0 && len(added) > 0 {
		if compareKeys(routes[0].key(), added[0].key()) < 0 {
			merged, routes = append(merged, routes[0]), routes[1:]
		} else {
			merged, added = append(merged, added[0]), added[1:]
		}
	}
	merged = append(merged, routes...)
	return append(merged, added...)
}

func compareKeys(a, b routeKey) int {
	if c := strings.Compare(a.host, b.host); c != 0 {
		return c
	}
	return strings.Compare(a.prefix, b.prefix)
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

// parse returns the parsed tag and its route policy, from known (the
// service's last contribution) or seen (this one) when it is there, and
// logs problems only when a tag value is parsed, the first time it is seen.
func (b *tableBuilder) parse(known tagCache, seen *tagCache, service, value string) (routetag.Route, routePolicy, bool) {
	p, cached := seen.find(value)
	if !cached {
		if p, cached = known.find(value); !cached {
			p.value = value
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
		*seen = append(*seen, p)
	}
	return p.route, p.policy, p.err == nil
}
