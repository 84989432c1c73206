package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of one request. It also implements
// what http.ResponseController looks for: FlushError, Hijack and the
// read and write deadlines.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header // reused: cleared for every request
	// body wraps req.Body when there is one. It is made anew for every
	// request: a transport may still close the last one after its
	// handler returned.
	body *body

	status   int   // 0 until WriteHeader
	clen     int64 // the declared Content-Length; -1 when unknown
	written  int64
	headSent bool
	chunked  bool
	noBody   bool // a HEAD answer: body writes are dropped
	// held is the start of an answer of unknown length, kept until
	// bufferBeforeChunking so that a short one gets a Content-Length.
	held     []byte
	trailers []string // announced in the Trailer header
	// relay is the instance's head RelayHead was given, when relaying: its
	// lines go out before the header's.
	relay      AnswerHead
	relaying   bool
	closeAfter bool
	bodyLeft   bool // the request body was not read to its end
	expects100 bool // the client waits for 100 Continue before its body
	werr       error

	// The 100 Continue that a first read of the body sends, unless the
	// handler answered first. continueMu orders the two writers.
	continueMu  sync.Mutex
	canContinue atomic.Bool
}

// reset readies the connection's response for req.
func (w *response) reset(req *http.Request) {
	clear(w.header)
	w.req, w.body = req, nil
	w.status, w.clen, w.written = 0, -1, 0
	w.headSent, w.chunked, w.bodyLeft, w.expects100, w.relaying = false, false, false, false, false
	w.held, w.trailers, w.werr = w.held[:0], w.trailers[:0], nil
	w.noBody = req.Method == http.MethodHead
	w.closeAfter = req.Close || hasToken(req.Header["Connection"], "close")
	w.canContinue.Store(false)
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.c.hijacked {
		w.c.srv.logger().Warn("WriteHeader on a hijacked connection")
		return
	}
	if w.status != 0 {
		return // superfluous, as in Go's server: the first one counts
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 101 || code > 199 {
		w.noContinue()
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// Informational answers (103 Early Hints) go out at once, with
		// the headers set so far.
		w.writeStatusLine(code)
		w.writeHeaders(w.header, func(k string) bool { return k == "Content-Length" || k == "Transfer-Encoding" })
		w.bw().WriteString("\r\n")
		w.noteErr(w.bw().Flush())
		return
	}
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.clen = v
		} else {
			w.c.srv.logger().Warn("invalid Content-Length from the handler, dropped", "value", cl)
			w.header.Del("Content-Length")
		}
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	w.noContinue()
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.clen != -1 && w.written > w.clen {
		return 0, http.ErrContentLength
	}
	if !w.headSent {
		if w.clen == -1 && len(w.held)+len(p) <= bufferBeforeChunking {
			w.held = append(w.held, p...)
			return len(p), nil
		}
		w.sendHead(false)
	}
	return w.writeBody(p)
}

// FlushError sends the head, if not yet sent, and all written so far.
func (w *response) FlushError() error {
	if w.c.hijacked {
		return http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead(false)
	}
	w.noteErr(w.bw().Flush())
	return w.werr
}

func (w *response) Flush() { _ = w.FlushError() }

// Hijack hands the connection to the handler (WebSocket): the server
// forgets it.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.headSent {
		if err := c.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	c.stopWatch()
	c.hijacked = true
	if c.in.hasByte {
		// The byte the watch read ahead joins what is buffered.
		_, _ = c.br.Peek(c.br.Buffered() + 1)
	}
	_ = c.rwc.SetDeadline(time.Time{})
	c.srv.untrackConn(c)
	return c.rwc, bufio.NewReadWriter(c.br, bufio.NewWriter(c.rwc)), nil
}

func (w *response) SetReadDeadline(t time.Time) error {
	w.c.deadlineMoved.Store(true)
	return w.c.rwc.SetReadDeadline(t)
}
func (w *response) SetWriteDeadline(t time.Time) error { return w.c.rwc.SetWriteDeadline(t) }

func (w *response) bw() *bufio.Writer { return w.c.bw }

func (w *response) noteErr(err error) {
	if err != nil && w.werr == nil {
		w.werr = err
	}
}

// noContinue stops a later body read from sending 100 Continue: an
// answer is on its way.
func (w *response) noContinue() {
	if w.canContinue.Load() {
		w.continueMu.Lock()
		w.canContinue.Store(false)
		w.continueMu.Unlock()
	}
}

