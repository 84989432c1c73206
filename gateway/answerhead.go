package gateway

// The common answer head, parsed without net/http's reader.
//
// Nearly every answer a proxy forwards looks the same: HTTP/1.1, a final
// status with a body, its length in one Content-Length, and a handful of
// plain "Name: value" lines. http.ReadResponse spends more on such a head
// than on anything else the upstream side does (a string per line, a
// second pass for the framing). simpleAnswer takes exactly that shape, by
// rules no looser than net/http's, and nothing else: for any other head it
// consumes nothing and says so, and http.ReadResponse reads it by all of
// its rules. FuzzSimpleAnswer holds the two to the same result.

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// simpleAnswer parses the answer to req at the head of br when it has the
// common shape and is already buffered, or waits for more of it while the
// buffer has room. It returns nil, having consumed nothing, for anything
// else and on a read error, which the caller's http.ReadResponse then
// meets and reports in its own terms.
func simpleAnswer(br *bufio.Reader, req *http.Request) *http.Response {
	if req.Method == http.MethodHead {
		return nil // a body the head announces but never sends
	}
	for {
		buf, _ := br.Peek(br.Buffered())
		if n := crlfHeadLen(buf); n > 0 {
			resp := parseSimpleAnswer(buf[:n], req)
			if resp != nil {
				_, _ = br.Discard(n)
				if resp.ContentLength > 0 {
					resp.Body = &sizedBody{br: br, left: resp.ContentLength}
				}
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

// crlfHeadLen returns the length of the head at the start of buf, blank
// line included, or 0 when it is not all there.
func crlfHeadLen(buf []byte) int {
	if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return 0
}

// parseSimpleAnswer parses a whole head (its blank line included), or
// returns nil when it is not of the common shape.
func parseSimpleAnswer(head []byte, req *http.Request) *http.Response {
	// One string for the whole head; the status and every value are
	// slices of it.
	s := string(head[:len(head)-2])
	line, rest, _ := strings.Cut(s, "\r\n")
	// "HTTP/1.1 200 OK": a final status that has a body.
	if len(line) < 12 || line[:9] != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') {
		return nil
	}
	code := 0
	for _, c := range []byte(line[9:12]) {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil
	}
	status := line[9:] // "200 OK"
	if !plainText(status) {
		return nil
	}

	lines := strings.Count(rest, "\r\n")
	header := make(http.Header, lines)
	values := make([]string, lines) // one array for the values, as textproto does
	length, closes := int64(-1), false
	for i := 0; rest != ""; i++ {
		line, rest, _ = strings.Cut(rest, "\r\n")
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) || !plainText(value) {
			return nil
		}
		value = textproto.TrimString(value)
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Transfer-Encoding", "Trailer":
			return nil
		case "Content-Length":
			if length >= 0 {
				return nil
			}
			if length = parseLength(value); length < 0 {
				return nil
			}
		case "Connection":
			closes = closes || httpguts.HeaderValuesContainsToken([]string{value}, "close")
		}
		values[i] = value
		if vv, ok := header[key]; ok {
			header[key] = append(vv, value)
		} else {
			header[key] = values[i : i+1 : i+1]
		}
	}
	if length < 0 {
		return nil // ends with the connection: net/http's to read
	}
	if closes {
		delete(header, "Connection") // as net/http does with the close it heeds
	}
	return &http.Response{
		Status:        status,
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          http.NoBody,
		ContentLength: length,
		Close:         closes,
		Request:       req,
	}
}

// plainText reports whether s holds no control character but HTAB: no
// CR or LF to split a line, no NUL.
func plainText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length value, or returns -1: digits only,
// as RFC 9110 (8.6) has it, and no more than fit an int64.
func parseLength(v string) int64 {
	if v == "" || len(v) > 18 {
		return -1
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// sizedBody is a body of known length read from a connection's buffer.
// Its last bytes come with io.EOF, so the connection is given back without
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
