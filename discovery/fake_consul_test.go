package discovery

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/hopgate/hopgate/discovery/routetag"
)

// fakeConsul is a scripted Consul for unit tests. It keeps a catalog and the
// health entries of each service, each endpoint at its own index, and answers
// like Consul does: a query without WaitIndex (or one below the endpoint's
// index) returns at once; a blocking one waits on a channel until the
// endpoint changes, WaitTime passes, or the query's context ends. Tests can
// also queue replies per endpoint (scripted answers win over the state, which
// lets them return any index or error), make one endpoint or all of Consul
// fail, and read the log of calls. Run it inside a synctest bubble: its
// waits are on channels and timers, so synctest.Wait sees through them.
type fakeConsul struct {
	mu       sync.Mutex
	wake     chan struct{} // closed and replaced on every change
	raft     uint64
	eps      map[string]*fakeEndpoint // "catalog" or "health/<service>"
	down     error                    // every query fails with it
	calls    []*fakeCall
	inflight map[string]int
	// respond, when set, may answer a call before the state does (return
	// ok=false to fall through); used for endpoints that churn.
	respond func(key string, q *api.QueryOptions, ep *fakeEndpoint) (reply, bool)
}

type fakeEndpoint struct {
	index   uint64
	catalog map[string][]string
	entries []*api.ServiceEntry
	script  []reply
	fail    error
}

type reply struct {
	index   uint64
	catalog map[string][]string // for "catalog"
	entries []*api.ServiceEntry // for "health/..."
	err     error
}

type fakeCall struct {
	Key       string
	WaitIndex uint64
	At        time.Time
	Cancelled bool // its context ended while it was blocked
}

var errDown = errors.New("dial tcp 127.0.0.1:8500: connect: connection refused")

var _ Consul = (*fakeConsul)(nil)

func newFakeConsul() *fakeConsul {
	f := &fakeConsul{
		wake:     make(chan struct{}),
		raft:     1,
		eps:      map[string]*fakeEndpoint{},
		inflight: map[string]int{},
	}
	f.eps["catalog"] = &fakeEndpoint{index: 1, catalog: map[string][]string{"consul": nil}}
	return f
}

func (f *fakeConsul) Services(q *api.QueryOptions) (map[string][]string, *api.QueryMeta, error) {
	r, err := f.query("catalog", q)
	if err != nil {
		return nil, nil, err
	}
	return r.catalog, &api.QueryMeta{LastIndex: r.index}, nil
}

func (f *fakeConsul) ServiceHealth(service string, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	r, err := f.query("health/"+service, q)
	if err != nil {
		return nil, nil, err
	}
	return r.entries, &api.QueryMeta{LastIndex: r.index}, nil
}

func (f *fakeConsul) query(key string, q *api.QueryOptions) (reply, error) {
	ctx := q.Context()
	call := &fakeCall{Key: key, WaitIndex: q.WaitIndex, At: time.Now()}
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.inflight[key]++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight[key]--
		f.mu.Unlock()
	}()

	wait := q.WaitTime
	if wait == 0 {
		wait = 5 * time.Minute
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		f.mu.Lock()
		ep := f.endpoint(key)
		if r, ok := f.answer(key, q, ep); ok {
			f.mu.Unlock()
			return r, r.err
		}
		wake := f.wake
		f.mu.Unlock()

		select {
		case <-wake:
		case <-timeout.C:
			// Consul answers a wait that saw no change with the current
			// data at the current index.
			f.mu.Lock()
			r := ep.current()
			f.mu.Unlock()
			return r, nil
		case <-ctx.Done():
			f.mu.Lock()
			call.Cancelled = true
			f.mu.Unlock()
			return reply{}, ctx.Err()
		}
	}
}

// answer returns the reply for a call if it need not block. f.mu is held.
func (f *fakeConsul) answer(key string, q *api.QueryOptions, ep *fakeEndpoint) (reply, bool) {
	switch {
	case f.down != nil:
		return reply{err: f.down}, true
	case ep.fail != nil:
		return reply{err: ep.fail}, true
	case len(ep.script) > 0:
		r := ep.script[0]
		ep.script = ep.script[1:]
		r.catalog, r.entries = cloneCatalog(r.catalog), cloneEntries(r.entries)
		return r, true
	}
	if f.respond != nil {
		if r, ok := f.respond(key, q, ep); ok {
			return r, true
		}
	}
	if q.WaitIndex == 0 || ep.index > q.WaitIndex {
		return ep.current(), true
	}
	return reply{}, false
}

// current is the endpoint's data, copied so the watcher never shares memory
// with the fake.
func (ep *fakeEndpoint) current() reply {
	return reply{index: ep.index, catalog: cloneCatalog(ep.catalog), entries: cloneEntries(ep.entries)}
}