// sendContinue answers Expect: 100-continue, on the body's first read.
func (w *response) sendContinue() {
	w.continueMu.Lock()
	defer w.continueMu.Unlock()
	if w.canContinue.Load() {
		w.canContinue.Store(false)
		w.bw().WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		w.noteErr(w.bw().Flush())
	}
}

// sendHead writes the status line and headers, choosing the framing of
// the body: its Content-Length when known (or, when the handler is done,
// the length of what it wrote), else chunked, else (HTTP/1.0) the end of
// the connection. What it writes first of all is what the handler wrote
// of the body before.
func (w *response) sendHead(handlerDone bool) {
	w.headSent = true
	h, req := w.header, w.req
	keepAlives := w.c.srv.keepAlives()

	declared := false // trailers
	for _, v := range h["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(name))
				declared = true
			}
		}
	}
	te := first(h["Transfer-Encoding"])
	var setLength bool
	// Trailers, declared or not, need a chunked answer: the length of a
	// finished one is set only without them. The scan for undeclared ones
	// comes last, as most answers are decided before it.
	if handlerDone && !declared && te == "" && bodyAllowed(w.status) && w.clen == -1 && (!w.noBody || len(w.held) > 0) &&
		!hasTrailerPrefix(h) {
		w.clen, setLength = int64(len(w.held)), true
	}

	// Keep-alive: HTTP/1.1 unless either side said close; HTTP/1.0 only
	// when asked and the answer's end is known.
	var keepAlive10 bool
	if !req.ProtoAtLeast(1, 1) {
		keepAlive10 = hasToken(req.Header["Connection"], "keep-alive") && (w.noBody || w.clen != -1 || !bodyAllowed(w.status))
		w.closeAfter = w.closeAfter || !keepAlive10
	}
	if hasToken(h["Connection"], "close") || !keepAlives {
		w.closeAfter = true
	}
	if w.expects100 && !w.body.sawEOF.Load() {
		// The client waits for 100 Continue that will not come: what it
		// sends next may be the body or another request.
		w.closeAfter = true
	}
	if !w.closeAfter {
		// Read away the rest of the body before answering: some
		// clients send it all before reading, and would deadlock.
		w.drainBody()
	}

	skip := func(k string) bool {
		switch k {
		case "Transfer-Encoding":
			return true
		case "Content-Length":
			return setLength || w.relaying || w.clen == -1 || !bodyAllowed(w.status)
		case "Connection":
			return w.closeAfter && w.status != http.StatusSwitchingProtocols
		case "Content-Type":
			return w.status == http.StatusNotModified
		}
		return strings.HasPrefix(k, http.TrailerPrefix)
	}

	w.writeStatusLine(w.status)
	bw := w.bw()
	if w.relaying {
		w.relay.writeLines(bw)
	}
	w.writeHeaders(h, skip)
	if _, ok := h["Date"]; !ok && !(w.relaying && w.relay.hasDate) {
		bw.WriteString("Date: ")
		bw.Write(httpDate())
		bw.WriteString("\r\n")
	}
	switch {
	case w.noBody || !bodyAllowed(w.status):
	case w.clen != -1:
		if setLength || w.relaying {
			bw.WriteString("Content-Length: ")
			writeInt(bw, w.clen, 10)
			bw.WriteString("\r\n")
		}
	case req.ProtoAtLeast(1, 1) && te != "identity":
		w.chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		// No length and no chunking: the body ends with the connection.
		w.closeAfter = true
	}
	switch {
	case w.closeAfter && w.status != http.StatusSwitchingProtocols:
		if req.ProtoAtLeast(1, 1) {
			bw.WriteString("Connection: close\r\n")
		}
	case keepAlive10:
		if _, ok := h["Connection"]; !ok {
			bw.WriteString("Connection: keep-alive\r\n")
		}
	}
	bw.WriteString("\r\n")
	if len(w.held) > 0 {
		held := w.held
		w.held = w.held[:0]
		_, _ = w.writeBody(held)
		w.held = held[:0]
	}
}

