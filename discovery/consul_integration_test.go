package discovery

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/discovery/consultest"
	"github.com/hopgate/hopgate/discovery/routetag"
)

// recorder collects what a Watcher publishes from a real Consul.
type recorder struct {
	mu    sync.Mutex
	snaps []*Snapshot
	logs  bytes.Buffer
}

func (r *recorder) publish(s *Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, s)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.Write(p)
}

func (r *recorder) all() []*Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Snapshot(nil), r.snaps...)
}

func (r *recorder) last() *Snapshot {
	s := r.all()
	if len(s) == 0 {
		return nil
	}
	return s[len(s)-1]
}

func (r *recorder) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.String()
}

// byID renders a snapshot as "svc=id[h],id[h] svc=...": the node name is
// the agent's, which changes with its ports.
func byID(s *Snapshot) string {
	if s == nil {
		return "<nothing published>"
	}
	var parts []string
	for _, svc := range s.Services {
		var ids []string
		for _, i := range svc.Instances {
			ids = append(ids, fmt.Sprintf("%s[%c]", i.ID, i.Health[0]))
		}
		parts = append(parts, svc.Name+"="+strings.Join(ids, ","))
	}
	return strings.Join(parts, " ")
}

func lastIs(r *recorder, want string) func() error {
	return func() error {
		if got := byID(r.last()); got != want {
			return fmt.Errorf("last snapshot %q, want %q", got, want)
		}
		return nil
	}
}

type testAgent struct {
	t *testing.T
	c *api.Client
}

// register adds an instance with a passing TTL check "ttl-<id>", which the
// test moves with pass/warn/fail.
func (a testAgent) register(id, service string, port int, weights *api.AgentWeights, tags ...string) {
	a.t.Helper()
	err := a.c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: service, Port: port, Tags: tags, Weights: weights,
		Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: api.HealthPassing},
	})
	if err != nil {
		a.t.Fatalf("register %s: %v", id, err)
	}
}

func (a testAgent) deregister(id string) {
	a.t.Helper()
	if err := a.c.Agent().ServiceDeregister(id); err != nil {
		a.t.Fatalf("deregister %s: %v", id, err)
	}
}

func (a testAgent) ttl(id, status string) {
	a.t.Helper()
	if err := a.c.Agent().UpdateTTL("ttl-"+id, "set by the test", status); err != nil {
		a.t.Fatalf("ttl %s %s: %v", id, status, err)
	}
}

// healthy waits until the catalog and health endpoints show n passing
// instances of service, so a watcher started afterwards sees them at once.
func (a testAgent) healthy(service string, n int) {
	a.t.Helper()
	consultest.Eventually(a.t, 10*time.Second, service+" registered", func() error {
		entries, _, err := a.c.Health().Service(service, "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != n {
			return fmt.Errorf("%d passing instances, want %d", len(entries), n)
		}
		return nil
	})
}

func startRealWatcher(t *testing.T, c *api.Client, rec *recorder) *Watcher {
	t.Helper()
	w := NewWatcher(Config{
		Consul:     NewConsul(c),
		Logger:     hclog.New(&hclog.LoggerOptions{Output: rec, Level: hclog.Debug}),
		Publish:    rec.publish,
		MaxBackoff: 500 * time.Millisecond, // recover quickly after the restart
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancellation")
		}
		if t.Failed() {
			t.Logf("watcher log:\n%s", rec.log())
		}
	})
	return w
}

