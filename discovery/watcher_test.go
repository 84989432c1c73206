package discovery

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
)

// harness runs a Watcher against a fakeConsul inside a synctest bubble and
// records what it publishes.
type harness struct {
	t *testing.T
	f *fakeConsul
	w *Watcher

	mu    sync.Mutex
	snaps []*Snapshot
	gate  chan struct{} // when set, Publish waits until it is closed
	logs  bytes.Buffer

	cancel context.CancelFunc
	done   chan error
}

func startWatcher(t *testing.T, f *fakeConsul, opts ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, f: f, done: make(chan error, 1)}
	cfg := Config{
		Consul: f,
		Logger: hclog.New(&hclog.LoggerOptions{
			Output: lockedWriter{&h.mu, &h.logs}, Level: hclog.Debug, DisableTime: true,
		}),
		Publish:    h.publish,
		WaitTime:   time.Minute,
		MaxBackoff: 2 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	h.w = NewWatcher(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.w.Run(ctx) }()
	return h
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (h *harness) publish(s *Snapshot) {
	h.mu.Lock()
	h.snaps = append(h.snaps, s)
	gate := h.gate
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
}

func (h *harness) published() []*Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Snapshot(nil), h.snaps...)
}

func (h *harness) last() *Snapshot {
	s := h.published()
	if len(s) == 0 {
		h.t.Fatalf("nothing published")
	}
	return s[len(s)-1]
}

func (h *harness) log() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.logs.String()
}

// stop cancels Run and waits for it. If any goroutine of the watcher
// outlived Run, synctest.Test reports it when the bubble ends.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Fatalf("Run returned %v, want nil", err)
	}
}

// settle lets fake time pass (enough for rate limits) and waits until every
// goroutine is blocked.
func settle() {
	time.Sleep(time.Second)
	synctest.Wait()
}

// describe renders a snapshot as "name:node/id[h],... name:...", h being the
// first letter of the health.
func describe(s *Snapshot) string {
	var parts []string
	for _, svc := range s.Services {
		var insts []string
		for _, i := range svc.Instances {
			insts = append(insts, fmt.Sprintf("%s[%c]", i.Key(), i.Health[0]))
		}
		parts = append(parts, svc.Name+":"+strings.Join(insts, ","))
	}
	return strings.Join(parts, " ")
}

func wantPublished(t *testing.T, h *harness, n int) []*Snapshot {
	t.Helper()
	snaps := h.published()
	if len(snaps) != n {
		var d []string
		for _, s := range snaps {
			d = append(d, "{"+describe(s)+"}")
		}
		t.Fatalf("published %d snapshots, want %d: %s", len(snaps), n, strings.Join(d, " "))
	}
	return snaps
}

func wantSnapshot(t *testing.T, s *Snapshot, want string) {
	t.Helper()
	if got := describe(s); got != want {
		t.Fatalf("snapshot\n got: %s\nwant: %s", got, want)
	}
}

func waitIndexes(calls []fakeCall) []uint64 {
	var out []uint64
	for _, c := range calls {
		out = append(out, c.WaitIndex)
	}
	return out
}

func TestWatcherIndexRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		// The catalog comes from scripts only; its own state stays at index
		// 1 so that blocking queries on it really block.
		f.setHealth("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		opted := func(names ...string) map[string][]string {
			m := map[string][]string{"consul": nil}
			for _, n := range names {
				m[n] = []string{routeTag}
			}
			return m
		}
		f.script("catalog", reply{index: 10, catalog: opted("a")})
		h := startWatcher(t, f)
		defer h.stop()
		settle()

		snaps := wantPublished(t, h, 1)
		wantSnapshot(t, snaps[0], "a:n1/a1[p]")
		if snaps[0].Index != 10 {
			t.Errorf("snapshot index %d, want 10 (the highest of catalog 10 and health 2)", snaps[0].Index)
		}

		// Same index with other data: not an update.
		f.script("catalog", reply{index: 10, catalog: opted("a", "b")})
		settle()
		wantPublished(t, h, 1)
		if n := len(f.callsOf("health/b")); n != 0 {
			t.Errorf("answer at the same index was used: b was queried %d times", n)
		}

		// Lower index: its data is not trusted; the next query is a
		// non-blocking re-read (WaitIndex 0), whose answer is used.
		f.script("catalog", reply{index: 7, catalog: opted("a", "c")}, reply{index: 8, catalog: opted("a", "d")})
		settle()
		if n := len(f.callsOf("health/c")); n != 0 {
			t.Errorf("answer at a lower index was used: c was queried %d times", n)
		}
		snaps = wantPublished(t, h, 2)
		wantSnapshot(t, snaps[1], "a:n1/a1[p] d:")

		// Index 0 (a Consul bug): used after the reset, but never sent
		// back: the next query waits on 1.
		f.script("catalog", reply{index: 3, catalog: opted("a")}, reply{index: 0, catalog: opted("a")})
		settle()
		// And a further 0 is "the same index": ignored.
		f.script("catalog", reply{index: 0, catalog: opted("a", "e")})
		settle()
		snaps = wantPublished(t, h, 3)
		wantSnapshot(t, snaps[2], "a:n1/a1[p]")

		got := waitIndexes(f.callsOf("catalog"))
		want := []uint64{0, 10, 10, 0, 8, 0, 1, 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("catalog WaitIndexes %v, want %v", got, want)
		}
		// The health watch sends the index of its answer.
		if got := waitIndexes(f.callsOf("health/a")); fmt.Sprint(got) != "[0 2]" {
			t.Errorf("health/a WaitIndexes %v, want [0 2]", got)
		}
	})
}

func TestWatcherBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.setDown(errDown)
		h := startWatcher(t, f) // MaxBackoff 2s
		defer h.stop()
		time.Sleep(10 * time.Second)
		synctest.Wait()

		calls := f.callsOf("catalog")
		if len(calls) < 6 {
			t.Fatalf("%d calls in 10s, want at least 6", len(calls))
		}
		for k := 1; k < len(calls); k++ {
			want := min(backoffStart<<(k-1), 2*time.Second)
			if gap := calls[k].At.Sub(calls[k-1].At); gap < want*8/10 || gap > want {
				t.Errorf("gap before attempt %d: %v, want in [%v, %v]", k+1, gap, want*8/10, want)
			}
		}
		for k := 1; k <= len(calls); k++ {
			if !strings.Contains(h.log(), fmt.Sprintf("[WARN]  consul query failed; keeping the last data: watch=catalog attempt=%d ", k)) {
				t.Errorf("no warning for attempt %d in log:\n%s", k, h.log())
			}
		}
		st := h.w.Status()
		if st.LastError != errDown.Error() || st.Ready || !st.LastContact.IsZero() {
			t.Errorf("status while down: %+v", st)
		}
		wantPublished(t, h, 0) // no catalog, no snapshot

		// Back up: the next retry succeeds, and resets the backoff.
		f.setDown(nil)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		wantPublished(t, h, 1)
		st = h.w.Status()
		if st.LastError != "" || !st.Ready || st.LastContact.IsZero() {
			t.Errorf("status after recovery: %+v", st)
		}
		if !strings.Contains(h.log(), "consul query succeeded again: watch=catalog") {
			t.Errorf("no recovery message in log:\n%s", h.log())
		}

		// Consul fails again while the watch blocks: the first retry comes
		// after the initial backoff again, not after the cap.
		f.setDown(errDown)
		failedAt := time.Now()
		time.Sleep(time.Second)
		synctest.Wait()
		var retry time.Time
		for _, c := range f.callsOf("catalog") {
			if c.At.After(failedAt) {
				retry = c.At
				break
			}
		}
		if d := retry.Sub(failedAt); d < 200*time.Millisecond || d > 250*time.Millisecond {
			t.Errorf("after a success the backoff did not restart: first retry %v after the failure, want 200-250ms", d)
		}
		wantPublished(t, h, 1)
	})
}

func TestWatcherRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		// A health index that moves on every query, data unchanged: without
		// a rate limit this would spin.
		f.respond = func(key string, q *api.QueryOptions, ep *fakeEndpoint) (reply, bool) {
			if key != "health/a" {
				return reply{}, false
			}
			ep.index++
			return ep.current(), true
		}
		h := startWatcher(t, f) // MinInterval 100ms
		defer h.stop()
		time.Sleep(10 * time.Second)
		synctest.Wait()

		calls := f.callsOf("health/a")
		for k := 1; k < len(calls); k++ {
			if gap := calls[k].At.Sub(calls[k-1].At); gap < 80*time.Millisecond || gap > 120*time.Millisecond {
				t.Fatalf("gap %d between queries: %v, want 100ms ±20%%", k, gap)
			}
		}
		if n := len(calls); n < 10000/120 || n > 10000/80+1 {
			t.Errorf("%d queries in 10s, want about 100", n)
		}
		// Same content at new indexes: published once, Status.Index moves.
		wantPublished(t, h, 1)
		if st := h.w.Status(); st.Index <= h.last().Index {
			t.Errorf("Status.Index %d did not move past the published %d", st.Index, h.last().Index)
		}
	})
}

func TestWatcherCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		name := func(i int) string { return fmt.Sprintf("s%03d", i) }
		for i := range 100 {
			f.register(name(i), entry("n1", name(i)+"-1", 80, api.HealthPassing, routeTag))
		}
		h := startWatcher(t, f)
		defer h.stop()
		settle()
		// 100 services starting: one snapshot.
		snaps := wantPublished(t, h, 1)
		if len(snaps[0].Services) != 100 || snaps[0].Instances() != 100 {
			t.Fatalf("first snapshot: %d services, %d instances", len(snaps[0].Services), snaps[0].Instances())
		}

		// Hold the next Publish while 50 more services change.
		gate := make(chan struct{})
		h.mu.Lock()
		h.gate = gate
		h.mu.Unlock()
		f.setHealth(name(0), entry("n1", name(0)+"-1", 80, api.HealthWarning, routeTag))
		synctest.Wait()
		wantPublished(t, h, 2)
		for i := 1; i <= 50; i++ {
			f.setHealth(name(i), entry("n1", name(i)+"-1", 80, api.HealthWarning, routeTag))
		}
		synctest.Wait()
		h.mu.Lock()
		h.gate = nil
		h.mu.Unlock()
		close(gate)
		settle()

		snaps = wantPublished(t, h, 3)
		for i, svc := range snaps[2].Services {
			want := Passing
			if i <= 50 {
				want = Warning
			}
			if svc.Instances[0].Health != want {
				t.Fatalf("%s is %s in the coalesced snapshot, want %s", svc.Name, svc.Instances[0].Health, want)
			}
		}
	})
}

func TestWatcherKeepsPointersOfUnchangedServices(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		f.register("b", entry("n1", "b1", 80, api.HealthPassing, routeTag))
		h := startWatcher(t, f)
		defer h.stop()
		settle()
		first := wantPublished(t, h, 1)[0]

		f.setHealth("b", entry("n1", "b1", 80, api.HealthWarning, routeTag))
		settle()
		second := wantPublished(t, h, 2)[1]
		if second.Service("a") != first.Service("a") {
			t.Errorf("unchanged service a got a new pointer")
		}
		if second.Service("b") == first.Service("b") {
			t.Errorf("changed service b kept its pointer")
		}

		// New index, same content (an idempotent write, or a fresh copy of
		// the same entries): nothing to publish.
		f.bumpHealth("a")
		f.setHealth("b", entry("n1", "b1", 80, api.HealthWarning, routeTag))
		settle()
		wantPublished(t, h, 2)

		f.register("c", entry("n1", "c1", 80, api.HealthPassing, routeTag))
		settle()
		third := wantPublished(t, h, 3)[2]
		wantSnapshot(t, third, "a:n1/a1[p] b:n1/b1[w] c:n1/c1[p]")
		if third.Service("a") != first.Service("a") || third.Service("b") != second.Service("b") {
			t.Errorf("unchanged services got new pointers when c joined")
		}
		if st := h.w.Status(); st.Services != 3 || st.Instances != 3 || st.Index != third.Index {
			t.Errorf("status %+v, want 3 services, 3 instances, index %d", st, third.Index)
		}
	})
}

