package gateway

import (
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/hopgate/hopgate/gateway/balance"
)

// loopResume is what a loop did of a request it hands over before its
// end: the goroutine path goes on from there, as if it had done it
// itself (see Proxy.ServeHTTP and Proxy.attempt).
type loopResume struct {
	route       *Route
	start       time.Time
	span        trace.Span // the server span
	ep          *balance.Endpoint
	attemptAt   time.Time
	attemptSpan trace.Span
	// up is the attempt's connection, its answer unread, when one came;
	// else err says why the attempt failed.
	up  net.Conn
	err error
}
