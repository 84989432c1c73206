package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Connection states, as Shutdown sees them.
const (
	stateNew    int32 = iota // no request yet
	stateIdle                // waiting for the next request
	stateActive              // reading, serving or answering a request
	stateClosed              // closed by Shutdown while idle
)

var aLongTimeAgo = time.Unix(1, 0)

// conn is one client connection. Its goroutine reads a request, runs the
// handler and writes the answer, in turn; only the watch (see watchDelay)
// runs beside it.
type conn struct {
	srv      *Server
	rwc      net.Conn
	remote   string
	accepted int64 // unix nanos
	state    atomic.Int32
	ctx      context.Context // the connection's, carrying it for InfoOf
	in       connReader
	br       *bufio.Reader
	bw       *bufio.Writer
	res      response // reused by every request
	// simple is what the simple parser fills, for serveRequest to copy
	// into the handler's request with its context: one request made per
	// request, not two.
	simple http.Request

	// What InfoOf reports of the request being served.
	requests     int64
	bothFramings bool
	note         any // for the next request only (see Handover)

	// The connection's one timer (see tick): it starts the watch for a
	// client leaving once a request has run for watchDelay, and tells the
	// handler's watcher when the deadline it set passes. It is armed
	// lazily: a request whose times come after the armed one's costs it
	// nothing. mu guards what the timer and the connection's goroutine
	// share.
	timer     *time.Timer
	mu        sync.Mutex
	armedAt   time.Time // when the timer fires; zero when it is not armed
	watchDone sync.Cond
	serving   bool               // the handler runs
	started   time.Time          // when the request being served began
	deadline  time.Time          // the handler's; zero for none
	watched   bool               // the watch ran for this request
	watching  bool               // the watch is reading
	aborting  bool               // the watch's read is being cut short
	cancel    context.CancelFunc // the request's context
	watcher   Watcher            // the handler's
	hijacked  bool

	// The read deadline awaitNext set (zero: none), valid while nothing
	// else has moved the deadline since: whatever does sets deadlineMoved,
	// the handler's own deadlines included.
	idleUntil     time.Time
	deadlineMoved atomic.Bool
}

// connReader reads the connection, first giving back the byte a watch
// read ahead.
type connReader struct {
	c       *conn
	hasByte bool
	b       [1]byte
}

func (r *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.hasByte {
		p[0], r.hasByte = r.b[0], false
		return 1, nil
	}
	return r.c.rwc.Read(p)
}

func newConn(s *Server, rwc net.Conn) *conn {
	c := &conn{srv: s, rwc: rwc, remote: rwc.RemoteAddr().String(), accepted: time.Now().UnixNano()}
	c.ctx = context.WithValue(context.Background(), connKey{}, c)
	c.in.c = c
	c.br = bufio.NewReaderSize(&c.in, ioBufferSize)
	c.bw = bufio.NewWriterSize(rwc, ioBufferSize)
	c.res.c = c
	c.res.header = make(http.Header)
	c.watchDone.L = &c.mu
	c.timer = time.AfterFunc(time.Hour, c.tick)
	c.timer.Stop()
	return c
}

func (c *conn) serve() {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.srv.logger().Error("panic serving a request", "remote", c.remote, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
		c.stopWatch()
		if !c.hijacked {
			c.close()
		}
	}()
	if d := c.srv.HeaderTimeout; d > 0 {
		_ = c.rwc.SetReadDeadline(time.Now().Add(d))
		c.deadlineMoved.Store(true)
	}
	for {
		req, err := c.readRequest()
		if err != nil {
			c.refuse(err)
			return
		}
		if !c.serveRequest(req) {
			return
		}
		if !c.state.CompareAndSwap(stateActive, stateIdle) {
			return
		}
		if !c.srv.keepAlives() {
			// Shutdown, or keep-alives turned off, came while this request
			// was served: their sweep of idle connections missed this one.
			return
		}
		c.awaitNext()
	}
}

// awaitNext sets the read deadline for the wait for the next request:
// the idle timeout. Moving a deadline costs a timer update, so the one
// the request before set is kept while nothing has moved it since and it
// is at least the idle timeout away; a new one is set an eighth further.
// A keep-alive connection thus closes between one and 1.125 idle
// timeouts after its last request, never sooner: a client whose own idle
// timeout is a little shorter must not race the server's close.
func (c *conn) awaitNext() {
	d := c.srv.IdleTimeout
	var until time.Time
	if d > 0 {
		until = time.Now().Add(d)
	}
	moved := c.deadlineMoved.Swap(false)
	if !moved && c.idleUntil.IsZero() == until.IsZero() && !c.idleUntil.Before(until) {
		return // the one set is still far enough, or none is wanted nor set
	}
	if d > 0 {
		until = until.Add(d / 8)
	}
	_ = c.rwc.SetReadDeadline(until)
	c.idleUntil = until
}