func TestWatcherFirstPublishWaitsForEveryService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		f.register("b", entry("n1", "b1", 80, api.HealthPassing, routeTag))
		f.setFailing("health/b", errDown)
		h := startWatcher(t, f)
		defer h.stop()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if len(f.callsOf("health/a")) == 0 {
			t.Fatalf("a was never queried")
		}
		wantPublished(t, h, 0) // a alone would be partial routes
		if st := h.w.Status(); st.Ready {
			t.Errorf("ready with b unanswered: %+v", st)
		}

		f.setFailing("health/b", nil)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		snaps := wantPublished(t, h, 1)
		wantSnapshot(t, snaps[0], "a:n1/a1[p] b:n1/b1[p]")
		if st := h.w.Status(); !st.Ready || st.Services != 2 || st.Instances != 2 {
			t.Errorf("status %+v", st)
		}

		// Once ready, a new service joins when it first answers; until then
		// the others are published without it.
		f.setFailing("health/c", errDown)
		f.register("c", entry("n1", "c1", 80, api.HealthPassing, routeTag))
		f.setHealth("a", entry("n1", "a1", 80, api.HealthWarning, routeTag))
		settle()
		snaps = wantPublished(t, h, 2)
		wantSnapshot(t, snaps[1], "a:n1/a1[w] b:n1/b1[p]")
		f.setFailing("health/c", nil)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		snaps = wantPublished(t, h, 3)
		wantSnapshot(t, snaps[2], "a:n1/a1[w] b:n1/b1[p] c:n1/c1[p]")
	})
}

func TestWatcherPublishesEmptyCatalog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("internal", entry("n1", "i1", 80, api.HealthPassing, "no-route-here"))
		h := startWatcher(t, f)
		defer h.stop()
		settle()
		snaps := wantPublished(t, h, 1)
		if len(snaps[0].Services) != 0 {
			t.Fatalf("services %v", describe(snaps[0]))
		}
		if st := h.w.Status(); !st.Ready {
			t.Errorf("an empty but complete catalog is ready: %+v", st)
		}
		if n := len(f.callsOf("health/internal")); n != 0 {
			t.Errorf("a service without a route tag was watched")
		}
	})
}

func TestWatcherFailStatic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		f.register("b", entry("n1", "b1", 80, api.HealthPassing, routeTag), entry("n2", "b2", 80, api.HealthPassing))
		h := startWatcher(t, f)
		defer h.stop()
		settle()
		wantPublished(t, h, 1)
		before := h.w.Status()

		f.setDown(errDown)
		time.Sleep(time.Minute)
		synctest.Wait()
		wantPublished(t, h, 1)
		st := h.w.Status()
		if !st.Ready || st.LastError != errDown.Error() || !st.LastContact.Equal(before.LastContact) ||
			st.Services != 2 || st.Instances != 3 {
			t.Errorf("status while Consul is down: %+v (before: %+v)", st, before)
		}

		// While down, b was deregistered: real data, so once Consul answers
		// again it goes.
		// (Depending on which watch retries first, b may show up empty
		// before the catalog drops it: that too is real data.)
		f.deregister("b")
		f.setDown(nil)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		snaps := h.published()
		wantSnapshot(t, snaps[len(snaps)-1], "a:n1/a1[p]")
		if snaps[len(snaps)-1].Service("a") != snaps[0].Service("a") {
			t.Errorf("a changed pointer across the outage")
		}
		if st := h.w.Status(); st.LastError != "" || !st.LastContact.After(before.LastContact) {
			t.Errorf("status after the outage: %+v", st)
		}
		for _, s := range snaps {
			if s.Service("a") == nil {
				t.Errorf("a snapshot without a was published: %s", describe(s))
			}
		}
	})
}

