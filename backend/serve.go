package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// ServeOptions tune the shutdown sequence of Serve. They are named fields
// rather than positional durations so that drain and timeout cannot be
// swapped by accident.
type ServeOptions struct {
	// Drain is how long the server keeps answering after the instance has
	// been deregistered, so that every gateway sees the change and stops
	// sending before the listener closes. Zero means no drain. It is skipped
	// when the instance was never registered.
	Drain time.Duration
	// ShutdownTimeout bounds http.Server.Shutdown, which lets in-flight
	// requests finish (default 10s). Requests still running after it are cut
	// (srv.Close) and Serve returns an error.
	ShutdownTimeout time.Duration
	// DeregisterTimeout bounds the deregistration, retries included
	// (default 5s). A failed deregistration is logged, not returned: the
	// agent's check then turns critical once the server is gone, and the
	// agent reaps the instance after DeregisterCriticalAfter.
	DeregisterTimeout time.Duration
}

// Serve runs srv on ln and keeps r registered while it serves. When ctx is
// done (wire SIGTERM and SIGINT to it with signal.NotifyContext) it stops in
// the order that fails no request routed by a gateway:
//
//  1. deregister r, so gateways drop the instance;
//  2. keep serving for opts.Drain while they converge; responses in this
//     window carry "Connection: close", so no gateway keeps an idle
//     keep-alive connection that the shutdown would close under it;
//  3. srv.Shutdown: stop accepting, let in-flight requests finish (bounded
//     by opts.ShutdownTimeout).
//
// The same sequence runs if the server fails on its own; Serve then returns
// that failure. It returns nil after a clean stop. Serve wraps srv.Handler
// (for step 2) and starts r.Run itself: do not run r elsewhere.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, r *Registrar, opts ServeOptions) error {
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if opts.DeregisterTimeout <= 0 {
		opts.DeregisterTimeout = 5 * time.Second
	}
	log := r.log

	var draining atomic.Bool
	next := srv.Handler
	if next == nil {
		next = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if draining.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, req)
	})

	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(runCtx) }()

	var failure error
	served := false
	select {
	case <-ctx.Done():
		log.Info("stopping", "id", r.ID(), "cause", context.Cause(ctx))
	case err := <-serveDone:
		served = true
		if errors.Is(err, http.ErrServerClosed) {
			log.Info("http server closed; stopping", "id", r.ID())
		} else {
			failure = fmt.Errorf("http server: %w", err)
			log.Error("http server failed; stopping", "error", err)
		}
	case err := <-runDone:
		runDone <- err // put it back for the wait below
		if err != nil {
			failure = err
			log.Error("registrar failed; stopping", "error", err)
		}
	}

	// 1. Leave the pool. Run must have returned first: it would otherwise
	// take the vanished registration for an agent restart.
	stopRun()
	if err := <-runDone; err != nil && failure == nil {
		failure = err
	}
	dctx, cancel := context.WithTimeout(context.Background(), opts.DeregisterTimeout)
	if err := r.Deregister(dctx); err != nil {
		log.Error("deregistration failed; the agent will reap the instance once its check fails", "error", err)
	}
	cancel()

	// 2. Drain.
	if !served && opts.Drain > 0 && r.registered.Load() {
		draining.Store(true)
		log.Info("draining before shutdown", "drain", opts.Drain)
		t := time.NewTimer(opts.Drain)
		select {
		case <-t.C:
		case err := <-serveDone:
			served = true
			failure = errors.Join(failure, fmt.Errorf("http server: %w", err))
		}
		t.Stop()
	}

	// 3. Shut down.
	sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		failure = errors.Join(failure, fmt.Errorf("shutdown: requests still running after %v were cut: %w", opts.ShutdownTimeout, err))
	}
	if !served {
		if err := <-serveDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
			failure = errors.Join(failure, fmt.Errorf("http server: %w", err))
		}
	}
	if failure == nil {
		log.Info("stopped cleanly", "id", r.ID())
	}
	return failure
}
