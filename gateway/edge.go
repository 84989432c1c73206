package gateway

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/netutil"

	"github.com/hopgate/hopgate/gateway/h1"
)

// Trace-context trust at the edge (Settings.TraceContext).
const (
	// TraceLink starts a new trace for every request and keeps the
	// client's trace context only as a span link: an outside caller cannot
	// choose trace ids or sampling inside the gateway's traces.
	TraceLink = "link"
	// TraceContinue continues the client's trace, for gateways behind
	// callers that are themselves trusted.
	TraceContinue = "continue"
	// TraceIgnore starts a new trace and keeps nothing of the client's.
	TraceIgnore = "ignore"
)

// protectedHeaders may never be dropped because a client names them in
// Connection: they carry what the gateway sets (forwarding, tracing) or what
// the backend must see (credentials, framing).
var protectedHeaders = map[string]bool{
	"Authorization":     true,
	"Content-Length":    true,
	"Content-Type":      true,
	"Cookie":            true,
	"Forwarded":         true,
	"Host":              true,
	"Traceparent":       true,
	"Tracestate":        true,
	"X-Forwarded-For":   true,
	"X-Forwarded-Host":  true,
	"X-Forwarded-Proto": true,
	"X-Real-Ip":         true,
}

// sanitizeConnection removes protected header names from the Connection
// header, so that httputil.ReverseProxy's hop-by-hop removal cannot be
// turned against the gateway (a client listing X-Forwarded-For there would
// otherwise delete it... after the gateway has chosen not to trust it).
func sanitizeConnection(h http.Header) {
	values := h["Connection"]
	if len(values) == 0 {
		return
	}
	var kept []string
	changed := false
	for _, v := range values {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" {
				continue
			}
			if protectedHeaders[http.CanonicalHeaderKey(tok)] {
				changed = true
				continue
			}
			kept = append(kept, tok)
		}
	}
	if !changed {
		return
	}
	if len(kept) == 0 {
		h.Del("Connection")
		return
	}
	h["Connection"] = []string{strings.Join(kept, ", ")}
}

// filterUpgrade lets an Upgrade through only for WebSocket on a route that
// allows it. Anything else (h2c above all, which Go's ReverseProxy would
// forward) is removed and the request goes on as a plain one.
func filterUpgrade(h http.Header, allowWebSocket bool) {
	delete(h, "Http2-Settings")
	up := first(h, "Upgrade")
	if up == "" {
		return
	}
	if allowWebSocket && strings.EqualFold(strings.TrimSpace(up), "websocket") {
		return
	}
	h.Del("Upgrade")
	var kept []string
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "upgrade") {
				kept = append(kept, tok)
			}
		}
	}
	if len(kept) == 0 {
		h.Del("Connection")
	} else {
		h["Connection"] = []string{strings.Join(kept, ", ")}
	}
}

// trusted reports whether the peer of r is a configured trusted proxy,
// whose forwarding and trace headers are believed.
func (s *Settings) trusted(r *http.Request) bool {
	if len(s.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range s.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// connKey finds the edge connection of a request in its context.
type connKey struct{}

// edgeConn watches a client connection: it counts its requests and keeps
// the last bytes read so the request head can be checked for what Go's
// server normalises away (a Content-Length beside Transfer-Encoding).
type edgeConn struct {
	net.Conn
	requests atomic.Int64
	mu       sync.Mutex
	tail     []byte
	limit    int
	// pos is where in tail the next request head can start: just past the
	// last head found, so pipelined requests are matched in order.
	pos int
}

func (c *edgeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.tail = append(c.tail, p[:n]...)
		// The tail may grow to twice its limit before the old half is
		// dropped: each byte is then moved at most once, however long
		// the connection lives.
		if over := len(c.tail) - c.limit; over > c.limit {
			c.tail = append(c.tail[:0], c.tail[over:]...)
			c.pos = max(0, c.pos-over)
		}
		c.mu.Unlock()
	}
	return n, err
}

// chunkedHeadHas reports whether the raw head of a chunked request, the
// first head after the previous one found that starts with line and names
// Transfer-Encoding, also carries a header named name. Heads without
// Transfer-Encoding are skipped: Go's server keeps their framing as sent.
func (c *edgeConn) chunkedHeadHas(line, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		i := bytes.Index(c.tail[c.pos:], []byte(line))
		if i < 0 {
			return false
		}
		head := c.tail[c.pos+i:]
		c.pos += i + len(line)
		if end := bytes.Index(head, []byte("\r\n\r\n")); end >= 0 {
			head = head[:end]
			c.pos += end - len(line)
		}
		if h1.HeadHas(head, "Transfer-Encoding") {
			return h1.HeadHas(head, name)
		}
	}
}

