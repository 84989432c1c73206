package gateway

// Forwarding a request and copying its answer back: what
// httputil.ReverseProxy does, without its copies of the request and its
// headers on every request. An upgrade (WebSocket), rare and long-lived,
// still goes through ReverseProxy, which owns the tunnel.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/hopgate/hopgate/gateway/h1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"
)

// removeHopByHop deletes the hop-by-hop headers of h, and those its
// Connection header names. A header holds a handful of names: one pass
// over them costs less than a lookup of every hop-by-hop name.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for name := range h {
		if h1.IsHopByHop(name) {
			delete(h, name)
		}
	}
}

// forward sends r, in the exchange's context, to the route's instances and
// copies the answer to w. The client's request becomes the outgoing one,
// in one copy with its own URL and context: the gateway owns it, and what
// the access log and the span read of it (method, host, path, peer) is not
// changed.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, ex *exchange) {
	if isUpgrade(r) {
		p.rp.ServeHTTP(w, r.WithContext(ex))
		return
	}
	ex.hintsTo = w
	// WithContext's result stays on the stack: it is copied.
	out := p.outgoing(r.WithContext(ex), ex)
	resp, err := p.roundTrip(out)
	ex.hintsMu.Lock()
	ex.hintsFinal = true
	ex.hintsMu.Unlock()
	if err != nil {
		p.proxyError(w, out, err)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		p.proxyError(w, out, fmt.Errorf("instance switched protocols (%q) on a request for none", resp.Header.Get("Upgrade")))
		return
	}

	// An answer whose head the transport kept as it came (see
	// exchange.relay) goes to h1 as it is, its hop-by-hop lines dropped.
	relayed, contentType := false, ""
	if head := ex.relayed(resp); head != nil {
		rec, ok := w.(*statusRecorder)
		relayed = ok && rec.relayHead(head)
		if relayed {
			contentType = head.ContentType()
		} else {
			resp.Header = head.Header()
		}
	}
	wh := w.Header()
	announced := len(resp.Trailer)
	if !relayed {
		removeHopByHop(resp.Header)
		copyHeader(wh, resp.Header)
		if _, ok := resp.Header["Content-Type"]; !ok {
			wh["Content-Type"] = nil // net/http's server would guess one
		}
		contentType = first(resp.Header, "Content-Type")
		if announced > 0 {
			names := make([]string, 0, announced)
			for k := range resp.Trailer {
				names = append(names, k)
			}
			wh["Trailer"] = []string{strings.Join(names, ", ")}
		}
		w.WriteHeader(resp.StatusCode)
	}
	if err := copyBody(w, resp.Body, streams(resp.ContentLength, contentType)); err != nil {
		resp.Body.Close()
		// The answer cannot be finished: the connection must end without
		// its proper end, so the client sees it cut short. The server
		// does that on ErrAbortHandler, after the request is logged.
		ex.aborted = true
		if !errors.Is(err, context.Canceled) {
			ex.span.AddEvent("answer cut short", trace.WithAttributes(attribute.String("hopgate.reason", err.Error())))
			p.log.Debug("copying the answer failed", "route", ex.route.Name, "error", err)
		}
		return
	}
	resp.Body.Close() // now, for resp.Trailer to be complete

	if len(resp.Trailer) == 0 {
		return
	}
	_ = http.NewResponseController(w).Flush() // trailers need a chunked answer
	if len(resp.Trailer) == announced {
		copyHeader(wh, resp.Trailer)
		return
	}
	for k, vv := range resp.Trailer {
		wh[http.TrailerPrefix+k] = append(wh[http.TrailerPrefix+k], vv...)
	}
}

// outgoing makes the request sent to instances out of the client's r, in
// the exchange: it and its URL are copies there, not allocations. Its
// header is r's own, the hop-by-hop fields removed and the forwarding
// ones set.
func (p *Proxy) outgoing(r *http.Request, ex *exchange) *http.Request {
	ex.out = *r
	out := &ex.out
	ex.outURL = *r.URL
	out.URL = &ex.outURL
	if r.ContentLength == 0 {
		out.Body = nil
	}
	out.Close = false
	h := out.Header
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHopByHop(h)
	if trailers {
		h["Te"] = []string{"trailers"}
	}
	p.prepare(out, r, ex)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // none, rather than the transport's own
	}
	return out
}

// clientTraceKey is the key httptrace keeps a request's ClientTrace
// under. The type is unexported; httptrace.ContextClientTrace tells it by
// asking a context for it. The exchange answers for it itself (Value), so
// the hook for informational answers costs no context of its own, and no
// function value until a transport asks for it.
var clientTraceKey = func() any {
	var probe keyProbe
	httptrace.ContextClientTrace(&probe)
	return probe.key
}()

