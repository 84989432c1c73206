package discovery

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/discovery/routetag"
)

// Defaults for the zero values of Config.
const (
	DefaultWaitTime    = 5 * time.Minute
	DefaultMinInterval = 100 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
)

// updateBuffer lets watches hand over answers without waiting for the
// assembler while it is busy publishing; whatever piles up is coalesced into
// one snapshot.
const updateBuffer = 64

// Config configures a Watcher. Only Consul is required.
type Config struct {
	Consul Consul
	// Logger gets failures (warn), recoveries and readiness (info), and
	// snapshot and index details (debug). nil: no logging.
	Logger hclog.Logger
	// Publish is called from a single goroutine (Run's), in order, with each
	// new snapshot; it must not block for long (changes that arrive meanwhile
	// are coalesced into the next snapshot). nil: snapshots are only counted
	// in Status.
	Publish func(*Snapshot)
	// WaitTime is the blocking-query wait; default 5m (Consul caps at 10m).
	WaitTime time.Duration
	// MinInterval is the least time between two queries of the same watch,
	// jittered by ±20%, so that a churning index cannot busy-loop; default
	// 100ms.
	MinInterval time.Duration
	// MaxBackoff caps the exponential backoff after failed queries (it starts
	// at 250ms and is jittered); default 10s.
	MaxBackoff time.Duration
	// Datacenter to watch; empty means the agent's own.
	Datacenter string
	// AllowStale lets any Consul server answer, not just the leader: less
	// load on the leader and answers during an election, at the price of
	// data that may lag by a little. Off by default.
	AllowStale bool
}

// Status is the watcher's health, for the admin API.
type Status struct {
	// Ready is true once the first complete snapshot has been published.
	Ready bool
	// Index is the Index of the last snapshot built; it moves even when the
	// content did not change and so nothing was published.
	Index uint64
	// LastContact is the time of the last successful answer from Consul
	// (any query); zero before the first.
	LastContact time.Time
	// LastError is the last query error, "" once a query succeeds after it.
	LastError string
	// Errors counts the failed Consul queries since the start.
	Errors uint64
	// Services and Instances count the last published snapshot.
	Services, Instances int
}

// Watcher watches the Consul catalog for services that opt in to the gateway
// (routetag.HasRoute on their tags) and the health of each of them, and
// publishes complete snapshots of their routable instances.
//
// One goroutine runs a blocking query on the catalog and starts or stops one
// health watch per opted-in service; the watches hand their answers to one
// assembler, which builds and publishes snapshots. When Consul fails, the
// last snapshot stays in force (fail static): errors never reach a snapshot.
type Watcher struct {
	cfg     Config
	log     hclog.Logger
	running atomic.Bool

	statusMu sync.Mutex // serialises writers; readers only Load
	status   atomic.Pointer[Status]

	watches      atomic.Int64 // service watches running, one connection each
	limitWarning atomic.Int64 // unix nanoseconds of the last connection-limit warning
}

// NewWatcher returns a watcher for cfg, with defaults filled in.
func NewWatcher(cfg Config) *Watcher {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Publish == nil {
		cfg.Publish = func(*Snapshot) {}
	}
	if cfg.WaitTime <= 0 {
		cfg.WaitTime = DefaultWaitTime
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	w := &Watcher{cfg: cfg, log: cfg.Logger}
	w.status.Store(&Status{})
	return w
}

// Status is safe for concurrent use.
func (w *Watcher) Status() Status { return *w.status.Load() }

// Run watches until ctx is cancelled and returns nil then. It never returns
// because Consul is down: it retries with backoff for as long as it takes.
// It returns an error only for misuse (no Consul, or a second call).
func (w *Watcher) Run(ctx context.Context) error {
	if w.cfg.Consul == nil {
		return errors.New("discovery: Config.Consul is nil")
	}
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("discovery: Watcher.Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	updates := make(chan update, updateBuffer)
	var wg sync.WaitGroup
	wg.Go(func() { w.watchCatalog(ctx, updates) })
	a := newAssembler()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case u := <-updates:
			a.apply(u)
		}
		// Take everything else that is already waiting before building, so a
		// burst of answers (startup, a rack going down) makes one snapshot.
	drain:
		for {
			select {
			case u := <-updates:
				a.apply(u)
			default:
				break drain
			}
		}
		if ctx.Err() == nil {
			w.publish(a)
		}
	}
}

