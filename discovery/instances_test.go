package discovery

import (
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestInstancesFrom(t *testing.T) {
	withWeights := func(e *api.ServiceEntry, passing, warning int) *api.ServiceEntry {
		e.Service.Weights = api.AgentWeights{Passing: passing, Warning: warning}
		return e
	}
	withAddress := func(e *api.ServiceEntry, addr string) *api.ServiceEntry {
		e.Service.Address = addr
		return e
	}
	withCheck := func(e *api.ServiceEntry, id, status string) *api.ServiceEntry {
		e.Checks = append(e.Checks, &api.HealthCheck{CheckID: id, Status: status})
		return e
	}
	tests := []struct {
		name       string
		entries    []*api.ServiceEntry
		want       []Instance
		unroutable int
	}{
		{
			name:    "passing, node address when the service has none",
			entries: []*api.ServiceEntry{entry("n1", "a", 80, api.HealthPassing, routeTag)},
			want: []Instance{{ID: "a", Node: "n1", Address: "10.0.0.1", Port: 80,
				Tags: []string{routeTag}, Weight: 1, Health: Passing}},
		},
		{
			name:    "service address wins over the node's",
			entries: []*api.ServiceEntry{withAddress(entry("n1", "a", 80, api.HealthPassing), "192.0.2.7")},
			want:    []Instance{{ID: "a", Node: "n1", Address: "192.0.2.7", Port: 80, Weight: 1, Health: Passing}},
		},
		{
			name:       "critical service check drops the instance",
			unroutable: 1,
			entries:    []*api.ServiceEntry{entry("n1", "a", 80, api.HealthCritical)},
			want:       []Instance{},
		},
		{
			name:       "critical node check drops it too",
			unroutable: 1,
			entries:    []*api.ServiceEntry{withCheck(entry("n1", "a", 80, api.HealthPassing), "node-disk", api.HealthCritical)},
			want:       []Instance{},
		},
		{
			name:       "maintenance drops it",
			unroutable: 1,
			entries:    []*api.ServiceEntry{withCheck(entry("n1", "a", 80, api.HealthPassing), api.NodeMaint, api.HealthCritical)},
			want:       []Instance{},
		},
		{
			name:       "unknown check status drops it",
			unroutable: 1,
			entries:    []*api.ServiceEntry{entry("n1", "a", 80, "bogus")},
			want:       []Instance{},
		},
		{
			name:    "warning uses the warning weight",
			entries: []*api.ServiceEntry{withWeights(entry("n1", "a", 80, api.HealthWarning), 5, 2)},
			want:    []Instance{{ID: "a", Node: "n1", Address: "10.0.0.1", Port: 80, Weight: 2, Health: Warning}},
		},
		{
			name:    "warning weight 0 is kept as 0",
			entries: []*api.ServiceEntry{withWeights(entry("n1", "a", 80, api.HealthWarning), 5, 0)},
			want:    []Instance{{ID: "a", Node: "n1", Address: "10.0.0.1", Port: 80, Weight: 0, Health: Warning}},
		},
		{
			name:    "passing uses the passing weight",
			entries: []*api.ServiceEntry{withWeights(entry("n1", "a", 80, api.HealthPassing), 5, 2)},
			want:    []Instance{{ID: "a", Node: "n1", Address: "10.0.0.1", Port: 80, Weight: 5, Health: Passing}},
		},
		{
			name:    "no weights reported at all means 1",
			entries: []*api.ServiceEntry{withWeights(entry("n1", "a", 80, api.HealthWarning), 0, 0)},
			want:    []Instance{{ID: "a", Node: "n1", Address: "10.0.0.1", Port: 80, Weight: 1, Health: Warning}},
		},
		{
			name: "sorted by Key, which is node/id, not (node, id)",
			entries: []*api.ServiceEntry{
				entry("n1", "b", 1, api.HealthPassing),
				entry("n1-x1", "a", 2, api.HealthPassing), // "n1-x1/a" < "n1/b": '-' sorts before '/'
				entry("n1", "a", 3, api.HealthPassing),
				nil, // tolerated
			},
			want: []Instance{
				{ID: "a", Node: "n1-x1", Address: "10.0.0.1", Port: 2, Weight: 1, Health: Passing},
				{ID: "a", Node: "n1", Address: "10.0.0.1", Port: 3, Weight: 1, Health: Passing},
				{ID: "b", Node: "n1", Address: "10.0.0.1", Port: 1, Weight: 1, Health: Passing},
			},
		},
		{
			name: "instances without a route tag of their own are kept: the gateway reads each instance's tags",
			entries: []*api.ServiceEntry{
				entry("n1", "a", 1, api.HealthPassing, routeTag),
				entry("n2", "b", 2, api.HealthPassing, "other"),
			},
			want: []Instance{
				{ID: "a", Node: "n1", Address: "10.0.0.1", Port: 1, Tags: []string{routeTag}, Weight: 1, Health: Passing},
				{ID: "b", Node: "n2", Address: "10.0.0.2", Port: 2, Tags: []string{"other"}, Weight: 1, Health: Passing},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, unroutable := instancesFrom(tt.entries)
			a, b := &Service{Instances: got}, &Service{Instances: tt.want}
			if !a.Equal(b) || len(got) != len(tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			if unroutable != tt.unroutable {
				t.Errorf("unroutable = %d, want %d", unroutable, tt.unroutable)
			}
		})
	}
}

// The snapshot must not alias the API's memory: whatever happens to the
// entries afterwards, the instances stay as they were.
func TestInstancesFromCopies(t *testing.T) {
	e := entry("n1", "a", 80, api.HealthPassing, routeTag, "x")
	e.Service.Meta = map[string]string{"version": "1"}
	got, _ := instancesFrom([]*api.ServiceEntry{e})

	e.Service.Tags[0] = "changed"
	e.Service.Meta["version"] = "2"
	e.Service.Port = 81

	if got[0].Tags[0] != routeTag || got[0].Meta["version"] != "1" || got[0].Port != 80 {
		t.Fatalf("instance changed with the API entry: %+v", got[0])
	}
}

func TestCursor(t *testing.T) {
	type step struct {
		got      uint64
		wantNew  bool
		wantWait uint64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first answer is always new", []step{{5, true, 5}}},
		{"same index: nothing new, keep waiting on it", []step{{5, true, 5}, {5, false, 5}}},
		{"higher index: new", []step{{5, true, 5}, {9, true, 9}}},
		{"lower index: reset to a non-blocking re-read, which is used", []step{{9, true, 9}, {5, false, 0}, {5, true, 5}}},
		{"index 0 is new the first time but never sent back", []step{{0, true, 1}, {0, false, 1}, {3, true, 3}}},
		{"reset then 0", []step{{9, true, 9}, {4, false, 0}, {0, true, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cursor
			for i, s := range tt.steps {
				if got := c.advance(s.got); got != s.wantNew || c.wait != s.wantWait {
					t.Fatalf("step %d (index %d): new=%v wait=%d, want new=%v wait=%d", i, s.got, got, c.wait, s.wantNew, s.wantWait)
				}
			}
		})
	}
}

func TestBackoffAndJitterBounds(t *testing.T) {
	const limit = 2 * time.Second
	wants := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, limit, limit}
	for n := 1; n <= 100; n++ {
		want := limit
		if n <= len(wants) {
			want = wants[n-1]
		}
		for range 50 {
			if d := backoff(n, limit); d < want*8/10 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, want*8/10, want)
			}
		}
	}
	// A cap below the start is the cap.
	if d := backoff(1, 100*time.Millisecond); d > 100*time.Millisecond {
		t.Fatalf("backoff(1, 100ms) = %v", d)
	}
	seen := map[bool]bool{}
	for range 200 {
		d := jitter(time.Second)
		if d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("jitter(1s) = %v", d)
		}
		seen[d < time.Second] = true
	}
	if len(seen) != 2 {
		t.Fatalf("jitter never spreads both ways")
	}
}

