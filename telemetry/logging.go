package telemetry

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"
)

// LogFlags are the logging options both binaries share. Defaults come from
// HOPGATE_LOG_LEVEL and HOPGATE_LOG_FORMAT so containers can set them
// without touching the command line.
type LogFlags struct {
	Level  string
	Format string
}

// RegisterLogFlags adds -log-level and -log-format to fs.
func RegisterLogFlags(fs *flag.FlagSet) *LogFlags {
	lf := &LogFlags{}
	fs.StringVar(&lf.Level, "log-level", envOr("HOPGATE_LOG_LEVEL", "info"),
		"log level: trace, debug, info, warn or error (env HOPGATE_LOG_LEVEL)")
	fs.StringVar(&lf.Format, "log-format", envOr("HOPGATE_LOG_FORMAT", "text"),
		"log format: text or json (env HOPGATE_LOG_FORMAT)")
	return lf
}

// Validate reports a bad level or format in one line.
func (lf *LogFlags) Validate() error {
	if hclog.LevelFromString(lf.Level) == hclog.NoLevel {
		return fmt.Errorf("invalid value %q for -log-level: want trace, debug, info, warn or error", lf.Level)
	}
	switch lf.Format {
	case "text", "json":
	default:
		return fmt.Errorf("invalid value %q for -log-format: want text or json", lf.Format)
	}
	return nil
}

// NewLogger returns the root logger of a binary, writing to w (stderr when
// nil). Call Validate first: an invalid level falls back to info.
func NewLogger(name string, lf *LogFlags, w io.Writer) hclog.Logger {
	if w == nil {
		w = os.Stderr
	}
	level := hclog.LevelFromString(lf.Level)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		JSONFormat: strings.EqualFold(lf.Format, "json"),
		Output:     w,
	})
}

// TraceArgs returns the trace_id and span_id of the span in ctx as log
// key/value pairs, or nil when ctx carries no valid span context. Request
// log lines append them so a log line leads straight to its trace.
func TraceArgs(ctx context.Context) []any {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []any{"trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String()}
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}