// update is what the watches tell the assembler: exactly one field is set.
type update struct {
	catalog *catalogUpdate
	service *serviceUpdate
}

// catalogUpdate is the set of opted-in services after a catalog answer, each
// with the generation of the health watch that speaks for it. A service
// absent from the set is gone: that is how removals reach the assembler.
type catalogUpdate struct {
	index    uint64
	at       time.Time // when Consul's answer arrived
	services map[string]uint64
}

// serviceUpdate is one health answer of one service's watch.
type serviceUpdate struct {
	name       string
	gen        uint64
	index      uint64
	at         time.Time // when Consul's answer arrived
	instances  []Instance
	unroutable int
}

func send(ctx context.Context, out chan<- update, u update) bool {
	select {
	case out <- u:
		return true
	case <-ctx.Done():
		return false
	}
}

// watchCatalog runs the catalog's blocking query and keeps one health watch
// running per opted-in service. On return every watch it started has ended.
func (w *Watcher) watchCatalog(ctx context.Context, out chan<- update) {
	type watch struct {
		gen    uint64
		cancel context.CancelFunc
	}
	var (
		watches = map[string]watch{}
		gen     uint64
		wg      sync.WaitGroup
	)
	defer func() {
		for _, wt := range watches {
			wt.cancel()
		}
		wg.Wait()
	}()

	poll(ctx, w, "catalog", w.cfg.Consul.Services, func(services map[string][]string, index uint64) bool {
		at := time.Now()
		set := make(map[string]uint64, len(watches))
		var start []string
		for name, tags := range services {
			if !routetag.HasRoute(tags) {
				continue
			}
			if wt, ok := watches[name]; ok {
				set[name] = wt.gen
				continue
			}
			gen++
			set[name] = gen
			start = append(start, name)
		}
		for name, wt := range watches {
			if _, ok := set[name]; !ok {
				w.log.Debug("service left the catalog or stopped opting in; stopping its watch", "service", name)
				wt.cancel()
				delete(watches, name)
			}
		}
		// The assembler must learn the new generations before any new watch
		// can report, or it would drop their first answers as stale. The
		// channel is FIFO, so sending first is enough.
		if !send(ctx, out, update{catalog: &catalogUpdate{index: index, at: at, services: set}}) {
			return false
		}
		for _, name := range start {
			sctx, cancel := context.WithCancel(ctx)
			watches[name] = watch{gen: set[name], cancel: cancel}
			g := set[name]
			w.watches.Add(1)
			wg.Go(func() {
				defer w.watches.Add(-1)
				w.watchService(sctx, name, g, out)
			})
		}
		return true
	})
}

// watchService runs the health blocking query of one service until ctx ends.
func (w *Watcher) watchService(ctx context.Context, name string, gen uint64, out chan<- update) {
	query := func(q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return w.cfg.Consul.ServiceHealth(name, q)
	}
	poll(ctx, w, "service "+name, query, func(entries []*api.ServiceEntry, index uint64) bool {
		at := time.Now()
		instances, unroutable := instancesFrom(entries)
		return send(ctx, out, update{service: &serviceUpdate{
			name: name, gen: gen, index: index, at: at, instances: instances, unroutable: unroutable,
		}})
	})
}

// publish builds a snapshot from the assembler's state and publishes it if it
// is complete and differs from the last one.
func (w *Watcher) publish(a *assembler) {
	snap := a.build()
	if snap == nil {
		return // not complete yet
	}
	if a.last != nil && a.last.SameContent(snap) {
		w.updateStatus(func(s *Status) { s.Index = snap.Index })
		return
	}
	first := a.last == nil
	a.last = snap
	w.cfg.Publish(snap)
	w.updateStatus(func(s *Status) {
		s.Ready = true
		s.Index = snap.Index
		s.Services = len(snap.Services)
		s.Instances = snap.Instances()
	})
	if first {
		w.log.Info("first snapshot published", "services", len(snap.Services), "instances", snap.Instances(), "index", snap.Index)
	} else {
		w.log.Debug("snapshot published", "services", len(snap.Services), "instances", snap.Instances(), "index", snap.Index)
	}
}