// A watch that was stopped may still deliver an answer (it was mid-send when
// cancelled); if its service came back meanwhile with a new watch, that old
// answer must not count.
func TestAssemblerIgnoresStoppedWatches(t *testing.T) {
	a := newAssembler()
	svc := func(gen, index uint64, port int) update {
		return update{service: &serviceUpdate{name: "a", gen: gen, index: index,
			instances: []Instance{{ID: "a", Node: "n", Port: port, Weight: 1, Health: Passing}}}}
	}
	a.apply(update{catalog: &catalogUpdate{index: 1, services: map[string]uint64{"a": 1}}})
	a.apply(svc(1, 2, 80))
	first := a.build()
	if first == nil || first.Service("a").Instances[0].Port != 80 {
		t.Fatalf("first build: %+v", first)
	}
	a.last = first

	a.apply(update{catalog: &catalogUpdate{index: 3, services: map[string]uint64{}}})
	a.apply(update{catalog: &catalogUpdate{index: 4, services: map[string]uint64{"a": 2}}})
	a.apply(svc(1, 5, 81)) // late answer of the stopped watch
	snap := a.build()
	if snap.Service("a") != nil {
		t.Fatalf("stale answer of a stopped watch was used: %+v", snap.Service("a"))
	}
	a.apply(svc(2, 6, 82))
	snap = a.build()
	if s := snap.Service("a"); s == nil || s.Instances[0].Port != 82 || snap.Index != 6 {
		t.Fatalf("answer of the current watch: %+v index %d", s, snap.Index)
	}
	if !slices.Equal(a.names, []string{"a"}) {
		t.Fatalf("names %v", a.names)
	}
}