// TestWatcherWithConsul drives a real Consul agent through the life of a
// deployment: opt-in, health changes, scale-out, removal, an outage, and a
// rebuilt agent.
func TestWatcherWithConsul(t *testing.T) {
	agent := consultest.Start(t)
	a := testAgent{t, agent.Client()}
	route := routetag.Prefix + "/"
	a.register("web-1", "web", 9001, &api.AgentWeights{Passing: 3, Warning: 1}, route)
	a.register("web-2", "web", 9002, &api.AgentWeights{Passing: 3, Warning: 1}, route)
	a.register("api-1", "api", 9101, nil, routetag.Prefix+"/api strip=/api")
	a.register("api-2", "api", 9102, nil) // no route tag of its own: still an instance
	a.register("internal-1", "internal", 9201, nil, "private")
	a.healthy("web", 2)
	a.healthy("api", 2)
	a.healthy("internal", 1)

	rec := &recorder{}
	w := startRealWatcher(t, agent.Client(), rec)

	// Only opted-in services, and the first snapshot is already complete.
	consultest.Eventually(t, 10*time.Second, "ready", func() error {
		if !w.Status().Ready {
			return fmt.Errorf("not ready: %+v", w.Status())
		}
		return nil
	})
	first := rec.all()[0]
	if got, want := byID(first), "api=api-1[p],api-2[p] web=web-1[p],web-2[p]"; got != want {
		t.Fatalf("first snapshot %q, want %q", got, want)
	}
	web1 := first.Service("web").Instances[0]
	if web1.Address != "127.0.0.1" || web1.Port != 9001 || web1.Weight != 3 ||
		web1.HostPort() != "127.0.0.1:9001" || len(web1.Tags) != 1 || web1.Tags[0] != route {
		t.Errorf("web-1: %+v", web1)
	}
	if st := w.Status(); st.Services != 2 || st.Instances != 4 || st.Index != first.Index || st.LastError != "" {
		t.Errorf("status %+v", st)
	}

	// A failing check removes the instance; a warning keeps it with the
	// warning weight.
	a.ttl("web-1", api.HealthCritical)
	consultest.Eventually(t, 10*time.Second, "web-1 gone", lastIs(rec, "api=api-1[p],api-2[p] web=web-2[p]"))
	a.ttl("web-2", api.HealthWarning)
	consultest.Eventually(t, 10*time.Second, "web-2 warning", lastIs(rec, "api=api-1[p],api-2[p] web=web-2[w]"))
	if wt := rec.last().Service("web").Instances[0].Weight; wt != 1 {
		t.Errorf("web-2 in warning has weight %d, want 1", wt)
	}

	// A new instance appears; the unchanged service keeps its pointer.
	before := rec.last()
	a.register("web-3", "web", 9003, nil, route)
	consultest.Eventually(t, 10*time.Second, "web-3 added", lastIs(rec, "api=api-1[p],api-2[p] web=web-2[w],web-3[p]"))
	if rec.last().Service("api") != before.Service("api") {
		t.Errorf("api was unchanged but got a new *Service")
	}

	// Deregistering every instance removes the service.
	a.deregister("api-1")
	a.deregister("api-2")
	consultest.Eventually(t, 10*time.Second, "api removed", lastIs(rec, "web=web-2[w],web-3[p]"))

	// The agent goes away: nothing is published, the last snapshot stays in
	// force, the status tells.
	published := len(rec.all())
	kept := rec.last()
	agent.Stop()
	stoppedAt := time.Now()
	consultest.Eventually(t, 10*time.Second, "failures noticed", func() error {
		if n := strings.Count(rec.log(), "consul query failed"); n < 6 {
			return fmt.Errorf("%d failed queries so far", n)
		}
		return nil
	})
	if n := len(rec.all()); n != published {
		t.Fatalf("published %d snapshots while Consul was down; last %q", n-published, byID(rec.last()))
	}
	st := w.Status()
	if !st.Ready || st.LastError == "" || st.LastContact.After(stoppedAt) || st.Services != len(kept.Services) {
		t.Errorf("status while Consul is down: %+v (stopped at %v)", st, stoppedAt)
	}

	// A rebuilt agent knows nothing: that is real data, so the services go;
	// once they register again, updates resume.
	agent.Restart()
	consultest.Eventually(t, 15*time.Second, "empty catalog after restart", lastIs(rec, ""))
	for _, s := range rec.all()[:len(rec.all())-1] {
		if len(s.Services) == 0 {
			t.Errorf("an empty snapshot was published before Consul answered again")
		}
	}
	a.register("web-1", "web", 9001, nil, route)
	consultest.Eventually(t, 10*time.Second, "web-1 back", lastIs(rec, "web=web-1[p]"))
	if st := w.Status(); st.LastError != "" || !st.LastContact.After(stoppedAt) {
		t.Errorf("status after the restart: %+v", st)
	}
}

// TestWatcherExplainsConsulConnectionLimit runs more watches than a real
// agent lets one address hold: the refusals are explained once, with the
// remedy, instead of a warning per watch per retry.
func TestWatcherExplainsConsulConnectionLimit(t *testing.T) {
	agent := consultest.StartWith(t, consultest.Options{HCL: `limits { http_max_conns_per_client = 12 }`})
	a := testAgent{t, agent.Client()}
	const services = 16
	for i := range services {
		a.register(fmt.Sprintf("s%d-1", i), fmt.Sprintf("s%d", i), 9000+i, nil, routetag.Prefix+fmt.Sprintf("/s%d", i))
	}
	rec := &recorder{}
	w := startRealWatcher(t, agent.Client(), rec)

	const explained = "consul refuses connections over its per-client limit"
	consultest.Eventually(t, 20*time.Second, "the limit explained", func() error {
		if !strings.Contains(rec.log(), explained) {
			return fmt.Errorf("not yet; status %+v", w.Status())
		}
		return nil
	})
	// Retries go on (every 500 ms here) but say nothing more.
	consultest.Eventually(t, 20*time.Second, "refusals retried", func() error {
		if n := w.Status().Errors; n < 3*services {
			return fmt.Errorf("%d failed queries so far", n)
		}
		return nil
	})
	logs := rec.log()
	if n := strings.Count(logs, explained); n != 1 {
		t.Errorf("the limit was explained %d times, want once a minute", n)
	}
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "consul query failed") && strings.Contains(line, "response code: 429") {
			t.Fatalf("refusals over the limit were also logged one by one: %s", line)
		}
	}
	// Over its limit the agent also drops connections, so the last error
	// may be one of those rather than a 429.
	if st := w.Status(); st.Ready || st.LastError == "" {
		t.Errorf("status %+v: want not ready, with a last error", st)
	}
}