// hasTrailerPrefix reports whether h holds a trailer set the net/http
// way, under a name with http.TrailerPrefix.
func hasTrailerPrefix(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func (w *response) writeStatusLine(code int) {
	bw := w.bw()
	bw.Write(appendStatusLine(bw.AvailableBuffer(), w.req.ProtoAtLeast(1, 1), code))
}

// appendStatusLine appends the status line of an answer with code, in
// HTTP/1.1 or HTTP/1.0.
func appendStatusLine(dst []byte, http11 bool, code int) []byte {
	if http11 {
		dst = append(dst, "HTTP/1.1 "...)
	} else {
		dst = append(dst, "HTTP/1.0 "...)
	}
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	if text := http.StatusText(code); text != "" {
		dst = append(dst, text...)
	} else {
		dst = append(dst, "status code "...)
		dst = strconv.AppendInt(dst, int64(code), 10)
	}
	return append(dst, "\r\n"...)
}

// writeInt writes v in base to bw, formatted in bw's own free space: a
// number formatted on the stack would be moved to the heap, as bw may
// hand it to the connection's Write.
func writeInt(bw *bufio.Writer, v int64, base int) {
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), v, base))
}

// writeHeaders writes h but for the names skip is true of. As in Go's
// server, invalid names are dropped, and line breaks in values turn into
// spaces: a handler cannot split the answer.
func (w *response) writeHeaders(h http.Header, skip func(string) bool) {
	bw := w.bw()
	for k, vv := range h {
		if skip(k) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(headerValue(v))
			bw.WriteString("\r\n")
		}
	}
}

var newlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

func headerValue(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		v = newlineToSpace.Replace(v)
	}
	return textproto.TrimString(v)
}

// writeBody writes p of a body whose head is sent.
func (w *response) writeBody(p []byte) (int, error) {
	if w.noBody {
		return len(p), nil // a HEAD answer: written for the count only
	}
	bw := w.bw()
	if w.chunked {
		writeInt(bw, int64(len(p)), 16)
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.noteErr(err)
	return n, err
}

// finish completes the answer after the handler returned, and decides
// whether the connection can carry another request.
func (w *response) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead(true)
	}
	bw := w.bw()
	if w.chunked {
		bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				w.writeTrailer(k, v)
			}
		}
		for k, vv := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vv {
					w.writeTrailer(name, v)
				}
			}
		}
		bw.WriteString("\r\n")
	}
	w.noteErr(bw.Flush())
	if !w.noBody && bodyAllowed(w.status) && w.clen != -1 && w.written != w.clen {
		w.closeAfter = true // an answer shorter than announced: the client waits for the rest
	}
	if !w.closeAfter {
		w.drainBody()
	}
}

func (w *response) writeTrailer(k, v string) {
	if !httpguts.ValidHeaderFieldName(k) {
		return
	}
	bw := w.bw()
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(headerValue(v))
	bw.WriteString("\r\n")
}

// drainBody reads away what the handler left of the request body, up to
// maxPostHandlerRead; past it, or on an error, the connection closes.
func (w *response) drainBody() {
	b := w.body
	if b == nil || b.sawEOF.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed.Load() {
		if _, err := io.CopyN(io.Discard, b.rc, maxPostHandlerRead+1); err == io.EOF {
			b.sawEOF.Store(true)
			return
		}
	}
	// Closed by the handler before its end, too long, or broken: what
	// follows on the connection is not the next request.
	w.closeAfter, w.bodyLeft = true, true
}

// bodyRead reports whether the handler is done reading the connection:
// the request has no body or it was read to its end.
func (w *response) bodyRead() bool {
	return w.body == nil || w.body.sawEOF.Load()
}

func bodyAllowed(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

// body is the request body the handler reads. It sends 100 Continue on
// the first read when the client waits for it, and its Close does not
// read the rest (net/http's would read all of it): the server decides.
type body struct {
	rc     io.ReadCloser
	res    *response
	mu     sync.Mutex // a transport may read it from another goroutine
	sawEOF atomic.Bool
	closed atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.res.canContinue.Load() {
		b.res.sendContinue()
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.sawEOF.Store(true)
	}
	return n, err
}

func (b *body) Close() error {
	b.closed.Store(true)
	return nil
}

func hasToken(values []string, token string) bool {
	return len(values) > 0 && httpguts.HeaderValuesContainsToken(values, token)
}

// httpDate is the Date header's value, made once a second.
func httpDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.sec == sec {
		return d.text
	}
	d := &dateText{sec: sec, text: now.UTC().AppendFormat(nil, http.TimeFormat)}
	cachedDate.Store(d)
	return d.text
}

type dateText struct {
	sec  int64
	text []byte
}

var cachedDate atomic.Pointer[dateText]
