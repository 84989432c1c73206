package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// The resilience scenarios run with `make test` and print their figures
// with -v (`make loadtest`): real Consul, real hellos, the gateway binary
// with its default settings, load over loopback, bounded in time.

func TestResilienceRollingRestartLosesNothing(t *testing.T) {
	s := newStack(t, false)
	s.startGateway()
	ids := []string{s.startHello(), s.startHello(), s.startHello()}
	s.waitInstances(30*time.Second, ids...)

	l := s.startLoad(4)
	defer l.stop()
	l.waitAnswers(t, 200)
	for i, old := range ids {
		// A deploy replaces each instance: the new one first, then the old
		// one stops with SIGTERM (deregister, drain, shut down).
		ids[i] = s.startHello()
		s.waitInstances(30*time.Second, append([]string{old}, ids...)...)
		s.hellos[old].signal(syscall.SIGTERM)
		if code := s.hellos[old].wait(20 * time.Second); code != 0 {
			t.Errorf("%s exited %d", old, code)
		}
		s.waitInstances(30*time.Second, ids...)
		l.waitAnswers(t, 100)
	}
	l.stop()
	t.Logf("rolling restart of 3 hellos: %d requests, %d failed", l.ok.Load()+l.fail.Load(), l.fail.Load())
	if f := l.fail.Load(); f != 0 {
		t.Errorf("%d requests failed during the rolling restart: %v", f, l.failures)
	}
}

func TestResilienceEjectsInstanceAnswering500(t *testing.T) {
	s := newStack(t, false)
	s.startGateway()
	a, b := s.startHello(), s.startHello()
	bad := s.startHello("-fail-status", "500")
	s.waitInstances(30*time.Second, a, b, bad)

	// The first second: passive health learns.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		_, _, _ = s.get("/")
	}
	counts, total := map[string]int{}, 600
	for range total {
		code, body, err := s.get("/")
		if err != nil {
			t.Fatal(err)
		}
		id := lastWord(body)
		if code == 500 {
			id = bad
		}
		counts[id]++
	}
	share := float64(counts[bad]) / float64(total)
	t.Logf("hello answering 500: %.1f%% of %d requests after the first second (%v)", 100*share, total, counts)
	if share >= 0.05 {
		t.Errorf("the failing hello got %.1f%% of requests after the first second, want under 5%%", 100*share)
	}
}

func TestResilienceLatencyAwareDefaultPolicy(t *testing.T) {
	s := newStack(t, false)
	s.startGateway()
	a, b := s.startHello(), s.startHello()
	slow := s.startHello("-latency", "50ms")
	s.waitInstances(30*time.Second, a, b, slow)

	l := s.startLoad(4)
	l.waitAnswers(t, 2000)
	l.stop()
	total := l.ok.Load()
	share := float64(l.count(slow)) / float64(total)
	t.Logf("hello with 50 ms latency: %.1f%% of %d requests under the default policy", 100*share, total)
	if share >= 0.10 {
		t.Errorf("the slow hello got %.1f%% of requests, want under 10%%", 100*share)
	}
	if f := l.fail.Load(); f != 0 {
		t.Errorf("%d requests failed: %v", f, l.failures)
	}
}

func TestResilienceRetryBudgetWhenEverythingFails(t *testing.T) {
	s := newStack(t, false)
	s.startGateway()
	ids := []string{s.startHello("-fail-status", "503"), s.startHello("-fail-status", "503"), s.startHello("-fail-status", "503")}
	s.waitInstances(30*time.Second, ids...)

	const requests = 300
	for range requests {
		code, _, err := s.get("/")
		if err != nil || code != 503 {
			t.Fatalf("GET / = %d %v, want the hellos' 503", code, err)
		}
	}
	// Count what reached the hellos: each logs one debug line per request.
	attempts := 0
	for _, id := range ids {
		attempts += strings.Count(s.hellos[id].out.String(), "hello: request:")
	}
	retries := attempts - requests
	// Budget: 20% of requests plus 3 per second over a 10 s window.
	limit := requests/5 + 3*10
	t.Logf("all hellos answering 503: %d requests, %d upstream attempts, %d retries (budget allows %d)", requests, attempts, retries, limit)
	if retries > limit {
		t.Errorf("%d retries for %d requests, over the budget of %d", retries, requests, limit)
	}
	if retries == 0 {
		t.Error("no retries at all: the budget was never exercised")
	}
}
