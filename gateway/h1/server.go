// Package h1 serves HTTP/1.x on plain TCP connections: the gateway's
// public listener when neither TLS nor h2c is on.
//
// Go's http.Server gives every request a background reader goroutine, so
// that a client leaving cancels the request's context; on a proxy's hot
// path that goroutine, its system calls and its hand-offs cost more than
// reading and writing the request itself. This server keeps one goroutine
// per connection and starts such a watch only for a request still running
// after watchDelay, when a client leaving is worth noticing. Heads of the
// common shape are parsed here (simple.go), any other by net/http
// (http.ReadRequest); what the server checks around parsing follows Go's
// server: Host and header validity, Expect: 100-continue,
// request bodies left unread, Content-Length or chunked framing of the
// answer, 1xx answers, trailers, hijacking for upgrades, keep-alive and
// graceful shutdown.
package h1

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Server is an HTTP/1.x server. Set its fields before Serve.
type Server struct {
	Handler http.Handler
	// HeaderTimeout bounds the arrival of a request head: from the
	// connection's start for its first request, from a request's first
	// byte for the next ones.
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request for this
	// long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head (431 over it); with Go's 4 KiB
	// of slack for the request line, as in http.Server.
	MaxHeaderBytes int
	// Logger gets what goes wrong beneath the handler: panics, accept
	// errors. Silent when nil.
	Logger hclog.Logger

	mu          sync.Mutex
	listeners   map[net.Listener]struct{}
	conns       map[*conn]struct{}
	closed      atomic.Bool // Shutdown or Close was called
	noKeepAlive atomic.Bool
}

// Tunables of the connection loop.
const (
	// watchDelay is how long a request runs before its connection is
	// watched for the client leaving. Shorter requests finish before a
	// leaving client could be noticed to any benefit.
	watchDelay = 100 * time.Millisecond
	// bufferBeforeChunking is how much of an answer of unknown length is
	// held back, so that a short one still gets a Content-Length.
	bufferBeforeChunking = 2048
	// maxPostHandlerRead is how much of a request body the handler left
	// unread is read away to keep the connection; past it, it is closed.
	maxPostHandlerRead = 256 << 10
	// lingerAfterClose is how long unread input is drained after a
	// half-close, so the kernel does not answer it with a reset that
	// destroys the answer just sent.
	lingerAfterClose = 500 * time.Millisecond
	// newConnGrace is how long Shutdown leaves a connection that has not
	// sent a request yet: its first request may be on the wire.
	newConnGrace = 5 * time.Second
	ioBufferSize = 4 << 10
)

// Serve accepts connections on ln and serves each on its own goroutine.
// It returns http.ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	if !s.track(ln) {
		return http.ErrServerClosed
	}
	defer s.untrack(ln)
	for {
		rwc, err := Accept(ln, s.logger())
		if err != nil {
			if s.closed.Load() {
				return http.ErrServerClosed
			}
			return err
		}
		c := newConn(s, rwc)
		if !s.trackConn(c) {
			rwc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// Accept accepts the next connection on ln. It retries, backing off and
// logging to log, on the errors Go's server retries (EMFILE and the
// like), and returns any other.
func Accept(ln net.Listener, log hclog.Logger) (net.Conn, error) {
	var backoff time.Duration
	for {
		rwc, err := ln.Accept()
		var ne net.Error
		//lint:ignore SA1019 Go's server backs off on the same errors.
		if err == nil || !errors.As(err, &ne) || !ne.Temporary() { //nolint:staticcheck
			return rwc, err
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		log.Error("accept failed; retrying", "error", err, "in", backoff)
		time.Sleep(backoff)
	}
}

// SetKeepAlivesEnabled(false) makes every answer close its connection and
// closes idle ones: clients move to other gateways while requests are
// still served.
func (s *Server) SetKeepAlivesEnabled(on bool) {
	s.noKeepAlive.Store(!on)
	if !on {
		s.closeIdle()
	}
}

// Shutdown stops accepting, closes idle connections and waits for the
// others to finish their request, or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closed.Store(true)
	s.closeListeners()
	wait := time.Millisecond
	for {
		if s.closeIdle() {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	s.closed.Store(true)
	s.closeListeners()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.rwc.Close()
	}
	return nil
}

func (s *Server) keepAlives() bool { return !s.noKeepAlive.Load() && !s.closed.Load() }

func (s *Server) logger() hclog.Logger {
	if s.Logger == nil {
		return hclog.NewNullLogger()
	}
	return s.Logger
}

func (s *Server) maxHeadBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes + 4096
	}
	return http.DefaultMaxHeaderBytes + 4096
}

func (s *Server) track(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) untrack(ln net.Listener) {
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
}

func (s *Server) trackConn(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrackConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
	}
}

// closeIdle closes the connections waiting for a request, and reports
// whether none are left at all. A new connection is left its grace.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixNano()
	for c := range s.conns {
		st := c.state.Load()
		if st == stateNew && now-c.accepted < int64(newConnGrace) {
			continue
		}
		if (st == stateIdle || st == stateNew) && c.state.CompareAndSwap(st, stateClosed) {
			c.rwc.Close()
			delete(s.conns, c)
		}
	}
	return len(s.conns) == 0
}

// Info is what the server saw of a request that http.Request does not
// carry.
type Info struct {
	// Requests counts the requests read on the connection, this one
	// included.
	Requests int64
	// BothFramings is true when the request's head framed its body with
	// both Transfer-Encoding and Content-Length. Go's parser drops the
	// Content-Length; RFC 9112 (6.3) asks that such a request be refused
	// and its connection closed.
	BothFramings bool
	// Cancel ends the request's context, as the client leaving does: a
	// handler that bounds the request by a timer of its own cancels it
	// without making a context of its own.
	Cancel context.CancelFunc
	// Started is when the server began serving the request, its head
	// read.
	Started time.Time
	// Note is what an event loop that handed the connection over said of
	// this request (Handover.Note); nil for any request after the first.
	Note any

	c *conn
}

// Watcher is told of what ends a request besides its handler: a handler
// blocked where a context cannot reach (a read on a connection of its
// own) learns of it without watching the context. Its methods run on the
// connection's timer, under the connection's lock: they must not block
// nor call the request's Info, and none is called once the handler has
// returned.
type Watcher interface {
	// ClientLeft is called when the request's client leaves while it is
	// served, after the request's context has ended.
	ClientLeft()
	// DeadlinePassed is called when the deadline set with SetDeadline
	// passes.
	DeadlinePassed()
}

// Watch has w told of the request's end, until the handler returns.
func (i Info) Watch(w Watcher) {
	i.c.mu.Lock()
	i.c.watcher = w
	i.c.mu.Unlock()
}

// SetDeadline has the watcher told when t passes; the zero time clears
// it. The request keeps its one deadline on the connection's timer,
// which a request's own time.AfterFunc would cost a timer, a function
// value and two timer updates for, on every request.
func (i Info) SetDeadline(t time.Time) {
	i.c.mu.Lock()
	i.c.deadline = t
	if !t.IsZero() {
		i.c.arm(t)
	}
	i.c.mu.Unlock()
}

type connKey struct{}

// InfoOf returns what the server saw of r, and false when r did not come
// through this package's server.
func InfoOf(r *http.Request) (Info, bool) {
	c, ok := r.Context().Value(connKey{}).(*conn)
	if !ok {
		return Info{}, false
	}
	return Info{Requests: c.requests, BothFramings: c.bothFramings, Cancel: c.cancel, Started: c.started, Note: c.note, c: c}, true
}
