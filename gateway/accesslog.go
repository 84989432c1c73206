package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/hopgate/hopgate/telemetry"
)

// logRequest writes the access log line of one request: method, host,
// path, status, duration (and duration_ms), attempts, route, service,
// upstream, trace_id and span_id; at info level with
// ProxyOptions.AccessLog, else at debug level.
func (p *Proxy) logRequest(ctx context.Context, r *http.Request, ex *exchange, status int, start time.Time) {
	if !p.accessLog && !p.log.IsDebug() {
		return // the line's fields cost allocations: only for lines written
	}
	d := time.Since(start)
	args := []any{"method", r.Method, "host", r.Host, "path", r.URL.Path, "status", status,
		// Readable in text ("1.2ms"), a number in JSON.
		"duration", d.String(), "duration_ms", float64(d.Microseconds()) / 1000,
		"attempts", ex.attempts}
	if route := ex.route; route != nil {
		args = append(args, "route", route.Name, "service", route.Service)
	}
	if n := len(ex.tried); n > 0 {
		args = append(args, "upstream", ex.tried[n-1].Addr)
	}
	args = append(args, telemetry.TraceArgs(p.logContext(ctx, r.Header, ex.trusted))...)
	if p.accessLog {
		p.log.Info("request", args...)
		return
	}
	p.log.Debug("request", args...)
}
