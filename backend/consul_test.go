package backend

// Integration tests against real Consul dev agents (discovery/consultest).
// They run in parallel: the reaping test alone waits about 90s for the
// agent's reaper, and the others fit in that time.

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// healthServer serves /healthz on a loopback port, answering 200 while
// healthy and 503 otherwise.
func healthServer(t *testing.T) (port int, healthy *atomic.Bool) {
	t.Helper()
	healthy = &atomic.Bool{}
	healthy.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port, healthy
}

// catalogInstance returns the catalog entry of service id, or an error if
// the catalog does not have it.
func catalogInstance(c *api.Client, service, id string) (*api.CatalogService, error) {
	entries, _, err := c.Catalog().Service(service, "", nil)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.ServiceID == id {
			return e, nil
		}
	}
	return nil, fmt.Errorf("%s not in the catalog (%d other instances)", id, len(entries))
}

func checkStatus(c *api.Client, service, id string) (*api.HealthCheck, error) {
	checks, _, err := c.Health().Checks(service, nil)
	if err != nil {
		return nil, err
	}
	for _, hc := range checks {
		if hc.ServiceID == id {
			return hc, nil
		}
	}
	return nil, fmt.Errorf("no check for %s", id)
}

func wantStatus(c *api.Client, service, id, status string) func() error {
	return func() error {
		hc, err := checkStatus(c, service, id)
		if err != nil {
			return err
		}
		if hc.Status != status {
			return fmt.Errorf("check is %s (%s)", hc.Status, hc.Output)
		}
		return nil
	}
}

func inCatalog(c *api.Client, service, id string) func() error {
	return func() error {
		_, err := catalogInstance(c, service, id)
		return err
	}
}

func notInCatalog(c *api.Client, service, id string) func() error {
	return func() error {
		if _, err := catalogInstance(c, service, id); err == nil {
			return errors.New("still in the catalog")
		}
		return nil
	}
}

