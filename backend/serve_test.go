package backend

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// serveFake runs Serve with a scripted agent and the given drain, on a
// loopback listener. It returns the base URL and Serve's result channel.
func serveFake(t *testing.T, f *fakeAgent, drain time.Duration, handler http.Handler) (*Registrar, string, context.CancelFunc, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, _ := testLogger(t)
	port := ln.Addr().(*net.TCPAddr).Port
	r, err := newRegistrar(f, "", Registration{Service: "web", Port: port, Address: "127.0.0.1", Routes: []string{"/"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	finished := make(chan struct{})
	srv := &http.Server{Handler: handler}
	go func() {
		result <- Serve(ctx, srv, ln, r, ServeOptions{Drain: drain, ShutdownTimeout: 5 * time.Second})
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return r, "http://" + ln.Addr().String(), cancel, result
}

// The stop sequence: deregister, answer during the drain (closing
// connections), then shut down letting a slow in-flight request finish.
func TestServeStopSequence(t *testing.T) {
	f := newFakeAgent()
	release := make(chan struct{})
	var slowStarted atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hi") })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		slowStarted.Store(true)
		<-release
		_, _ = io.WriteString(w, "slow")
	})
	r, url, cancel, done := serveFake(t, f, 500*time.Millisecond, mux)
	consultest.Eventually(t, 5*time.Second, "registered", func() error {
		if !f.has(r.ID()) {
			return errors.New("not yet")
		}
		return nil
	})

	// A slow request is in flight when the stop begins.
	slow := make(chan error, 1)
	go func() {
		resp, err := http.Get(url + "/slow")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "slow" {
				err = errors.New("slow request answered " + strconv.Quote(string(b)))
			}
		}
		slow <- err
	}()
	consultest.Eventually(t, 5*time.Second, "slow request started", func() error {
		if !slowStarted.Load() {
			return errors.New("not yet")
		}
		return nil
	})

	stopAt := time.Now()
	cancel()
	consultest.Eventually(t, 5*time.Second, "deregistered", func() error {
		if f.has(r.ID()) {
			return errors.New("still registered")
		}
		return nil
	})
	deregAt := f.callTimes("deregister")[0]

	// Draining: still answering, with Connection: close.
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatalf("request during the drain: %v", err)
	}
	resp.Body.Close()
	if !resp.Close {
		t.Error("response during the drain does not close the connection")
	}
	if time.Since(deregAt) >= 500*time.Millisecond {
		t.Fatalf("test too slow to observe the drain")
	}

	// Shutdown waits for the slow request.
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	case <-time.After(700 * time.Millisecond):
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("in-flight request: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if took := time.Since(stopAt); took < 500*time.Millisecond {
		t.Errorf("stopped after %v, before the 500ms drain", took)
	}
	if _, err := http.Get(url + "/"); err == nil {
		t.Error("still answering after Serve returned")
	}
}

// Never registered (agent down throughout): no drain, no wait for the agent.
func TestServeStopsAtOnceWhenNeverRegistered(t *testing.T) {
	f := newFakeAgent()
	f.setDown(true)
	_, _, cancel, done := serveFake(t, f, time.Hour, http.NotFoundHandler())
	consultest.Eventually(t, 5*time.Second, "a registration attempt", func() error {
		if len(f.callTimes("register")) == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stop took %v", d)
	}
}

// A server that fails on its own still leaves the pool, and Serve says why.
func TestServeReportsServerFailure(t *testing.T) {
	f := newFakeAgent()
	ln := failingListener{mustListen(t)}
	log, _ := testLogger(t)
	r, err := newRegistrar(f, "", Registration{Service: "web", Port: 8080, Address: "127.0.0.1"}, log)
	if err != nil {
		t.Fatal(err)
	}
	err = Serve(context.Background(), &http.Server{}, ln, r, ServeOptions{Drain: time.Hour})
	if err == nil || !errors.Is(err, errAcceptBroken) {
		t.Fatalf("Serve = %v, want the accept error", err)
	}
	if f.has(r.ID()) {
		t.Error("still registered after the server failed")
	}
}

var errAcceptBroken = errors.New("accept broken")

// failingListener's Accept fails at once, as a broken listener would.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) { return nil, errAcceptBroken }

func mustListen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
