package h1

// Relaying an answer head as it came.
//
// A proxy that reads an instance's answer into a Header, copies that into
// its client's answer and writes it out again does the same work three
// times, for lines it passes on unchanged. When both ends are HTTP/1.1
// and the answer has the common shape, the lines can go out as they came:
// SimpleAnswerHead keeps them, checked by the same rules as SimpleAnswer,
// with the ones a proxy must not pass on marked to drop, and RelayHead
// writes the rest.

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strings"
)

// maxRuns bounds the runs of consecutive kept lines an AnswerHead holds:
// every dropped line (the length, a hop-by-hop field) between kept ones
// starts another. A head of more runs is left to SimpleAnswer.
const maxRuns = 4

// AnswerHead is an instance's answer head in the common shape, kept as
// its lines rather than as a Header. SimpleAnswerHead fills it and
// RelayHead writes it.
type AnswerHead struct {
	Code   int   // the status
	Length int64 // the body's length, from its Content-Length

	lines       string       // the header lines, each ending in CRLF
	runs        [maxRuns]run // the parts of lines passed on
	nruns       int
	contentType string // the first Content-Type's value
	hasType     bool
	hasDate     bool
}

// run is lines[from:to], whole lines.
type run struct{ from, to int }

// IsHopByHop says whether a header, by its canonical name, belongs to one
// connection and is not passed on by a proxy: those of RFC 9110 (7.6.1),
// and the older ones proxies still drop.
func IsHopByHop(name string) bool {
	switch name {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// keep notes the header line lines[start:end], of the canonical name key:
// passed on, or dropped when it is the length (the writer sets its own)
// or hop-by-hop. It reports false for what a relay cannot drop by name
// alone, a Connection naming other fields, and for a head split in too
// many runs.
func (a *AnswerHead) keep(key, value string, start, end int) bool {
	switch {
	case key == "Connection":
		for token := range strings.SplitSeq(value, ",") {
			token = textproto.TrimString(token)
			if !strings.EqualFold(token, "close") && !strings.EqualFold(token, "keep-alive") && token != "" {
				return false
			}
		}
		return true
	case key == "Content-Length" || IsHopByHop(key):
		return true
	case key == "Date":
		a.hasDate = true
	case key == "Content-Type" && !a.hasType:
		a.contentType, a.hasType = value, true
	}
	if a.nruns > 0 && a.runs[a.nruns-1].to == start {
		a.runs[a.nruns-1].to = end
		return true
	}
	if a.nruns == maxRuns {
		return false
	}
	a.runs[a.nruns] = run{start, end}
	a.nruns++
	return true
}

// ContentType is the answer's Content-Type, "" when it has none.
func (a *AnswerHead) ContentType() string { return a.contentType }

// Header returns the lines passed on as a Header, for a writer that does
// not take the head as it is.
func (a *AnswerHead) Header() http.Header {
	h := make(http.Header)
	for _, r := range a.runs[:a.nruns] {
		for line := range strings.SplitSeq(strings.TrimSuffix(a.lines[r.from:r.to], "\r\n"), "\r\n") {
			name, value, _ := strings.Cut(line, ":")
			key := textproto.CanonicalMIMEHeaderKey(name)
			h[key] = append(h[key], textproto.TrimString(value))
		}
	}
	return h
}

// writeLines writes the lines passed on, through bw's buffer as they
// come (appendLines would need room for all of them at once).
func (a *AnswerHead) writeLines(bw *bufio.Writer) {
	for _, r := range a.runs[:a.nruns] {
		bw.WriteString(a.lines[r.from:r.to])
	}
}

// appendLines appends the lines passed on.
func (a *AnswerHead) appendLines(dst []byte) []byte {
	for _, r := range a.runs[:a.nruns] {
		dst = append(dst, a.lines[r.from:r.to]...)
	}
	return dst
}

// RelayHead begins the answer with an instance's head as
// SimpleAnswerHead kept it: its status and length, and its lines written
// as they came. What the handler set in Header goes out beside them. As
// with WriteHeader, only the first call counts.
func (w *response) RelayHead(head *AnswerHead) {
	if w.c.hijacked {
		w.c.srv.logger().Warn("RelayHead on a hijacked connection")
		return
	}
	if w.status != 0 {
		return
	}
	w.noContinue()
	w.status, w.clen = head.Code, head.Length
	w.relay, w.relaying = *head, true
}
