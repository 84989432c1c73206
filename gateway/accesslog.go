package gateway

import (
	"context"
	"time"

	"github.com/hopgate/hopgate/telemetry"
)

// logRequest writes the access log line of one request: method, host,
// path, status, duration (and duration_ms), attempts, route, service,
// upstream, trace_id and span_id; at info level with
// ProxyOptions.AccessLog, else at debug level.
func (p *Proxy) logRequest(ctx context.Context, args []any) {
	if !p.accessLog && !p.log.IsDebug() {
		return
	}
	for i := 0; i+1 < len(args); i += 2 {
		if d, ok := args[i+1].(time.Duration); ok && args[i] == "duration" {
			// Readable in text ("1.2ms"), a number in JSON.
			args[i+1] = d.String()
			args = append(args, "duration_ms", float64(d.Microseconds())/1000)
			break
		}
	}
	args = append(args, telemetry.TraceArgs(ctx)...)
	if p.accessLog {
		p.log.Info("request", args...)
		return
	}
	p.log.Debug("request", args...)
}