// keyProbe is a context that remembers the key it was asked for.
type keyProbe struct {
	context.Context
	key any
}

func (k *keyProbe) Value(key any) any { k.key = key; return nil }

// clientTrace is the request's httptrace hooks: 1xx answers pass on to
// the client. Nil before forward has a client to pass them to (an
// upgrade's are ReverseProxy's own).
func (ex *exchange) clientTrace() *httptrace.ClientTrace {
	ex.hintsMu.Lock()
	defer ex.hintsMu.Unlock()
	if ex.hintsTo == nil {
		return nil
	}
	if ex.hints.Got1xxResponse == nil {
		ex.hints.Got1xxResponse = ex.passHint
	}
	return &ex.hints
}

// passHint passes an informational answer (103 Early Hints) to the
// client, unless the final answer is on its way.
func (ex *exchange) passHint(code int, header textproto.MIMEHeader) error {
	ex.hintsMu.Lock()
	defer ex.hintsMu.Unlock()
	if ex.hintsFinal {
		return nil
	}
	wh := ex.hintsTo.Header()
	copyHeader(wh, http.Header(header))
	ex.hintsTo.WriteHeader(code)
	clear(wh)
	return nil
}

// prepare shapes the outgoing request out of the client's in: the path the
// instance sees, the forwarding headers. A trusted proxy's forwarding
// chain is extended and its view of host and scheme kept; anyone else's
// is replaced by the gateway's own. out's header may be in's own map.
func (p *Proxy) prepare(out, in *http.Request, ex *exchange) {
	out.URL.Scheme = "http"
	out.URL.Host = ex.route.Service // replaced per attempt
	out.URL.RawQuery = cleanQuery(out.URL.RawQuery)
	if s := ex.route.Strip; s != "" {
		out.URL.Path, out.URL.RawPath = stripPrefix(out.URL.Path, out.URL.RawPath, s)
	}
	out.Host = in.Host

	h := out.Header
	var chain, forwarded []string
	var fwdHost, fwdProto string
	if ex.trusted {
		chain, forwarded = in.Header["X-Forwarded-For"], in.Header["Forwarded"]
		fwdHost, fwdProto = first(in.Header, "X-Forwarded-Host"), first(in.Header, "X-Forwarded-Proto")
	}
	// The values share the exchange's array: no allocation of their own.
	vals := &ex.fwdVals
	one := func(i int, v string) []string { vals[i] = v; return vals[i : i+1 : i+1] }
	clientIP, _, err := net.SplitHostPort(in.RemoteAddr)
	switch {
	case err != nil:
		delete(h, "X-Forwarded-For")
	case len(chain) > 0:
		h["X-Forwarded-For"] = one(0, strings.Join(chain, ", ")+", "+clientIP)
	default:
		h["X-Forwarded-For"] = one(0, clientIP)
	}
	if forwarded != nil {
		h["Forwarded"] = forwarded
	} else {
		delete(h, "Forwarded")
	}
	if fwdHost == "" {
		fwdHost = in.Host
	}
	if fwdProto == "" {
		fwdProto = scheme(in)
	}
	h["X-Forwarded-Host"] = one(1, fwdHost)
	h["X-Forwarded-Proto"] = one(2, fwdProto)
	if err == nil && first(h, "X-Real-Ip") == "" {
		h["X-Real-Ip"] = one(3, clientIP)
	}
}

// cleanQuery drops what url.ParseQuery would not read (semicolons,
// broken escapes) from a query, as ReverseProxy does: an instance and the
// gateway must not read two different sets of parameters.
func cleanQuery(q string) string {
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencode(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencode(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencode(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// copyHeader adds src's values to dst. The names come canonical from the
// parser; a name new to dst takes src's slice, which is not used again.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		if cur, ok := dst[k]; ok {
			dst[k] = append(cur, vv...)
		} else {
			dst[k] = vv
		}
	}
}

// streams reports, from its length and Content-Type, whether an answer
// is a stream whose every piece must reach the client at once:
// server-sent events, or a body of unknown length.
func streams(length int64, contentType string) bool {
	if length == -1 {
		return true
	}
	ct, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// copyBody copies an answer's body to the client, flushing every piece
// when it streams.
func copyBody(w http.ResponseWriter, body io.Reader, stream bool) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var rc *http.ResponseController
	if stream {
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if rc != nil {
				if err := rc.Flush(); err != nil {
					return err
				}
			}
		}
		switch {
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			return rerr
		}
	}
}