func TestConsulRegisterCheckDeregister(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	c := a.Client()
	port, healthy := healthServer(t)
	log, _ := testLogger(t)
	r, err := NewRegistrar(a.Config(), Registration{
		Service:       "web",
		Port:          port,
		Routes:        []string{"/", "api.example.com/v1 strip=/v1"},
		Tags:          []string{"blue"},
		Meta:          map[string]string{"team": "edge"},
		CheckInterval: time.Second, // Consul's minimum
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	stop := startRun(t, r)

	consultest.Eventually(t, 10*time.Second, "instance in the catalog", inCatalog(c, "web", r.ID()))
	e, _ := catalogInstance(c, "web", r.ID())
	if e.ServiceAddress != "127.0.0.1" || e.ServicePort != port {
		t.Errorf("registered %s:%d, want 127.0.0.1:%d (detected toward the loopback agent)", e.ServiceAddress, e.ServicePort, port)
	}
	if want := []string{"gateway.route=/", "gateway.route=api.example.com/v1 strip=/v1", "blue"}; !slices.Equal(e.ServiceTags, want) {
		t.Errorf("tags = %q, want %q", e.ServiceTags, want)
	}
	if !maps.Equal(e.ServiceMeta, r.Meta()) || e.ServiceMeta["team"] != "edge" || e.ServiceMeta[MetaVersion] == "" || e.ServiceMeta[MetaHost] == "" {
		t.Errorf("meta = %v, want %v", e.ServiceMeta, r.Meta())
	}
	if r.Address() != "127.0.0.1" {
		t.Errorf("Address() = %q", r.Address())
	}

	consultest.Eventually(t, 10*time.Second, "check passing", wantStatus(c, "web", r.ID(), api.HealthPassing))
	hc, _ := checkStatus(c, "web", r.ID())
	// Consul 1.14 returns no check definition; the output names the URL.
	if want := fmt.Sprintf("HTTP GET http://127.0.0.1:%d/healthz: 200 OK", port); hc.Type != "http" || !strings.Contains(hc.Output, want) {
		t.Errorf("check type %q, output %q; want an http check with output %q", hc.Type, hc.Output, want)
	}

	healthy.Store(false)
	consultest.Eventually(t, 10*time.Second, "check critical", wantStatus(c, "web", r.ID(), api.HealthCritical))

	if err := r.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	consultest.Eventually(t, 5*time.Second, "instance gone from the catalog", notInCatalog(c, "web", r.ID()))
	if svcs, err := c.Agent().Services(); err != nil || len(svcs) != 0 {
		t.Errorf("agent services after Deregister: %v, %v", svcs, err)
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// A backend that died without deregistering: its check goes critical and the
// agent reaps it after DeregisterCriticalAfter, raised to Consul's one
// minute minimum. The reaper runs every 30s from the agent's start, so this
// takes about 90s whatever the setting.
func TestConsulReapsCriticalInstance(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	c := a.Client()
	port, healthy := healthServer(t)
	healthy.Store(false)
	log, _ := testLogger(t)
	r, err := NewRegistrar(a.Config(), Registration{
		Service:                 "crashy",
		Port:                    port,
		Routes:                  []string{"/"},
		CheckInterval:           time.Second,
		DeregisterCriticalAfter: time.Second, // asked; Consul raises it to 1m
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	stop := startRun(t, r)
	consultest.Eventually(t, 10*time.Second, "check critical", wantStatus(c, "crashy", r.ID(), api.HealthCritical))
	criticalSince := time.Now()
	_ = stop() // the process "dies": no more re-registration, no deregistration

	if !strings.Contains(a.Output(), "check has deregister interval below minimum") {
		t.Errorf("agent did not report raising the 1s deregister interval to its minimum:\n%s", a.Output())
	}
	consultest.Eventually(t, 100*time.Second, "critical instance reaped", notInCatalog(c, "crashy", r.ID()))
	reapedAfter := time.Since(criticalSince)
	t.Logf("reaped %v after turning critical (asked for 1s)", reapedAfter.Round(100*time.Millisecond))
	if reapedAfter < 55*time.Second {
		t.Errorf("reaped after %v: Consul 1.14 should not honour less than 1m", reapedAfter)
	}
}

func TestConsulKeepsTheRegistrationAlive(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	c := a.Client()
	port, _ := healthServer(t)
	log, logs := testLogger(t)
	r, err := NewRegistrar(a.Config(), Registration{Service: "web", Port: port, Routes: []string{"/"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, r)
	consultest.Eventually(t, 10*time.Second, "instance in the catalog", inCatalog(c, "web", r.ID()))

	// Someone deregisters it.
	if err := c.Agent().ServiceDeregister(r.ID()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	consultest.Eventually(t, 3*time.Second, "registered again after an outside deregistration", inCatalog(c, "web", r.ID()))
	t.Logf("registered again %v after an outside deregistration", time.Since(start).Round(time.Millisecond))

	// The agent restarts without state (a fresh dev agent on the same ports).
	a.Restart()
	start = time.Now()
	consultest.Eventually(t, 5*time.Second, "registered again after an agent restart", inCatalog(c, "web", r.ID()))
	t.Logf("registered again %v after the restarted agent was ready", time.Since(start).Round(time.Millisecond))
	e, _ := catalogInstance(c, "web", r.ID())
	if e.ServiceAddress != "127.0.0.1" || e.ServicePort != port || !slices.Equal(e.ServiceTags, []string{"gateway.route=/"}) {
		t.Errorf("after the restart: %s:%d %q", e.ServiceAddress, e.ServicePort, e.ServiceTags)
	}
	consultest.Eventually(t, 10*time.Second, "check passing after the restart", wantStatus(c, "web", r.ID(), api.HealthPassing))
	if n := strings.Count(logs.String(), "registration vanished"); n < 2 {
		t.Errorf("logged %d vanished registrations, want 2:\n%s", n, logs)
	}
}

func TestConsulRegistersOnceTheAgentIsUp(t *testing.T) {
	t.Parallel()
	// The health server first: listening after the agent stops, it could
	// be given one of the ports the agent is to take again.
	port, _ := healthServer(t)
	a := consultest.Start(t)
	a.Stop() // keep its ports, start it later
	log, logs := testLogger(t)
	r, err := NewRegistrar(a.Config(), Registration{Service: "web", Port: port, Routes: []string{"/"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, r)
	consultest.Eventually(t, 10*time.Second, "failed attempts logged", func() error {
		if n := strings.Count(logs.String(), "registration failed; retrying"); n < 3 {
			return fmt.Errorf("%d failed attempts logged", n)
		}
		return nil
	})

	a.Restart()
	start := time.Now()
	consultest.Eventually(t, 2*retryMax+time.Second, "registered once the agent is up", inCatalog(a.Client(), "web", r.ID()))
	t.Logf("registered %v after the agent was ready", time.Since(start).Round(time.Millisecond))
}