// A build compares only the services that answered since the last one: a
// service whose new answer says the same keeps the pointer consumers know,
// and Changed is when the oldest of those answers arrived.
func TestAssemblerKeepsPointersAndStampsArrivals(t *testing.T) {
	a := newAssembler()
	t0 := time.Now()
	svc := func(name string, port int, at time.Time) update {
		return update{service: &serviceUpdate{name: name, gen: 1, index: 5, at: at,
			instances: []Instance{{ID: name, Node: "n", Port: port, Weight: 1, Health: Passing}}}}
	}
	a.apply(update{catalog: &catalogUpdate{index: 1, at: t0, services: map[string]uint64{"a": 1, "b": 1}}})
	a.apply(svc("a", 80, t0.Add(time.Millisecond)))
	a.apply(svc("b", 80, t0.Add(2*time.Millisecond)))
	first := a.build()
	if first == nil || !first.Changed.Equal(t0) {
		t.Fatalf("first build: %+v, want Changed at the catalog's answer", first)
	}
	a.last = first

	// a answers again with the same content, b with a new port.
	a.apply(svc("b", 81, t0.Add(4*time.Millisecond)))
	a.apply(svc("a", 80, t0.Add(3*time.Millisecond)))
	snap := a.build()
	if snap.Service("a") != first.Service("a") {
		t.Error("a's answer said the same but a got a new pointer")
	}
	if snap.Service("b") == first.Service("b") || snap.Service("b").Instances[0].Port != 81 {
		t.Errorf("b changed: %+v", snap.Service("b"))
	}
	if !snap.Changed.Equal(t0.Add(3 * time.Millisecond)) {
		t.Errorf("Changed = %v, want the oldest answer since the last build", snap.Changed.Sub(t0))
	}
	a.last = snap

	// Nothing answered: Changed is the build itself.
	if again := a.build(); !again.Changed.Equal(again.Built) || !again.SameContent(snap) {
		t.Errorf("build with no answer: Changed %v, Built %v", again.Changed, again.Built)
	}
}
