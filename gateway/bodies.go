package gateway

// Bodies and writers that wrap a request or response for one purpose each.

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hopgate/hopgate/gateway/balance"
	"github.com/hopgate/hopgate/gateway/h1"
	"go.opentelemetry.io/otel/trace"
)

// attemptBody lets a streamed request body serve several attempts: the
// transport closes a body when an attempt fails, but a failed dial read
// nothing, so the body is still whole for the next instance. read records
// whether that is still true.
type attemptBody struct {
	io.ReadCloser
	read atomic.Bool // written by the transport's writer goroutine
	// bad is set when the client's body itself was malformed (a broken
	// chunk), so the answer is the client's fault, a 400.
	bad atomic.Bool
}

func (b *attemptBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !errors.As(err, new(*http.MaxBytesError)) {
		b.bad.Store(true)
	}
	return n, err
}

// Close does nothing: after the handler, the server reads away what is left
// of the client's body, or closes the connection when that is too much or
// the body broke.
func (b *attemptBody) Close() error { return nil }

// attemptResponse is an answer's body on its way to the client: each read
// restarts the idle timeout, so a stalled instance does not hold the
// client forever while a stream that keeps flowing lives as long as it
// likes; closing it ends, once, the attempt: its span, its in-flight
// count and its context.
type attemptResponse struct {
	io.ReadCloser
	ex       *exchange
	ep       *balance.Endpoint
	answered time.Time     // when the answer's headers came
	rtt      time.Duration // from the attempt's start to them
	status   int
	span     trace.Span
	try      *tryTimer
	once     sync.Once
}

func (b *attemptResponse) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && err == nil { // at the end, there is nothing left to wait for
		b.ex.bodyFlowed()
	}
	return n, err
}

func (b *attemptResponse) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.end)
	return err
}

func (b *attemptResponse) end() {
	// The latency sample is the headers' rtt, taken when they came.
	b.ep.Stats.EndAt(b.answered, b.rtt, b.status, false)
	b.span.End()
	b.try.end()
}

// statusRecorder remembers the status code for the span and the access log.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 && code >= 200 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// relayHead passes head to h1 as it came, and reports false when the
// writer underneath is not h1's.
func (s *statusRecorder) relayHead(head *h1.AnswerHead) bool {
	relay, ok := s.ResponseWriter.(interface{ RelayHead(*h1.AnswerHead) })
	if !ok {
		return false
	}
	if s.code == 0 {
		s.code = head.Code
	}
	relay.RelayHead(head)
	return true
}

// Unwrap lets http.ResponseController reach Flush and Hijack underneath.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
