package backend

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/hopgate/hopgate/discovery/consultest"
)

// fakeAgent is a scripted Consul agent: it can be down (connection
// refused), restart without state, and block queries like the real one.
type fakeAgent struct {
	mu       sync.Mutex
	down     bool
	services map[string]*api.AgentServiceRegistration
	version  int
	changed  chan struct{} // closed at every change
	calls    []call
	// gate, when set, holds register calls until it is closed.
	gate chan struct{}
}

type call struct {
	op string // register, register-done, deregister, service
	at time.Time
}

var _ agent = (*fakeAgent)(nil)

func newFakeAgent() *fakeAgent {
	return &fakeAgent{services: map[string]*api.AgentServiceRegistration{}, changed: make(chan struct{})}
}

// errRefused is what a client sees when the agent is not there.
var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

func (f *fakeAgent) bumpLocked() {
	f.version++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeAgent) record(op string) {
	f.calls = append(f.calls, call{op, time.Now()})
}

func (f *fakeAgent) register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	f.mu.Lock()
	f.record("register")
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errRefused
	}
	f.record("register-done")
	f.services[reg.ID] = reg
	f.bumpLocked()
	return nil
}

func (f *fakeAgent) deregister(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("deregister")
	if f.down {
		return errRefused
	}
	delete(f.services, id)
	f.bumpLocked()
	return nil
}

func (f *fakeAgent) service(ctx context.Context, id, hash string, wait time.Duration) (*api.AgentService, string, error) {
	timeout := time.After(wait)
	for {
		f.mu.Lock()
		f.record("service")
		if f.down {
			f.mu.Unlock()
			return nil, "", errRefused
		}
		reg, ok := f.services[id]
		if !ok {
			f.mu.Unlock()
			return nil, "", errNotFound
		}
		h := strconv.Itoa(f.version)
		svc := &api.AgentService{ID: reg.ID, Service: reg.Name, Address: reg.Address, Port: reg.Port}
		changed := f.changed
		f.mu.Unlock()
		if h != hash {
			return svc, h, nil
		}
		select {
		case <-changed:
		case <-timeout:
			return svc, h, nil
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
	}
}

// setDown takes the agent away (down) or brings a fresh one back (state
// lost), waking blocked queries either way.
func (f *fakeAgent) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	f.services = map[string]*api.AgentServiceRegistration{}
	f.bumpLocked()
}

func (f *fakeAgent) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.services[id]
	return ok
}

func (f *fakeAgent) callTimes(op string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, c := range f.calls {
		if c.op == op {
			out = append(out, c.at)
		}
	}
	return out
}

func (f *fakeAgent) ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if c.op != "service" {
			out = append(out, c.op)
		}
	}
	return out
}

// testLogger logs to the test output and to the returned buffer.
func testLogger(t *testing.T) (hclog.Logger, *consultest.Buffer) {
	buf := &consultest.Buffer{}
	return hclog.New(&hclog.LoggerOptions{
		Name:   "registrar",
		Level:  hclog.Debug,
		Output: io.MultiWriter(t.Output(), buf),
	}), buf
}

func newFakeRegistrar(t *testing.T, f *fakeAgent) (*Registrar, *consultest.Buffer) {
	t.Helper()
	log, buf := testLogger(t)
	r, err := newRegistrar(f, "", Registration{Service: "web", Port: 8080, Address: "10.0.0.1", Routes: []string{"/"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	return r, buf
}

// startRun runs r.Run until the returned stop is called (or the test ends)
// and reports Run's result.
func startRun(t *testing.T, r *Registrar) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestRunRetriesWithBackoffUntilTheAgentIsUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent()
		f.setDown(true)
		r, logs := newFakeRegistrar(t, f)
		stop := startRun(t, r)

		time.Sleep(20 * time.Second)
		up := time.Now()
		f.setDown(false)
		synctest.Wait()
		for !f.has(r.ID()) {
			time.Sleep(10 * time.Millisecond)
		}
		if waited := time.Since(up); waited > retryMax {
			t.Errorf("registered %v after the agent came up, want at most the backoff cap %v", waited, retryMax)
		}

		attempts := f.callTimes("register")
		for i := 1; i < len(attempts); i++ {
			gap := attempts[i].Sub(attempts[i-1])
			hi := min(retryMax, retryMin<<(i-1))
			if gap < hi/2 || gap > hi {
				t.Errorf("gap before attempt %d = %v, want in [%v, %v]", i+1, gap, hi/2, hi)
			}
		}
		failed := len(attempts) - 1
		if failed < 8 {
			t.Errorf("%d failed attempts in 20s, want at least 8", failed)
		}
		if n := strings.Count(logs.String(), "registration failed; retrying"); n != failed {
			t.Errorf("logged %d failed attempts, want %d (one per attempt)", n, failed)
		}
		if !strings.Contains(logs.String(), "attempt="+strconv.Itoa(len(attempts))) {
			t.Errorf("success not logged with attempt=%d:\n%s", len(attempts), logs)
		}
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestRunRegistersAgainWhenTheRegistrationVanishes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent()
		r, logs := newFakeRegistrar(t, f)
		startRun(t, r)
		synctest.Wait()
		if !f.has(r.ID()) {
			t.Fatal("not registered")
		}

		// The agent restarts at once without state: the blocking query
		// sees it, and the registration is back without any wait.
		start := time.Now()
		f.setDown(false)
		synctest.Wait()
		if !f.has(r.ID()) || time.Since(start) != 0 {
			t.Fatalf("registered again: %v after %v, want at once", f.has(r.ID()), time.Since(start))
		}
		if !strings.Contains(logs.String(), "registration vanished") {
			t.Errorf("vanishing not logged:\n%s", logs)
		}

		// The agent is away for 10s: the query errors, Run backs off, and
		// registers within the backoff cap of the agent's return.
		f.setDown(true)
		time.Sleep(10 * time.Second)
		back := time.Now()
		f.setDown(false)
		for !f.has(r.ID()) {
			time.Sleep(10 * time.Millisecond)
		}
		if d := time.Since(back); d > retryMax {
			t.Errorf("registered again %v after the agent's return, want at most %v", d, retryMax)
		}
		if !strings.Contains(logs.String(), "watching the registration failed") {
			t.Errorf("query failures not logged:\n%s", logs)
		}

		// A quiet agent costs one query per wait time, no more.
		before := len(f.callTimes("service"))
		time.Sleep(10 * time.Minute)
		if n := len(f.callTimes("service")) - before; n > 21 {
			t.Errorf("%d queries in 10 minutes, want about one per %v", n, r.watchWait)
		}
	})
}

func TestDeregisterStopsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent()
		r, _ := newFakeRegistrar(t, f)
		stop := startRun(t, r)
		synctest.Wait()
		if !f.has(r.ID()) {
			t.Fatal("not registered")
		}
		if err := r.Deregister(context.Background()); err != nil {
			t.Fatal(err)
		}
		if f.has(r.ID()) {
			t.Fatal("still registered after Deregister")
		}
		time.Sleep(time.Minute)
		if got, want := f.ops(), []string{"register", "register-done", "deregister"}; !slices.Equal(got, want) {
			t.Errorf("calls = %q, want %q: nothing may be registered after Deregister", got, want)
		}
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		// Once is enough.
		if err := r.Deregister(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(f.callTimes("deregister")); n != 1 {
			t.Errorf("%d deregister calls, want 1", n)
		}
		// Run after Deregister does nothing.
		if err := r.Run(context.Background()); err != nil {
			t.Errorf("Run after Deregister: %v", err)
		}
		if f.has(r.ID()) {
			t.Error("Run after Deregister registered")
		}
	})
}

func TestDeregisterWithoutRegistration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Never run: the agent is not contacted.
		f := newFakeAgent()
		r, _ := newFakeRegistrar(t, f)
		if err := r.Deregister(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ops := f.ops(); len(ops) != 0 {
			t.Errorf("calls = %q, want none", ops)
		}

		// Run while the agent was down: every attempt was refused, so
		// there is nothing to remove and no reason to wait for the agent.
		f = newFakeAgent()
		f.setDown(true)
		r, _ = newFakeRegistrar(t, f)
		stop := startRun(t, r)
		time.Sleep(5 * time.Second)
		_ = stop()
		if err := r.Deregister(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(f.callTimes("deregister")); n != 0 {
			t.Errorf("%d deregister calls, want none", n)
		}
	})
}

func TestDeregisterRetriesUntilDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent()
		r, _ := newFakeRegistrar(t, f)
		stop := startRun(t, r)
		synctest.Wait()
		_ = stop()
		f.mu.Lock()
		f.down = true // the agent is gone, the registration with it
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		err := r.Deregister(ctx)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("err = %v, want connection refused", err)
		}
		if d := time.Since(start); d != 5*time.Second {
			t.Errorf("gave up after %v, want the 5s deadline", d)
		}
		if n := len(f.callTimes("deregister")); n < 4 {
			t.Errorf("%d deregister attempts in 5s, want retries", n)
		}
	})
}

// A registration in flight when Deregister is called finishes first, so it
// cannot land after the deregistration and resurrect the instance. (No
// synctest here: the Registrar's mutex is not a durable block.)
func TestDeregisterWaitsForRegistrationInFlight(t *testing.T) {
	f := newFakeAgent()
	f.gate = make(chan struct{})
	r, _ := newFakeRegistrar(t, f)
	startRun(t, r)
	deadline := time.Now().Add(10 * time.Second)
	for len(f.callTimes("register")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no register call")
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- r.Deregister(context.Background()) }()
	// Give Deregister a chance to overtake (it must not), then let the
	// registration finish.
	time.Sleep(50 * time.Millisecond)
	close(f.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := f.ops(), []string{"register", "register-done", "deregister"}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if f.has(r.ID()) {
		t.Error("registered after Deregister")
	}
}

func TestRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeAgent()
		r, _ := newFakeRegistrar(t, f)
		stop := startRun(t, r)
		synctest.Wait()
		if err := r.Run(context.Background()); err == nil {
			t.Error("second concurrent Run: no error")
		}
		_ = stop()
	})
}
