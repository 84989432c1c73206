package gateway

// The upstream transport: HTTP/1.1 to instances over pooled keep-alive
// connections, with the request written and the response read on the
// calling goroutine.
//
// Go's http.Transport gives every connection a reader and a writer
// goroutine and hands each request and response between them and the
// caller; on a proxy's hot path those hand-offs and their allocations cost
// more than the proxying itself. This transport keeps only what a proxy
// needs: a request whose whole body is known (none, or one the gateway
// buffered) goes out in one write on the caller's goroutine and its
// response is parsed there by net/http's own reader. Everything else
// (streamed bodies, upgrades, Expect: 100-continue) goes through a standard
// http.Transport, which can write a body while reading an early answer.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hopgate/hopgate/gateway/h1"
	"golang.org/x/net/http/httpguts"
)

// Transport is the gateway's upstream HTTP/1.1 transport.
type Transport struct {
	// Fallback carries the requests the fast path does not: bodies that
	// stream, upgrades, Expect: 100-continue, HTTPS.
	Fallback *http.Transport
	// Dial opens a connection to an instance; the route's connect timeout
	// rides in the context.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdlePerHost bounds the idle connections kept per instance.
	MaxIdlePerHost int
	// IdleTimeout closes a connection left idle that long.
	IdleTimeout time.Duration
	// StaleCheckAfter is how long a connection idles before it is checked,
	// when taken from the pool, for a close by its instance.
	StaleCheckAfter time.Duration

	mu       sync.Mutex
	idle     map[string][]*upstreamConn // per instance address, most recent last
	sweeping bool                       // a sweep of expired connections is due
}

// maxResponseHead bounds an instance's status line and headers, as the
// gateway's server bounds a client's.
const maxResponseHead = 1 << 20

// max1xx bounds the informational answers (103 Early Hints...) read before
// the final one, as Go's own transport does.
const max1xx = 5

var errResponseHeadTooLarge = errors.New("response headers too large")

// NewTransport returns the upstream transport: pooled keep-alive
// connections, the route's connect timeout (carried in the request
// context), no proxy from the environment (the gateway is the proxy).
func NewTransport() *Transport {
	return &Transport{
		Fallback:        newStandardTransport(),
		Dial:            dialUpstream,
		MaxIdlePerHost:  256,
		IdleTimeout:     90 * time.Second,
		StaleCheckAfter: time.Second,
	}
}

// NewH2CTransport speaks HTTP/2 without TLS, as gRPC servers do.
func NewH2CTransport() *http.Transport {
	t := newStandardTransport()
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}

// newStandardTransport is Go's transport set up as the fast path is: for
// what the fast path does not carry, and for h2c.
func newStandardTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialUpstream,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// A proxy passes encodings through; it does not ask for gzip on
		// the client's behalf and then unpack it.
		DisableCompression: true,
	}
}

var upstreamDialer = &net.Dialer{KeepAlive: 30 * time.Second}

// dialUpstream connects to an instance within the route's connect timeout.
func dialUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	if ex, ok := ctx.Value(ctxKey{}).(*exchange); ok && ex.route.policy.connect > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ex.route.policy.connect)
		defer cancel()
	}
	return upstreamDialer.DialContext(ctx, network, addr)
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !fastPath(req) {
		return t.Fallback.RoundTrip(req)
	}
	ctx := req.Context()
	ex, _ := ctx.Value(ctxKey{}).(*exchange) // nil for a request not from the proxy
	for {
		c, err := t.conn(ctx, req.URL.Host, ex.clock())
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(ctx, req, ex)
		if err == nil {
			return resp, nil
		}
		// A pooled connection the instance closed while it sat idle fails
		// before any answer; like Go's transport, send again on another
		// when the request is safe to repeat. A fresh connection's failure
		// is the instance's.
		if c.reused && (c.written == 0 || c.answered == 0 && isIdempotent(req)) && ctx.Err() == nil {
			if again, rerr := rewind(req); rerr == nil {
				req = again
				continue
			}
		}
		return nil, err
	}
}