type edgeListener struct {
	net.Listener
	limit int
}

func (l edgeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &edgeConn{Conn: c, limit: l.limit}, nil
}

// newEdgeListener wraps the public listener: at most maxConns connections at
// once (0: no cap; the rest wait in the kernel's backlog), each watched so
// the proxy can refuse smuggling attempts and count requests per
// connection. headerBytes is the server's MaxHeaderBytes: enough of each
// connection's recent input is kept to find a request head.
func newEdgeListener(ln net.Listener, maxConns, headerBytes int) net.Listener {
	if maxConns > 0 {
		ln = netutil.LimitListener(ln, maxConns)
	}
	return edgeListener{Listener: ln, limit: headerBytes + 8<<10}
}

// edgeConnContext is the http.Server ConnContext that makes the edge
// connection available to the proxy.
func edgeConnContext(ctx context.Context, c net.Conn) context.Context {
	if ec, ok := c.(*edgeConn); ok {
		return context.WithValue(ctx, connKey{}, ec)
	}
	return ctx
}

var (
	errSmuggling  = errors.New("both Content-Length and Transfer-Encoding: refused (RFC 9112, 6.3)")
	errConnect    = errors.New("CONNECT is not proxied")
	errOpaqueURL  = errors.New("opaque request target")
	errBodyTooBig = errors.New("request body larger than the route allows")
)

// connFacts is what the public connection showed of r beyond
// http.Request, from whichever server read it; false for a request that
// came another way (a handler called directly).
func connFacts(r *http.Request) (h1.Info, bool) {
	if info, ok := h1.InfoOf(r); ok {
		return info, true
	}
	ec, _ := r.Context().Value(connKey{}).(*edgeConn)
	if ec == nil {
		return h1.Info{}, false
	}
	info := h1.Info{Requests: ec.requests.Add(1)}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		info.BothFramings = ec.chunkedHeadHas(r.Method+" "+r.RequestURI+" "+r.Proto+"\r\n", "Content-Length")
	}
	return info, true
}

// checkEdge refuses what must never reach an instance, before routing. It
// returns the status and error to answer with, or 0.
func (p *Proxy) checkEdge(w http.ResponseWriter, r *http.Request) (int, error) {
	switch {
	case r.Method == http.MethodConnect:
		return http.StatusMethodNotAllowed, errConnect
	case r.URL.Opaque != "":
		return http.StatusBadRequest, errOpaqueURL
	}
	info, ok := connFacts(r)
	if !ok {
		return 0, nil
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// Go's parser drops a Content-Length sent beside
		// Transfer-Encoding and carries on; RFC 9112 says such a request
		// may be refused and its connection must be closed: a front
		// proxy that framed it by Content-Length would see another
		// request in its body. Chunked uploads close their connection
		// either way: nothing left on it to confuse later.
		w.Header().Set("Connection", "close")
		if info.BothFramings {
			return http.StatusBadRequest, errSmuggling
		}
	}
	if max := p.settings.MaxRequestsPerConn; max > 0 && info.Requests >= int64(max) {
		w.Header().Set("Connection", "close")
	}
	return 0, nil
}

// ServerSettings shape the public HTTP server against slow and oversized
// clients.
type ServerSettings struct {
	// HeaderTimeout closes a connection whose request head has not arrived
	// in full (slowloris).
	HeaderTimeout time.Duration
	// BodyTimeout bounds reading a request body; 0 means no bound.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection left unused.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request head: 431 over it.
	MaxHeaderBytes int
}

// DefaultServerSettings are the defaults of the gateway's flags.
var DefaultServerSettings = ServerSettings{
	HeaderTimeout:  10 * time.Second,
	BodyTimeout:    60 * time.Second,
	IdleTimeout:    120 * time.Second,
	MaxHeaderBytes: 32 << 10,
}