// close flushes what is left and closes the connection.
func (c *conn) close() {
	_ = c.bw.Flush()
	c.rwc.Close()
	c.srv.untrackConn(c)
	c.timer.Stop()
}

// lingeringClose sends what is left, half-closes and reads away what
// the client still sends for a while, then closes: closing with unread
// input makes the kernel reset the connection, and the client may lose
// the answer it was sent.
func (c *conn) lingeringClose() {
	_ = c.bw.Flush()
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = c.rwc.SetReadDeadline(time.Now().Add(lingerAfterClose))
		_, _ = io.Copy(io.Discard, c.rwc)
	}
}

// Errors of reading a request, each answered in refuse.
var (
	errHeadTooLarge = errors.New("request head too large")
	errShutdown     = errors.New("shutting down")
)

// badRequest is a request that parsed but may not be served.
type badRequest struct {
	code int
	text string
}

func (e badRequest) Error() string { return e.text }

// readRequest waits for the next request and parses it.
func (c *conn) readRequest() (*http.Request, error) {
	if _, err := c.br.Peek(1); err != nil {
		return nil, err
	}
	// Shutdown closes connections that are idle; one that is no longer
	// idle finishes its request.
	st := c.state.Load()
	if st == stateClosed || !c.state.CompareAndSwap(st, stateActive) {
		return nil, errShutdown
	}
	head, err := c.peekHead(st == stateNew)
	if err != nil {
		return nil, err
	}
	// The simple parser takes only names and values that are valid, which
	// net/http's reader does not check: those it read are checked below.
	req := &c.simple
	checked := parseSimpleRequest(head, c.br, req, nil)
	if checked {
		_, _ = c.br.Discard(len(head))
	} else if req, err = http.ReadRequest(c.br); err != nil {
		return nil, err
	}
	c.requests++
	// Go's parser keeps Transfer-Encoding and drops a Content-Length
	// beside it; the head, still in the buffer, tells whether there was
	// one.
	c.bothFramings = len(req.TransferEncoding) > 0 && HeadHas(head, "Content-Length")
	if req.ProtoMajor != 1 {
		return nil, badRequest{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	// http.ReadRequest moved the Host header to req.Host: whether there
	// was one is asked of the head when req.Host cannot tell.
	if req.ProtoAtLeast(1, 1) && req.Method != http.MethodConnect && (req.Host == "" || req.URL.Host != "") && !HeadHas(head, "Host") {
		return nil, badRequest{http.StatusBadRequest, "missing required Host header"}
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return nil, badRequest{http.StatusBadRequest, "malformed Host header"}
	}
	if !checked {
		for k, vv := range req.Header {
			if !httpguts.ValidHeaderFieldName(k) {
				return nil, badRequest{http.StatusBadRequest, "invalid header name"}
			}
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldValue(v) {
					return nil, badRequest{http.StatusBadRequest, "invalid header value"}
				}
			}
		}
	}
	req.RemoteAddr = c.remote
	return req, nil
}

// peekHead waits until the buffered input holds the whole head of the
// next request and returns it, unparsed: http.ReadRequest then never
// waits, and the raw head can be checked for what parsing hides. The
// header timeout runs from here when the head is not all in yet; for the
// connection's first request, it has run since the connection came.
func (c *conn) peekHead(first bool) ([]byte, error) {
	limit := c.srv.maxHeadBytes()
	timed := first
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if n := headLen(buf); n > 0 {
			if n > limit {
				return nil, errHeadTooLarge
			}
			return buf[:n], nil
		}
		if len(buf) >= limit {
			return nil, errHeadTooLarge
		}
		if len(buf) == c.br.Size() {
			// A head larger than the buffer: read on through a buffer
			// that holds the largest allowed (rare; kept for the
			// connection's life).
			c.br = bufio.NewReaderSize(c.br, limit)
			continue
		}
		if !timed && c.srv.HeaderTimeout > 0 {
			_ = c.rwc.SetReadDeadline(time.Now().Add(c.srv.HeaderTimeout))
			c.deadlineMoved.Store(true)
			timed = true
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

// headLen returns the length of the request head at the start of buf,
// blank line included, or 0 when it is not all there. Lines end in LF,
// with or without CR, as net/http reads them.
func headLen(buf []byte) int {
	for i := 0; ; {
		nl := bytes.IndexByte(buf[i:], '\n')
		if nl < 0 {
			return 0
		}
		line := buf[i : i+nl]
		i += nl + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return i
		}
	}
}

// HeadHas reports whether a raw request head, its request line first,
// has a header named name.
func HeadHas(head []byte, name string) bool {
	first := true
	for len(head) > 0 {
		line := head
		if nl := bytes.IndexByte(head, '\n'); nl >= 0 {
			line, head = head[:nl], head[nl+1:]
		} else {
			head = nil
		}
		if first {
			first = false // the request line
			continue
		}
		if k, _, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			return true
		}
	}
	return false
}

// refuse answers a request that could not be read, when there is
// someone to answer, and closes.
func (c *conn) refuse(err error) {
	var bad badRequest
	switch {
	case errors.As(err, &bad):
	case errors.Is(err, errHeadTooLarge):
		bad = badRequest{http.StatusRequestHeaderFieldsTooLarge, ""}
	case errors.Is(err, errShutdown), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed), isNetError(err):
		return // nobody to answer, or nothing worth answering
	case strings.HasPrefix(err.Error(), "unsupported transfer encoding"):
		bad = badRequest{http.StatusNotImplemented, "unsupported transfer encoding"}
	default:
		bad = badRequest{http.StatusBadRequest, ""}
	}
	msg := fmt.Sprintf("%d %s", bad.code, http.StatusText(bad.code))
	if bad.text != "" {
		msg += ": " + bad.text
	}
	fmt.Fprintf(c.bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", msg, len(msg), msg)
	c.lingeringClose()
}

func isNetError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// serveRequest runs the handler for req and finishes its answer. It
// reports whether the connection may carry another request.
func (c *conn) serveRequest(req *http.Request) bool {
	w := &c.res
	w.reset(req)
	if expect := req.Header["Expect"]; len(expect) > 0 {
		if !hasToken(expect, "100-continue") {
			w.header.Set("Connection", "close")
			w.WriteHeader(http.StatusExpectationFailed)
			w.finish()
			return false
		}
		if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
			w.expects100 = true
			w.canContinue.Store(true)
		}
	}
	if req.Body != http.NoBody {
		// The body is read under the handler's own deadline (or none),
		// not under the one that waited for the head.
		_ = c.rwc.SetReadDeadline(time.Time{})
		c.deadlineMoved.Store(true)
		w.body = &body{rc: req.Body, res: w}
		req.Body = w.body
	}
	ctx, cancel := context.WithCancel(c.ctx)
	req = req.WithContext(ctx)
	c.simple = http.Request{} // copied, or not used: nothing to keep alive
	w.req = req

	now := time.Now()
	c.mu.Lock()
	c.serving, c.cancel, c.started, c.watched = true, cancel, now, false
	c.arm(now.Add(watchDelay))
	c.mu.Unlock()
	c.srv.Handler.ServeHTTP(w, req)
	c.note = nil
	c.stopWatch()
	cancel()
	if c.hijacked {
		return false
	}
	w.finish()
	if w.closeAfter || w.werr != nil {
		if w.bodyLeft {
			c.lingeringClose()
		}
		return false
	}
	return true
}