// CloseIdleConnections closes the connections no request is using.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.conn.Close()
		}
	}
	t.Fallback.CloseIdleConnections()
}

// fastPath says whether the request can be sent whole before its answer is
// read: plain HTTP, no upgrade, no Expect, and a body that is absent or
// known in full (GetBody set), so it can also be sent again.
func fastPath(req *http.Request) bool {
	if req.URL.Scheme != "http" || req.Header["Upgrade"] != nil || req.Header["Expect"] != nil ||
		len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 {
		return false
	}
	return req.Body == nil || req.Body == http.NoBody || (req.GetBody != nil && req.ContentLength >= 0)
}

// rewind returns the request ready to be sent again.
func rewind(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	r := *req
	r.Body = body
	return &r, nil
}

// conn returns an idle connection to addr, or dials one; now is the time.
func (t *Transport) conn(ctx context.Context, addr string, now time.Time) (*upstreamConn, error) {
	for {
		c, idle := t.takeIdle(addr, now)
		if c == nil {
			break
		}
		// Nothing reads an idle connection, so an instance that closed it
		// (restarted, or its own idle timeout) is only seen when used. A
		// connection that idled for a while is checked first, at the cost
		// of one system call; busy ones are not.
		if idle >= t.StaleCheckAfter && !connAlive(c.conn) {
			c.conn.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
	conn, err := t.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return t.newConn(addr, conn), nil
}

// newConn makes conn, a connection to addr, the transport's.
func (t *Transport) newConn(addr string, conn net.Conn) *upstreamConn {
	c := &upstreamConn{t: t, addr: addr, conn: conn}
	c.offerSocket()
	c.br = bufio.NewReaderSize(reader{c}, 4<<10)
	c.bw = bufio.NewWriterSize(writer{c}, 4<<10)
	return c
}

// takeIdle takes the connection to addr pooled last, if it has not idled
// past IdleTimeout, and says how long it idled; the expired ones it meets
// it closes. The pool's lock is released by defer here and in keep: a
// panic under it would leave every later request waiting on it.
func (t *Transport) takeIdle(addr string, now time.Time) (*upstreamConn, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	conns := t.idle[addr]
	for len(conns) > 0 {
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		conns = conns[:len(conns)-1]
		t.idle[addr] = conns
		if idle := now.Sub(c.idleSince); idle < t.IdleTimeout {
			return c, idle
		}
		c.conn.Close()
	}
	return nil, 0
}

// put keeps c for the next request to its instance, or closes it.
func (t *Transport) put(c *upstreamConn) {
	c.idleSince = time.Now()
	c.reused = false
	expired, refused := t.keep(c)
	if expired != nil {
		expired.conn.Close()
	}
	if refused != nil {
		refused.conn.Close()
	}
}

// keep pools c unless addr's pool is full (refused is then c), and takes
// out the pool's oldest connection when it has idled too long (expired),
// so an instance that went quiet does not keep sockets open. The caller
// closes both.
func (t *Transport) keep(c *upstreamConn) (expired, refused *upstreamConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = map[string][]*upstreamConn{}
	}
	conns := t.idle[c.addr] // oldest first
	if len(conns) > 0 && c.idleSince.Sub(conns[0].idleSince) >= t.IdleTimeout {
		expired = conns[0]
		conns = conns[1:]
	}
	if len(conns) < t.MaxIdlePerHost {
		conns = append(conns, c)
	} else {
		refused = c
	}
	t.idle[c.addr] = conns
	if !t.sweeping {
		t.sweeping = true
		time.AfterFunc(t.IdleTimeout/2, t.sweep)
	}
	return expired, refused
}

// sweep closes the connections idle for longer than IdleTimeout and
// forgets instances left with none: an instance that left the routing
// table is never asked for a connection again, so its idle ones would
// otherwise stay open for good. It runs every half IdleTimeout while any
// connection idles.
func (t *Transport) sweep() {
	now := time.Now()
	var expired []*upstreamConn
	t.mu.Lock()
	for addr, conns := range t.idle {
		n := 0 // oldest first: the expired ones lead
		for n < len(conns) && now.Sub(conns[n].idleSince) >= t.IdleTimeout {
			n++
		}
		expired = append(expired, conns[:n]...)
		if n == len(conns) {
			delete(t.idle, addr)
		} else if n > 0 {
			t.idle[addr] = slices.Clone(conns[n:])
		}
	}
	t.sweeping = len(t.idle) > 0
	if t.sweeping {
		time.AfterFunc(t.IdleTimeout/2, t.sweep)
	}
	t.mu.Unlock()
	for _, c := range expired {
		c.conn.Close()
	}
}

// upstreamConn is one keep-alive connection to an instance, used by one
// request at a time.
type upstreamConn struct {
	t         *Transport
	addr      string
	conn      net.Conn
	br        *bufio.Reader // reads through the conn's Read below
	bw        *bufio.Writer
	idleSince time.Time

	// Per request, to tell a stale pooled connection (nothing sent, or no
	// answer at all) from an instance that failed mid-answer:
	reused    bool  // taken from the idle pool
	written   int64 // bytes of request written
	answered  int64 // bytes of answer read
	headLimit int64 // answered may not pass this while a head is read; 0 after

	// The request's last write waits for the answer (see sendThenAwait),
	// where the connection offers its socket.
	raw      syscall.RawConn
	awaitFn  func(fd uintptr) bool // made once: a closure per request would be an allocation
	awaiting bool                  // the flush under way ends the request
	pending  []byte                // what awaitFn is to write; nil once written
	sent     int                   // how much of it went

	// The watch of the request's end (see watch): one or the other. The
	// exchange, of a request h1 serves, also takes the answer's head as
	// it came (readResponse).
	ex        *exchange
	stopWatch func() bool
}

// reader and writer count what goes through the connection.
type (
	reader struct{ c *upstreamConn }
	writer struct{ c *upstreamConn }
)

func (r reader) Read(p []byte) (int, error) {
	c := r.c
	if c.headLimit > 0 && c.answered >= c.headLimit {
		return 0, errResponseHeadTooLarge
	}
	n, err := c.conn.Read(p)
	c.answered += int64(n)
	return n, err
}

func (w writer) Write(p []byte) (n int, err error) {
	c := w.c
	if c.awaiting && c.raw != nil {
		n = c.sendThenAwait(p)
	}
	if n < len(p) {
		// Not sent whole that way: the usual write sends the rest, waiting
		// for room, and reports any error.
		var m int
		m, err = c.conn.Write(p[n:])
		n += m
	}
	c.written += int64(n)
	return n, err
}

// answerOn reads the answer to req on conn, a connection to req's
// instance that req was sent on by an event loop. The connection is the
// pool's after, as if it had dialled it.
func (t *Transport) answerOn(req *http.Request, conn net.Conn) (*http.Response, error) {
	c := t.newConn(req.URL.Host, conn)
	ctx := req.Context()
	ex, _ := ctx.Value(ctxKey{}).(*exchange)
	c.watch(ctx, ex)
	return c.readAnswer(ctx, req)
}

// roundTrip writes req and reads the response head. The response body
// reads from the connection, which goes back to the pool at its end.
func (c *upstreamConn) roundTrip(ctx context.Context, req *http.Request, ex *exchange) (*http.Response, error) {
	c.written, c.answered = 0, 0
	c.watch(ctx, ex)
	if err := c.writeRequest(req); err != nil {
		return c.fail(ctx, err)
	}
	return c.readAnswer(ctx, req)
}

// readAnswer reads the answer to req, sent; the watch of ctx is on.
func (c *upstreamConn) readAnswer(ctx context.Context, req *http.Request) (*http.Response, error) {
	resp, err := c.readResponse(ctx, req)
	if err != nil {
		return c.fail(ctx, err)
	}
	body := &upstreamBody{c: c, body: resp.Body, reuse: !resp.Close}
	if resp.Body == http.NoBody {
		body.finish(true)
		return resp, nil
	}
	resp.Body = body
	return resp, nil
}

// fail ends a round trip that failed, and its connection.
func (c *upstreamConn) fail(ctx context.Context, err error) (*http.Response, error) {
	c.unwatch()
	c.conn.Close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, err
}

// watch has the connection cut (its deadline put in the past) when ctx
// ends, the request cancelled by the route's or the try's timeout or its
// client leaving, until unwatch. An exchange told of all three (served by
// h1) does it for the cost of a lock; otherwise the context is watched.
// ex is ctx's exchange, if any.
func (c *upstreamConn) watch(ctx context.Context, ex *exchange) {
	if ex != nil && ex.served {
		c.ex = ex
		ex.watchConn(ctx, c.conn)
		// An end before the watch began is in the context already.
		if ctx.Err() != nil {
			ex.interrupt()
		}
		return
	}
	c.stopWatch = context.AfterFunc(ctx, func() { c.conn.SetDeadline(aLongTimeAgo) })
}

// unwatch ends the watch and reports whether it cut the connection.
func (c *upstreamConn) unwatch() (cut bool) {
	if ex := c.ex; ex != nil {
		c.ex = nil
		return ex.unwatchConn(c.conn)
	}
	cut = !c.stopWatch()
	c.stopWatch = nil
	return cut
}

var aLongTimeAgo = time.Unix(1, 0)

// watchConn has interrupt cut conn once ctx has ended, until
// unwatchConn.
func (ex *exchange) watchConn(ctx context.Context, conn net.Conn) {
	ex.upMu.Lock()
	if ex.upConns == nil {
		ex.upConns = ex.upConnsBuf[:0]
	}
	ex.upConns = append(ex.upConns, watchedConn{ctx: ctx, conn: conn})
	ex.upMu.Unlock()
}

// unwatchConn forgets conn and reports whether interrupt cut it.
func (ex *exchange) unwatchConn(conn net.Conn) (cut bool) {
	ex.upMu.Lock()
	defer ex.upMu.Unlock()
	for i, w := range ex.upConns {
		if w.conn == conn {
			ex.upConns = slices.Delete(ex.upConns, i, i+1)
			return w.cut
		}
	}
	return false
}

// interrupt cuts the upstream connections whose attempt's context has
// ended: all of them when the request's has (the route timeout, the
// client leaving), one when its try timed out. Whoever ends a context
// calls it after.
func (ex *exchange) interrupt() {
	ex.upMu.Lock()
	defer ex.upMu.Unlock()
	for i := range ex.upConns {
		w := &ex.upConns[i]
		if !w.cut && w.ctx.Err() != nil {
			_ = w.conn.SetDeadline(aLongTimeAgo)
			w.cut = true
		}
	}
}

// watchedConn is an upstream connection an attempt waits on.
type watchedConn struct {
	ctx  context.Context // the attempt's
	conn net.Conn
	cut  bool
}

// writeRequest writes the request line, headers and body in one flush.
func (c *upstreamConn) writeRequest(req *http.Request) error {
	w := c.bw
	// The head is formatted in the buffer's own free space, where
	// writing it leaves it.
	head, err := appendRequestHead(w.AvailableBuffer(), req)
	if err != nil {
		return err
	}
	w.Write(head)
	if req.Body != nil && req.Body != http.NoBody {
		n, err := io.Copy(w, io.LimitReader(req.Body, req.ContentLength))
		req.Body.Close()
		if err == nil && n != req.ContentLength {
			err = fmt.Errorf("request body: %d of %d bytes", n, req.ContentLength)
		}
		if err != nil {
			return err
		}
	}
	c.awaiting = true
	err = w.Flush()
	c.awaiting = false
	return err
}

// readResponse reads the final response head, passing informational ones
// (103 Early Hints) to the request's httptrace hook, through which
// httputil.ReverseProxy forwards them.
func (c *upstreamConn) readResponse(ctx context.Context, req *http.Request) (*http.Response, error) {
	for n := 0; ; n++ {
		c.headLimit = c.answered - int64(c.br.Buffered()) + maxResponseHead
		var resp *http.Response
		if ex := c.ex; ex != nil {
			// Its client served by h1, the answer's head can go to it as
			// it came.
			var head h1.AnswerHead
			if resp = h1.SimpleAnswerHead(c.br, req, &head); resp != nil && resp.Header == nil {
				ex.keepHead(resp, &head)
			}
		} else {
			resp = h1.SimpleAnswer(c.br, req)
		}
		var err error
		if resp == nil {
			resp, err = http.ReadResponse(c.br, req)
		}
		c.headLimit = 0
		if err != nil {
			if c.answered > maxResponseHead && errors.Is(err, errResponseHeadTooLarge) {
				return nil, errResponseHeadTooLarge
			}
			return nil, err
		}
		code := resp.StatusCode
		if code >= 200 || code == http.StatusSwitchingProtocols {
			if code == http.StatusSwitchingProtocols {
				return nil, errors.New("101 Switching Protocols to a request that asked for no upgrade")
			}
			if req.Close {
				resp.Close = true
			}
			return resp, nil
		}
		if n == max1xx {
			return nil, errors.New("too many 1xx responses")
		}
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// upstreamBody is a response body read from an upstreamConn. Read to its
// end, it gives the connection back to the pool; closed early, it closes
// the connection, whose rest of answer nobody wants.
type upstreamBody struct {
	c     *upstreamConn
	body  io.ReadCloser
	reuse bool
	done  bool
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

// finish releases the connection: to the pool when the answer ended as
// HTTP/1.1 says it ends, the request was not cancelled, and nothing
// follows the answer; otherwise closed.
func (b *upstreamBody) finish(complete bool) {
	b.done = true
	c := b.c
	cut := c.unwatch()
	if complete && b.reuse && !cut && c.br.Buffered() == 0 {
		c.t.put(c)
		return
	}
	c.conn.Close()
}

// appendRequestHead appends req's request line and headers, the blank
// line included, to dst. Header names and values are checked as Go's
// transport checks them: a header the gateway forwards must not split the
// request.
func appendRequestHead(dst []byte, req *http.Request) ([]byte, error) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return dst, fmt.Errorf("invalid Host header %q", host)
	}
	dst = append(dst, req.Method...)
	dst = append(dst, ' ')
	dst = append(dst, req.URL.RequestURI()...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\n"...)
	for name, values := range req.Header {
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
			continue // framing is the transport's
		}
		if !httpguts.ValidHeaderFieldName(name) {
			return dst, fmt.Errorf("invalid header name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return dst, fmt.Errorf("invalid value for header %q", name)
			}
			if v == "" && name == "User-Agent" {
				continue // an empty User-Agent means none, as in Go's transport
			}
			dst = append(dst, name...)
			dst = append(dst, ": "...)
			dst = append(dst, textproto.TrimString(v)...)
			dst = append(dst, "\r\n"...)
		}
	}
	// As Go's transport does: servers may refuse (411) a POST, PUT or PATCH
	// that does not say its body is empty.
	if req.ContentLength > 0 || req.ContentLength == 0 && (req.Method == http.MethodPost ||
		req.Method == http.MethodPut || req.Method == http.MethodPatch) {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, req.ContentLength, 10)
		dst = append(dst, "\r\n"...)
	}
	if req.Close {
		dst = append(dst, "Connection: close\r\n"...)
	}
	return append(dst, "\r\n"...), nil
}
