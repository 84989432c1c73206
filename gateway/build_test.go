package gateway

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/gateway/balance"
)

// describe renders what a table routes, for comparing an incremental
// build with a build from scratch.
func describe(t *Table) string {
	var b strings.Builder
	for _, r := range t.Routes() {
		fmt.Fprintf(&b, "%s svc=%s strip=%q unroutable=%d policy=%v:", r.Name, r.Service, r.Strip, r.Unroutable, r.policy.balance)
		for _, ep := range r.Endpoints {
			fmt.Fprintf(&b, " %s@%s*%d", ep.Instance.Key(), ep.Addr, ep.Weight)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// checkConsistent checks that the maps of t hold exactly its route list,
// and that each route is fully made.
func checkConsistent(t *testing.T, table *Table) {
	t.Helper()
	n := len(table.anyHost)
	for host, m := range table.byHost {
		if len(m) == 0 {
			t.Errorf("empty map kept for host %q", host)
		}
		n += len(m)
	}
	if n != len(table.routes) {
		t.Errorf("maps hold %d routes, the list %d", n, len(table.routes))
	}
	for i, r := range table.routes {
		if i > 0 && compareKeys(table.routes[i-1].key(), r.key()) >= 0 {
			t.Errorf("route list not sorted at %d: %s after %s", i, r.Name, table.routes[i-1].Name)
		}
		m := table.anyHost
		if r.Host != "" {
			m = table.byHost[r.Host]
		}
		if m[r.PathPrefix] != r {
			t.Errorf("route %s is in the list but not in the maps", r.Name)
		}
		if r.picker == nil || r.state == nil || len(r.Endpoints) == 0 {
			t.Errorf("route %s half made: picker %v, state %v, %d endpoints", r.Name, r.picker, r.state, len(r.Endpoints))
		}
	}
}

// randomService makes a service of up to four instances with tags drawn
// from a small set, so that routes are shared, contested, malformed, and
// instances disagree on options.
func randomService(rng *rand.Rand, name string) *discovery.Service {
	tags := []string{"/", "/a", "/a/b", "h.example/", "h.example/x strip=/x", "/a lb=round_robin",
		"/bad/../x", "/c", "H.example/c", "/d unknown=1"}
	svc := &discovery.Service{Name: name, Unroutable: rng.IntN(2)}
	for i := range rng.IntN(5) {
		var routes []string
		for range rng.IntN(3) {
			routes = append(routes, tags[rng.IntN(len(tags))])
		}
		in := instance(fmt.Sprintf("%s-%d", name, i), 1000+i, routes...)
		in.Node = fmt.Sprintf("n%d", rng.IntN(2))
		in.Weight = rng.IntN(3)
		if rng.IntN(4) == 0 {
			in.Health = discovery.Warning
		}
		svc.Instances = append(svc.Instances, in)
	}
	return svc
}

// TestBuildIncrementalMatchesFullBuild applies a random history of
// snapshots to one gateway and checks each table against a gateway that
// builds it from scratch.
func TestBuildIncrementalMatchesFullBuild(t *testing.T) {
	for _, useWarning := range []bool{false, true} {
		t.Run(fmt.Sprintf("UseWarning=%v", useWarning), func(t *testing.T) {
			settings := DefaultSettings
			settings.UseWarning = useWarning
			rng := rand.New(rand.NewPCG(1, uint64(len(fmt.Sprint(useWarning)))))
			gw := New(Options{Settings: &settings})
			services := map[string]*discovery.Service{}
			var prevStats map[string]*balance.Stats
			for step := range 300 {
				// Change, add or remove a few services; leave the rest as
				// they are, pointers included, as discovery does.
				for range 1 + rng.IntN(3) {
					name := fmt.Sprintf("s%d", rng.IntN(8))
					switch rng.IntN(5) {
					case 0:
						delete(services, name)
					case 1:
						if s := services[name]; s != nil { // equal content, new pointer
							c := *s
							services[name] = &c
						}
					default:
						services[name] = randomService(rng, name)
					}
				}
				snap := &discovery.Snapshot{Index: uint64(step)}
				for _, s := range services {
					snap.Services = append(snap.Services, s)
				}
				slices.SortFunc(snap.Services, func(a, b *discovery.Service) int { return strings.Compare(a.Name, b.Name) })

				gw.Apply(snap)
				fresh := New(Options{Settings: &settings})
				fresh.Apply(snap)
				got, want := gw.Table(), fresh.Table()
				if describe(got) != describe(want) {
					t.Fatalf("step %d: incremental table\n%s\nfrom scratch\n%s", step, describe(got), describe(want))
				}
				if got.Index() != uint64(step) {
					t.Fatalf("step %d: index %d", step, got.Index())
				}
				checkConsistent(t, got)

				// One Stats per instance, kept while the instance stays.
				stats := map[string]*balance.Stats{}
				for _, r := range got.Routes() {
					for _, ep := range r.Endpoints {
						k := ep.Instance.Key()
						if s, ok := stats[k]; ok && s != ep.Stats {
							t.Fatalf("step %d: instance %s has two Stats", step, k)
						}
						stats[k] = ep.Stats
						if old, ok := prevStats[k]; ok && old != ep.Stats {
							t.Fatalf("step %d: instance %s lost its Stats though it stayed", step, k)
						}
					}
				}
				prevStats = stats
				held := map[string]bool{}
				for _, sr := range gw.builder.services {
					for _, k := range sr.held {
						held[k] = true
					}
				}
				if gw.builder.stats.Len() != len(held) {
					t.Fatalf("step %d: registry holds %d instances, services %d", step, gw.builder.stats.Len(), len(held))
				}
				if len(gw.builder.live) != len(got.Routes()) {
					t.Fatalf("step %d: %d live routes, %d in the table", step, len(gw.builder.live), len(got.Routes()))
				}
			}
		})
	}
}

func TestBuildReusesWhatDidNotChange(t *testing.T) {
	a := &discovery.Service{Name: "a", Instances: []discovery.Instance{instance("a-1", 1, "/a"), instance("a-2", 2, "/a", "/a2")}}
	b := &discovery.Service{Name: "b", Instances: []discovery.Instance{instance("b-1", 3, "/b")}}
	gw := New(Options{})
	gw.Apply(snapshot(a, b))
	first := gw.Table()
	ra, rb := first.Match("h", "/a"), first.Match("h", "/b")
	statsA1 := ra.Endpoints[0].Stats

	// a-2 goes critical: only a's routes are remade.
	a2 := &discovery.Service{Name: "a", Instances: []discovery.Instance{instance("a-1", 1, "/a")}, Unroutable: 1}
	gw.Apply(snapshot(a2, b))
	second := gw.Table()
	if second.Match("h", "/b") != rb {
		t.Error("b did not change, but its route was remade")
	}
	ra2 := second.Match("h", "/a")
	if ra2 == ra || upstreamIDs(ra2) != "[a-1]" || ra2.Unroutable != 1 {
		t.Errorf("a's route after a-2 left: %v (unroutable %d)", ra2, ra2.Unroutable)
	}
	if ra2.state != ra.state {
		t.Error("the route's state did not outlive the table")
	}
	if ra2.Endpoints[0].Stats != statsA1 {
		t.Error("a-1 stayed but lost its Stats")
	}
	if second.Match("h", "/a2") != nil {
		t.Error("/a2 is still routed after its only instance left")
	}
	if ra.picker == ra2.picker || first.Match("h", "/a") != ra {
		t.Error("the old table changed under its readers")
	}

	// The same snapshot again: nothing to do, same routes.
	gw.Apply(snapshot(a2, b))
	if gw.Table().Match("h", "/a") != ra2 || gw.Table().Match("h", "/b") != rb {
		t.Error("an unchanged snapshot remade routes")
	}
	if gw.builder.stats.Len() != 2 {
		t.Errorf("registry holds %d instances, want a-1 and b-1", gw.builder.stats.Len())
	}

	// a-2 comes back: fresh Stats (slow start again).
	gw.Apply(snapshot(a, b))
	if ep := gw.Table().Match("h", "/a2").Endpoints[0]; ep.Stats == nil || ep.Stats == statsA1 {
		t.Error("a-2 came back without fresh Stats")
	}
}

// logRecorder collects log lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *logRecorder) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}

func TestBuildContestedRouteAndWarningsOnce(t *testing.T) {
	logs := &logRecorder{}
	gw := New(Options{Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})})
	b := func(port int) *discovery.Service {
		return &discovery.Service{Name: "b", Instances: []discovery.Instance{
			instance("b-1", port, "/shared", "/bad/../tag"), instance("b-2", 2, "/shared lb=round_robin")}}
	}
	b1 := b(1)
	c := &discovery.Service{Name: "c", Instances: []discovery.Instance{instance("c-1", 3, "/shared")}}
	gw.Apply(snapshot(b1, c))
	shared := gw.Table().Match("h", "/shared")
	if shared.Service != "b" {
		t.Fatalf("/shared served by %s, want b (first by name)", shared.Service)
	}
	// c changes many times: b keeps the route, untouched.
	for port := range 5 {
		c = &discovery.Service{Name: "c", Instances: []discovery.Instance{instance("c-1", 10+port, "/shared")}}
		gw.Apply(snapshot(b1, c))
		if gw.Table().Match("h", "/shared") != shared {
			t.Fatal("a change of the service that lost the route remade it")
		}
	}
	// b flaps: the route is remade, still b's.
	for port := range 3 {
		gw.Apply(snapshot(b(100+port), c))
	}
	if r := gw.Table().Match("h", "/shared"); r.Service != "b" || r.state != shared.state {
		t.Errorf("after b changed: %v, state kept %v", r, r.state == shared.state)
	}
	// a appears and takes the route; leaves, and b has it back.
	a := &discovery.Service{Name: "a", Instances: []discovery.Instance{instance("a-1", 4, "/shared")}}
	gw.Apply(snapshot(a, b1, c))
	if r := gw.Table().Match("h", "/shared"); r.Service != "a" || upstreamIDs(r) != "[a-1]" {
		t.Errorf("a did not take /shared: %v", r)
	}
	gw.Apply(snapshot(b1, c))
	if r := gw.Table().Match("h", "/shared"); r.Service != "b" || upstreamIDs(r) != "[b-1 b-2]" {
		t.Errorf("b did not get /shared back: %v", r)
	}

	for sub, want := range map[string]int{
		// c joined the claim once, a once.
		"route claimed by two services": 2,
		// Parsed once per service, however often b changed.
		"route tag disabled": 1,
		// b-2 disagrees with b-1 on lb: said whenever b's instances
		// change (first, three flaps, back to the first), never when
		// other services change.
		"instances disagree on route options": 5,
	} {
		if got := logs.count(sub); got != want {
			t.Errorf("%q logged %d times, want %d:\n%s", sub, got, want, strings.Join(logs.lines, ""))
		}
	}
}

func TestBuildDropsTheSeriesOfARouteThatLeft(t *testing.T) {
	gw := New(Options{})
	web := &discovery.Service{Name: "web", Instances: []discovery.Instance{instance("w-1", 1, "/web")}}
	api := &discovery.Service{Name: "api", Instances: []discovery.Instance{instance("a-1", 2, "/api")}}
	gw.Apply(snapshot(api, web))
	m := gw.Metrics()
	for _, path := range []string{"/web", "/api"} {
		r := gw.Table().Match("h", path)
		m.observeRequest(t.Context(), r, "GET", 200, time.Now())
		m.observeAttempt(t.Context(), r, r.Endpoints[0], succeeded, time.Now(), time.Now())
	}
	admin := NewAdmin(gw, AdminOptions{})
	body := scrape(t, admin, false)
	if grepLines(body, `route="/web"`) == "" {
		t.Fatal("no series for /web")
	}

	gw.Apply(snapshot(api)) // web leaves, and /web with it
	body = scrape(t, admin, false)
	if lines := grepLines(body, `route="/web"`); lines != "" {
		t.Errorf("series of a route that left remain:\n%s", lines)
	}
	wantValue(t, body, `hopgate_upstream_attempts_total{instance="a-1",node="n1",outcome="ok",route="/api"}`, 1)
	wantValue(t, body, `hopgate_requests_total{code="2xx",method="GET",route="/api"}`, 1)
}

// BenchmarkTableBuild is the cost of a routing table for 1,000 services of
// 5 instances each: one service changed since the last snapshot (an
// instance flapped), against every service new (the first snapshot, or a
// build from scratch).
func BenchmarkTableBuild(b *testing.B) {
	const services, instances = 1000, 5
	svc := func(i, port int) *discovery.Service {
		s := &discovery.Service{Name: fmt.Sprintf("svc%04d", i)}
		for j := range instances {
			in := instance(fmt.Sprintf("svc%04d-%d", i, j), port+j, fmt.Sprintf("/svc%d", i))
			in.Node = fmt.Sprintf("node%d", j)
			s.Instances = append(s.Instances, in)
		}
		return s
	}
	base := make([]*discovery.Service, services)
	for i := range base {
		base[i] = svc(i, 10000)
	}
	b.Run("one_changed", func(b *testing.B) {
		gw := New(Options{})
		gw.Apply(&discovery.Snapshot{Services: base})
		// Two versions of service 500 (all instances, or one of them
		// critical), swapped in turn: each build has one change.
		flapped := svc(500, 10000)
		flapped.Instances, flapped.Unroutable = flapped.Instances[1:], 1
		snaps := [2]*discovery.Snapshot{{Services: slices.Clone(base)}, {Services: slices.Clone(base)}}
		snaps[1].Services[500] = flapped
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			gw.Apply(snaps[i%2])
		}
	})
	b.Run("all_changed", func(b *testing.B) {
		// Every instance of every service moves to another port, and
		// back: each build redoes all 1,000 services, as a build from
		// scratch does.
		other := make([]*discovery.Service, services)
		for i := range other {
			other[i] = svc(i, 20000)
		}
		snaps := [2]*discovery.Snapshot{{Services: base}, {Services: other}}
		gw := New(Options{})
		gw.Apply(snaps[0])
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			gw.Apply(snaps[i%2])
		}
	})
}