// After a failure the index of before means nothing: the Consul that answers
// next may be another one, whose index can even be the same by chance.
func TestWatcherRereadsAfterError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		f.register("b", entry("n1", "b1", 80, api.HealthPassing, routeTag))
		h := startWatcher(t, f)
		defer h.stop()
		settle()
		wantPublished(t, h, 1)
		calls := f.callsOf("catalog")
		index := calls[len(calls)-1].WaitIndex

		f.setDown(errDown)
		settle()
		// The rebuilt Consul: b is gone, at the very index we had.
		f.script("catalog", reply{index: index, catalog: map[string][]string{"a": {routeTag}}})
		f.setDown(nil)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		wantSnapshot(t, h.last(), "a:n1/a1[p]")
		for _, c := range f.callsOf("catalog")[len(calls):] {
			if c.WaitIndex != 0 && c.At.Before(h.last().Built) {
				t.Errorf("a query after the failure blocked on index %d", c.WaitIndex)
			}
		}
	})
}

func TestWatcherKeepsInstancesOfFailingService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		f.register("b", entry("n1", "b1", 80, api.HealthPassing, routeTag))
		h := startWatcher(t, f)
		defer h.stop()
		settle()
		first := wantPublished(t, h, 1)[0]

		f.setFailing("health/a", errDown)
		f.setHealth("a") // a really lost its instance, but we cannot know
		f.setHealth("b", entry("n1", "b1", 80, api.HealthWarning, routeTag))
		f.register("c", entry("n1", "c1", 80, api.HealthPassing, routeTag))
		time.Sleep(30 * time.Second)
		synctest.Wait()
		last := h.last()
		wantSnapshot(t, last, "a:n1/a1[p] b:n1/b1[w] c:n1/c1[p]")
		if last.Service("a") != first.Service("a") {
			t.Errorf("a's last instances were replaced")
		}
		if st := h.w.Status(); st.LastError == "" {
			t.Errorf("a's failure is not in the status: %+v", st)
		}

		f.setFailing("health/a", nil)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		wantSnapshot(t, h.last(), "a: b:n1/b1[w] c:n1/c1[p]")
	})
}

func TestWatcherStopsWatchOfRemovedService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		f.register("b", entry("n1", "b1", 80, api.HealthPassing, routeTag))
		h := startWatcher(t, f)
		defer h.stop()
		settle()
		if f.inFlight("health/b") != 1 {
			t.Fatalf("b is not being watched")
		}

		// b stops opting in (its health does not change, so its query is
		// still blocked): the query is cancelled and not sent again.
		f.setCatalogTags("b", "no-route-here")
		settle()
		wantSnapshot(t, h.last(), "a:n1/a1[p]")
		calls := f.callsOf("health/b")
		if f.inFlight("health/b") != 0 || !calls[len(calls)-1].Cancelled {
			t.Fatalf("b's watch was not stopped: in flight %d, calls %+v", f.inFlight("health/b"), calls)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if n := len(f.callsOf("health/b")); n != len(calls) {
			t.Fatalf("b queried %d more times after its watch stopped", n-len(calls))
		}

		// a leaves the catalog.
		f.deregister("a")
		settle()
		if len(h.last().Services) != 0 || f.inFlight("health/a") != 0 {
			t.Fatalf("a still there: %s, in flight %d", describe(h.last()), f.inFlight("health/a"))
		}

		// b opts in again: a new watch.
		f.setCatalogTags("b", routeTag)
		settle()
		wantSnapshot(t, h.last(), "b:n1/b1[p]")
		if f.inFlight("health/b") != 1 {
			t.Fatalf("b is not watched again")
		}
	})
}

func TestWatcherRunReturnsWhileConsulIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.register("a", entry("n1", "a1", 80, api.HealthPassing, routeTag))
		h := startWatcher(t, f)
		settle()
		f.setDown(errDown)
		time.Sleep(5 * time.Second) // in backoff now
		start := time.Now()
		h.stop()
		if d := time.Since(start); d != 0 {
			t.Errorf("Run took %v of fake time to return: a wait ignored cancellation", d)
		}
	})
}

func TestWatcherRunMisuse(t *testing.T) {
	if err := NewWatcher(Config{}).Run(context.Background()); err == nil {
		t.Errorf("Run without Consul: no error")
	}
	synctest.Test(t, func(t *testing.T) {
		h := startWatcher(t, newFakeConsul())
		defer h.stop()
		synctest.Wait()
		if err := h.w.Run(context.Background()); err == nil {
			t.Errorf("second Run: no error")
		}
	})
}
