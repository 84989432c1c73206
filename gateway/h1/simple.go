package h1

// The common head, parsed without net/http's reader.
//
// Nearly every request a proxy serves, and every answer it forwards, has
// the same shape: HTTP/1.1, its body's length in one Content-Length (or no
// body), and a handful of plain "Name: value" lines. net/http's readers
// spend more on such a head than on anything else a proxy does per request:
// a string per line and a second pass for the framing. The parsers here
// take exactly that shape, by rules no looser than net/http's, and nothing
// else: for any other head they take nothing and say so, and net/http's
// reader reads it by all of its rules. FuzzSimpleRequest and
// FuzzSimpleAnswer hold each to net/http's result.

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// SimpleAnswer parses the answer to req at the head of br when it has the
// common shape (a final status with a body, one Content-Length), waiting
// for the rest of its head while the buffer has room. It returns nil,
// having consumed nothing, for any other answer and on a read error,
// which the caller's http.ReadResponse then meets and reports in its own
// terms.
func SimpleAnswer(br *bufio.Reader, req *http.Request) *http.Response {
	return simpleAnswer(br, req, nil)
}

// SimpleAnswerHead is SimpleAnswer for an answer that a proxy relays to
// a client h1 serves: its head is kept in *head as the lines it came in,
// for RelayHead, and the answer returned has no Header. A head of the
// common shape that cannot be relayed so (its Connection names fields to
// drop beside close and keep-alive, or the lines to drop are scattered
// over more than a few places) is taken as SimpleAnswer takes it, with a
// Header; any other answer is not taken, as by SimpleAnswer.
func SimpleAnswerHead(br *bufio.Reader, req *http.Request, head *AnswerHead) *http.Response {
	return simpleAnswer(br, req, head)
}

// simpleAnswer is SimpleAnswer, keeping the head in relay when it is not
// nil.
func simpleAnswer(br *bufio.Reader, req *http.Request, relay *AnswerHead) *http.Response {
	if req.Method == http.MethodHead {
		return nil // a body the head announces but never sends
	}
	for {
		buf, _ := br.Peek(br.Buffered())
		if n := headLen(buf); n > 0 {
			resp := parseSimpleAnswer(buf[:n], req, relay, nil)
			if resp != nil {
				_, _ = br.Discard(n)
				resp.Body = sized(br, resp.ContentLength)
			}
			return resp
		}
		if len(buf) == br.Size() {
			return nil // a head larger than the buffer
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil
		}
	}
}

// parseSimpleAnswer parses a whole answer head, its blank line included,
// into resp, or a new Response when resp is nil; or returns nil when it is
// not of the common shape. With relay, the header lines are kept there,
// not in a Header.
func parseSimpleAnswer(head []byte, req *http.Request, relay *AnswerHead, resp *http.Response) *http.Response {
	line, rest, ok := splitHead(head)
	// "HTTP/1.1 200 OK": a final status that has a body.
	if !ok || len(line) < 12 || line[:9] != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') {
		return nil
	}
	code := 0
	for _, c := range []byte(line[9:12]) {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	status := line[9:] // "200 OK"
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified || !httpguts.ValidHeaderFieldValue(status) {
		return nil
	}
	h, ok := parseSimpleHeader(rest, relay, 0, nil)
	if !ok && h.unrelayable {
		// The same lines into a Header, from the same copy of the head.
		relay = nil
		h, ok = parseSimpleHeader(rest, nil, 0, nil)
	}
	if !ok || h.length < 0 {
		return nil // no length: it ends with the connection, net/http's to read
	}
	if h.closes && h.header != nil {
		delete(h.header, "Connection") // as net/http does with the close it heeds
	}
	if relay != nil {
		relay.Code, relay.Length = code, h.length
	}
	if resp == nil {
		resp = new(http.Response)
	}
	*resp = http.Response{
		Status:        status,
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h.header,
		ContentLength: h.length,
		Close:         h.closes,
		Request:       req,
	}
	return resp
}

