package h1

// For a server that reads and writes its connections itself, on event
// loops: the same parsers and the same answer heads as this package's
// server, over byte slices rather than a connection's buffers. What such a
// server does not take, it hands to this package's server (Adopt),
// which then answers it by all of its rules.

import (
	"net"
	"net/http"
	"strconv"
)

// HeadLen returns the length of the head at the start of buf, blank line
// included, or 0 when it has not all come.
func HeadLen(buf []byte) int { return headLen(buf) }

// MaxHeadBytes is the largest request head the server reads: its
// MaxHeaderBytes, with Go's slack for the request line.
func (s *Server) MaxHeadBytes() int { return s.maxHeadBytes() }

// ParseBodiless parses a whole request head of the common shape (see
// simple.go) for a request without a body into req. It reports false,
// leaving req to be overwritten, for any other head, a request with a
// body included: such a request is the server's to read. The Header
// req already has, if any, is emptied and reused: the caller vouches
// that nothing else holds it.
func ParseBodiless(head []byte, req *http.Request) bool {
	return parseSimpleRequest(head, nil, req, req.Header) && req.ContentLength == 0
}

// ParseAnswer parses a whole answer head to req of the common shape, its
// blank line included, into resp, keeping its lines in relay as
// SimpleAnswerHead does. It returns resp, or nil for any other head.
func ParseAnswer(head []byte, req *http.Request, relay *AnswerHead, resp *http.Response) *http.Response {
	if req.Method == http.MethodHead {
		return nil
	}
	return parseSimpleAnswer(head, req, relay, resp)
}

// AppendRelayHead appends to dst the head this package's server writes
// for an answer begun with RelayHead(head) and nothing set in its Header:
// the status line, the lines kept, a Date when the instance sent none,
// the length, and Connection: close when the connection ends after it.
func AppendRelayHead(dst []byte, head *AnswerHead, closeAfter bool) []byte {
	dst = appendStatusLine(dst, true, head.Code)
	dst = head.appendLines(dst)
	if !head.hasDate {
		dst = append(dst, "Date: "...)
		dst = append(dst, httpDate()...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, head.Length, 10)
	dst = append(dst, "\r\n"...)
	if closeAfter {
		dst = append(dst, "Connection: close\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// Handover is what comes with a connection an event loop hands over.
type Handover struct {
	// Requests counts the requests the loop served on the connection.
	Requests int64
	// Note is for the handler of the first request read, in Info.Note:
	// what the loop did of it before handing it over.
	Note any
}

// Adopt serves, on a goroutine of its own, a connection an event loop
// began and hands over, its unread input still to be read from rwc. It
// is tracked before Adopt returns, so a Shutdown that begins after waits
// for it. It reports false, having closed rwc, after Shutdown or Close.
func (s *Server) Adopt(rwc net.Conn, h Handover) bool {
	c := newConn(s, rwc)
	c.requests, c.note = h.Requests, h.Note
	if !s.trackConn(c) {
		rwc.Close()
		return false
	}
	go c.serve()
	return true
}

// KeepAlives reports whether connections are kept after their answer:
// not after Shutdown or Close, nor with keep-alives turned off.
func (s *Server) KeepAlives() bool { return s.keepAlives() }