func (f *fakeConsul) endpoint(key string) *fakeEndpoint {
	ep, ok := f.eps[key]
	if !ok {
		// Consul answers a health query for an unknown service with an
		// empty list at some index; ours is the current raft index.
		ep = &fakeEndpoint{index: f.raft}
		f.eps[key] = ep
	}
	return ep
}

// change runs fn under the lock, then wakes every blocked query.
func (f *fakeConsul) change(fn func()) {
	f.mu.Lock()
	fn()
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// register puts a service in the catalog (tags: the union of its
// instances') with these health entries, at a new index.
func (f *fakeConsul) register(name string, entries ...*api.ServiceEntry) {
	f.change(func() {
		f.raft++
		var tags []string
		for _, e := range entries {
			for _, t := range e.Service.Tags {
				if !slices.Contains(tags, t) {
					tags = append(tags, t)
				}
			}
		}
		cat := f.endpoint("catalog")
		cat.catalog = maps.Clone(cat.catalog)
		cat.catalog[name] = tags
		cat.index = f.raft
		h := f.endpoint("health/" + name)
		h.entries, h.index = entries, f.raft
	})
}

// setHealth replaces a service's health entries at a new index, leaving the
// catalog alone (as Consul does for check changes).
func (f *fakeConsul) setHealth(name string, entries ...*api.ServiceEntry) {
	f.change(func() {
		f.raft++
		h := f.endpoint("health/" + name)
		h.entries, h.index = entries, f.raft
	})
}

// bumpHealth moves a service's health index without changing its data, as an
// idempotent write does.
func (f *fakeConsul) bumpHealth(name string) {
	f.change(func() {
		f.raft++
		f.endpoint("health/" + name).index = f.raft
	})
}

// deregister removes a service from the catalog and its health entries.
func (f *fakeConsul) deregister(name string) {
	f.change(func() {
		f.raft++
		cat := f.endpoint("catalog")
		cat.catalog = maps.Clone(cat.catalog)
		delete(cat.catalog, name)
		cat.index = f.raft
		h := f.endpoint("health/" + name)
		h.entries, h.index = nil, f.raft
	})
}

// setCatalogTags changes a service's catalog tags only.
func (f *fakeConsul) setCatalogTags(name string, tags ...string) {
	f.change(func() {
		f.raft++
		cat := f.endpoint("catalog")
		cat.catalog = maps.Clone(cat.catalog)
		cat.catalog[name] = tags
		cat.index = f.raft
	})
}

// setDown makes every query fail with err (nil: Consul is back).
func (f *fakeConsul) setDown(err error) { f.change(func() { f.down = err }) }

// setFailing makes the queries of one endpoint fail with err (nil: stop).
func (f *fakeConsul) setFailing(key string, err error) {
	f.change(func() { f.endpoint(key).fail = err })
}

// script queues replies that the next calls of an endpoint get at once.
func (f *fakeConsul) script(key string, rs ...reply) {
	f.change(func() {
		ep := f.endpoint(key)
		ep.script = append(ep.script, rs...)
	})
}

// callsOf returns a copy of the calls of one endpoint so far.
func (f *fakeConsul) callsOf(key string) []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeCall
	for _, c := range f.calls {
		if c.Key == key {
			out = append(out, *c)
		}
	}
	return out
}

func (f *fakeConsul) inFlight(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inflight[key]
}

func cloneCatalog(m map[string][]string) map[string][]string {
	if m == nil {
		return nil
	}
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}

func cloneEntries(es []*api.ServiceEntry) []*api.ServiceEntry {
	if es == nil {
		return nil
	}
	out := make([]*api.ServiceEntry, len(es))
	for i, e := range es {
		c := *e
		if e.Node != nil {
			n := *e.Node
			c.Node = &n
		}
		if e.Service != nil {
			s := *e.Service
			s.Tags = slices.Clone(s.Tags)
			s.Meta = maps.Clone(s.Meta)
			c.Service = &s
		}
		c.Checks = make(api.HealthChecks, len(e.Checks))
		for j, ch := range e.Checks {
			cc := *ch
			c.Checks[j] = &cc
		}
		out[i] = &c
	}
	return out
}

// routeTag is the opt-in tag used throughout the tests.
const routeTag = routetag.Prefix + "/"

// entry builds a health entry for instance id of a service on node, with one
// service check in the given status (api.HealthPassing, ...) and a passing
// node check.
func entry(node, id string, port int, status string, tags ...string) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node: &api.Node{Node: node, Address: "10.0.0." + node[len(node)-1:]},
		Service: &api.AgentService{
			ID: id, Service: "svc", Port: port, Tags: tags,
			Weights: api.AgentWeights{Passing: 1, Warning: 1},
		},
		Checks: api.HealthChecks{
			{Node: node, CheckID: "serfHealth", Status: api.HealthPassing},
			{Node: node, CheckID: "service:" + id, ServiceID: id, Status: status},
		},
	}
}