// PublicOptions choose the public listener's protocols and bounds.
type PublicOptions struct {
	// TLSCert and TLSKey, PEM files, serve HTTPS (HTTP/2 included).
	TLSCert, TLSKey string
	// H2C also accepts HTTP/2 without TLS, by prior knowledge.
	H2C bool
	// MaxConns caps the connections open at once; the rest wait in the
	// kernel's backlog. 0: no cap.
	MaxConns int
	// Logger gets the server's own errors (a panic, a failed accept).
	Logger hclog.Logger
	// EventLoops serves plain HTTP/1.1's common requests on event loops
	// (see loops.go) when the handler is a *Proxy; it serves the rest.
	EventLoops bool
}

// PublicServer serves the proxy on the public listener. Plain HTTP/1.x,
// the common case, is served by gateway/h1: one goroutine per connection
// and nothing more per request. TLS and h2c, which need Go's HTTP/2, are
// served by net/http, with the edge listener in front to see what its
// parser hides.
type PublicServer struct {
	ln    net.Listener
	srv   httpServer
	serve func() error // srv.Serve on ln, or ServeTLS with the certificate
}

// httpServer is what PublicServer uses of h1.Server and http.Server alike.
type httpServer interface {
	Shutdown(context.Context) error
	Close() error
	SetKeepAlivesEnabled(bool)
}

// NewPublicServer returns the public server for h on ln.
func NewPublicServer(ln net.Listener, h http.Handler, ss ServerSettings, opts PublicOptions) *PublicServer {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	proxy, _ := h.(*Proxy)
	if ss.BodyTimeout > 0 {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body != nil && r.Body != http.NoBody {
				// A slow body is cut at the deadline; the server resets
				// deadlines before reading the next request.
				_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(ss.BodyTimeout))
			}
			inner.ServeHTTP(w, r)
		})
	}
	if opts.TLSCert == "" && !opts.H2C {
		own := &h1.Server{Handler: h, HeaderTimeout: ss.HeaderTimeout, IdleTimeout: ss.IdleTimeout,
			MaxHeaderBytes: ss.MaxHeaderBytes, Logger: opts.Logger}
		if opts.EventLoops && proxy != nil {
			loops, err := newLoopServer(proxy, own, ss, ln, opts.MaxConns, opts.Logger)
			if err == nil {
				return &PublicServer{ln: ln, srv: loops, serve: loops.serve}
			}
			opts.Logger.Error("event loops failed to start; serving without them", "error", err)
		}
		if opts.MaxConns > 0 {
			ln = netutil.LimitListener(ln, opts.MaxConns)
		}
		return &PublicServer{ln: ln, srv: own, serve: func() error { return own.Serve(ln) }}
	}
	std := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ss.HeaderTimeout,
		IdleTimeout:       ss.IdleTimeout,
		MaxHeaderBytes:    ss.MaxHeaderBytes,
		ConnContext:       edgeConnContext,
		ErrorLog:          opts.Logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	if opts.H2C {
		std.Protocols = new(http.Protocols)
		std.Protocols.SetHTTP1(true)
		std.Protocols.SetUnencryptedHTTP2(true)
		if opts.TLSCert != "" {
			std.Protocols.SetHTTP2(true)
		}
	}
	ln = newEdgeListener(ln, opts.MaxConns, ss.MaxHeaderBytes)
	s := &PublicServer{ln: ln, srv: std, serve: func() error { return std.Serve(ln) }}
	if opts.TLSCert != "" {
		s.serve = func() error { return std.ServeTLS(ln, opts.TLSCert, opts.TLSKey) }
	}
	return s
}

// EventLoops reports whether plain HTTP/1.1 is served on event loops.
func (s *PublicServer) EventLoops() bool {
	_, ok := s.srv.(*loopServer)
	return ok
}

// Addr is the listener's address.
func (s *PublicServer) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown or Close, then returns nil.
func (s *PublicServer) Serve() error {
	if err := s.serve(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Drain asks every client to close its connection after its answer, and
// closes the idle ones, while requests go on being served.
func (s *PublicServer) Drain() { s.srv.SetKeepAlivesEnabled(false) }

// Shutdown stops accepting and waits for the requests in flight, until
// ctx ends.
func (s *PublicServer) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close stops at once.
func (s *PublicServer) Close() error { return s.srv.Close() }