// arm has the timer fire at t, unless it fires earlier already: tick
// then arms it for what is left. Called under mu.
func (c *conn) arm(t time.Time) {
	if !c.armedAt.IsZero() && !t.Before(c.armedAt) {
		return
	}
	c.armedAt = t
	c.timer.Reset(time.Until(t))
}

// tick is the connection's timer. For the request being served, it tells
// the watcher of a deadline passed, and once the request has run for
// watchDelay it becomes the watch: it reads the connection until the
// client sends more (a pipelined request, kept for later) or leaves,
// which cancels the request. It arms the timer again for what is left.
func (c *conn) tick() {
	c.mu.Lock()
	c.armedAt = time.Time{}
	if !c.serving {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if !c.deadline.IsZero() && !now.Before(c.deadline) {
		c.deadline = time.Time{}
		if c.watcher != nil {
			c.watcher.DeadlinePassed()
		}
	}
	next, watch := c.deadline, false
	if !c.watched {
		switch due := c.started.Add(watchDelay); {
		case now.Before(due):
			next = earliest(next, due)
		case !c.res.bodyRead():
			// The handler still reads the body from the connection: look
			// again later.
			next = earliest(next, now.Add(watchDelay))
		default:
			watch = true
		}
	}
	if !next.IsZero() {
		c.arm(next)
	}
	if !watch {
		c.mu.Unlock()
		return
	}
	c.watched, c.watching = true, true
	// Under the lock: stopWatch's deadline must come after this one.
	_ = c.rwc.SetReadDeadline(time.Time{})
	c.deadlineMoved.Store(true)
	c.mu.Unlock()

	n, err := c.rwc.Read(c.in.b[:])

	c.mu.Lock()
	if n == 1 {
		c.in.hasByte = true
	} else if err != nil && !c.aborting {
		c.cancel()
		if c.watcher != nil {
			c.watcher.ClientLeft() // under the lock: stopWatch waits for it
		}
	}
	c.watching = false
	c.watchDone.Broadcast()
	c.mu.Unlock()
}

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// stopWatch ends the request's watch, cutting its read short.
func (c *conn) stopWatch() {
	c.mu.Lock()
	c.serving = false
	c.watcher, c.deadline = nil, time.Time{}
	if c.watching {
		c.aborting = true
		_ = c.rwc.SetReadDeadline(aLongTimeAgo)
		for c.watching {
			c.watchDone.Wait()
		}
		c.aborting = false
	}
	c.mu.Unlock()
}