func (w *Watcher) updateStatus(f func(*Status)) {
	w.statusMu.Lock()
	defer w.statusMu.Unlock()
	s := *w.status.Load()
	f(&s)
	w.status.Store(&s)
}

func (w *Watcher) noteContact() {
	now := time.Now()
	w.updateStatus(func(s *Status) { s.LastContact, s.LastError = now, "" })
}

func (w *Watcher) noteError(err error) {
	w.updateStatus(func(s *Status) { s.LastError, s.Errors = err.Error(), s.Errors+1 })
}

// assembler holds the latest answer of every watch and builds snapshots from
// them. It is owned by Run's goroutine. Its work per answer is proportional
// to that answer: it remembers which services answered since the last
// build, so a build compares only those with the last snapshot, and copies
// the other *Service pointers as they are.
type assembler struct {
	haveCatalog  bool
	catalogIndex uint64
	names        []string // opted-in services, sorted
	services     map[string]*serviceState
	answered     map[string]bool // services with an answer since the last build
	oldest       time.Time       // arrival of the oldest answer since the last build
	last         *Snapshot       // last published
}

type serviceState struct {
	gen   uint64
	index uint64
	svc   *Service // nil until the watch has answered once
}

func newAssembler() *assembler {
	return &assembler{services: map[string]*serviceState{}, answered: map[string]bool{}}
}

func (a *assembler) apply(u update) {
	switch {
	case u.catalog != nil:
		a.haveCatalog = true
		a.catalogIndex = u.catalog.index
		a.noteArrival(u.catalog.at)
		next := make(map[string]*serviceState, len(u.catalog.services))
		a.names = a.names[:0]
		for name, gen := range u.catalog.services {
			a.names = append(a.names, name)
			if st, ok := a.services[name]; ok && st.gen == gen {
				next[name] = st
			} else {
				next[name] = &serviceState{gen: gen}
			}
		}
		slices.Sort(a.names)
		a.services = next
	case u.service != nil:
		st, ok := a.services[u.service.name]
		if !ok || st.gen != u.service.gen {
			return // from a watch that has been stopped since
		}
		st.index = u.service.index
		st.svc = &Service{Name: u.service.name, Instances: u.service.instances, Unroutable: u.service.unroutable}
		a.answered[u.service.name] = true
		a.noteArrival(u.service.at)
	}
}

func (a *assembler) noteArrival(at time.Time) {
	if a.oldest.IsZero() || at.Before(a.oldest) {
		a.oldest = at
	}
}

// build returns the snapshot of the current state, or nil while it is not
// complete: before the catalog has answered and, until the first publish,
// while an opted-in service has not answered, so readiness never means
// partial routes. After that a newly opted-in service joins once it answers.
func (a *assembler) build() *Snapshot {
	changed := a.oldest
	a.oldest = time.Time{}
	defer clear(a.answered)
	if !a.haveCatalog {
		return nil
	}
	// Keep the pointer consumers already know for a service whose new
	// answer says the same: they reuse what they built for it.
	if a.last != nil {
		for name := range a.answered {
			st := a.services[name]
			if st == nil || st.svc == nil {
				continue
			}
			if prev := a.last.Service(name); prev != st.svc && prev.Equal(st.svc) {
				st.svc = prev
			}
		}
	}
	snap := &Snapshot{Services: make([]*Service, 0, len(a.names)), Index: a.catalogIndex}
	for _, name := range a.names {
		st := a.services[name]
		if st.svc == nil {
			if a.last == nil {
				return nil
			}
			continue
		}
		snap.Services = append(snap.Services, st.svc)
		snap.Index = max(snap.Index, st.index)
	}
	snap.Built = time.Now()
	snap.Changed = changed
	if changed.IsZero() {
		snap.Changed = snap.Built
	}
	return snap
}