// parseSimpleRequest parses a whole request head, its blank line
// included, whose body (if any) follows in br, into req; or reports false
// when the head is not of the common shape: an origin-form target
// ("/path"), no CONNECT, HTTP/1.1, one Host, a Content-Length or no body.
// The Header is reuse, emptied, when it is not nil.
func parseSimpleRequest(head []byte, br *bufio.Reader, req *http.Request, reuse http.Header) bool {
	line, rest, ok := splitHead(head)
	if !ok {
		return false
	}
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || !httpguts.ValidHeaderFieldName(method) ||
		method == http.MethodConnect || !strings.HasPrefix(target, "/") {
		return false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return false
	}
	h, ok := parseSimpleHeader(rest, nil, requestHeaderRoom, reuse)
	if !ok || h.hosts > 1 || h.pragma {
		return false
	}
	length := max(h.length, 0) // no framing: no body
	host := first(h.header["Host"])
	delete(h.header, "Host") // it is req.Host, as http.ReadRequest has it
	*req = http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h.header,
		Body:          sized(br, length),
		ContentLength: length,
		Close:         h.closes,
		Host:          host,
		RequestURI:    target,
	}
	return true
}

// splitHead returns a head's first line and the header lines after it,
// each ending in CRLF, in one string: every value is a slice of it. ok is
// false for a head that ends in a bare LF, which is not of the common
// shape (a bare LF inside it fails the checks of the line it is in).
func splitHead(head []byte) (line, rest string, ok bool) {
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return "", "", false
	}
	s := string(head[:len(head)-2])
	line, rest, _ = strings.Cut(s, "\r\n")
	return line, rest, true
}

// simpleHeader is what parseSimpleHeader finds.
type simpleHeader struct {
	header http.Header
	length int64 // -1: no Content-Length
	closes bool  // Connection: close
	hosts  int   // Host lines
	pragma bool  // a Pragma line, which net/http rewrites
	// unrelayable: the lines are of the common shape so far, but the
	// relay cannot keep them (see AnswerHead.keep).
	unrelayable bool
}

// requestHeaderRoom is the room a request's Header is made with beyond
// its lines: a proxy adds its four forwarding headers (X-Forwarded-For,
// -Host and -Proto, X-Real-Ip), less the Host line, which is req.Host and
// not in the Header. A map that outgrows the size it was made for is made
// again, larger.
const requestHeaderRoom = 3

// parseSimpleHeader parses header lines, each ending in CRLF, when every
// one is a plain "Name: value" (a token, then text without control
// characters but HTAB), none is Transfer-Encoding or Trailer, and there is
// at most one valid Content-Length. The Header is made with room for that
// many more fields, or is reuse, emptied, when that is not nil. With
// relay, the lines are kept there (see keep) and no Header is made.
func parseSimpleHeader(lines string, relay *AnswerHead, room int, reuse http.Header) (simpleHeader, bool) {
	h := simpleHeader{length: -1}
	var values []string
	if relay == nil {
		n := strings.Count(lines, "\r\n")
		if reuse != nil {
			clear(reuse)
			h.header = reuse
		} else {
			h.header = make(http.Header, n+room)
		}
		values = make([]string, n) // one array for the values, as textproto does
	} else {
		*relay = AnswerHead{lines: lines}
	}
	for i, end := 0, 0; end < len(lines); i++ {
		start := end
		line, _, _ := strings.Cut(lines[start:], "\r\n")
		end += len(line) + 2
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return h, false
		}
		value = textproto.TrimString(value)
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Transfer-Encoding", "Trailer":
			return h, false
		case "Content-Length":
			if h.length >= 0 {
				return h, false
			}
			// Digits only, as RFC 9110 (8.6) has it: no sign, no space.
			n, err := strconv.ParseUint(value, 10, 63)
			if err != nil {
				return h, false
			}
			h.length = int64(n)
		case "Connection":
			h.closes = h.closes || httpguts.HeaderValuesContainsToken([]string{value}, "close")
		case "Host":
			h.hosts++
		case "Pragma":
			h.pragma = true
		}
		if relay != nil {
			if !relay.keep(key, value, start, end) {
				h.unrelayable = true
				return h, false
			}
			continue
		}
		values[i] = value
		if vv, ok := h.header[key]; ok {
			h.header[key] = append(vv, value)
		} else {
			h.header[key] = values[i : i+1 : i+1]
		}
	}
	return h, true
}

func first(vv []string) string {
	if len(vv) > 0 {
		return vv[0]
	}
	return ""
}

// sized is a body of n bytes read from br: http.NoBody when there are
// none.
func sized(br *bufio.Reader, n int64) io.ReadCloser {
	if n == 0 {
		return http.NoBody
	}
	return &sizedBody{br: br, left: n}
}

// sizedBody is a body of known length read from a connection's buffer.
// Its last bytes come with io.EOF, so the connection goes on without
// another read; a connection that ends early is io.ErrUnexpectedEOF.
type sizedBody struct {
	br   *bufio.Reader
	left int64
}

func (b *sizedBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		return n, io.EOF
	case err == io.EOF:
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *sizedBody) Close() error { return nil }
