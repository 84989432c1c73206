package telemetry

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"
)

// LogFlags are the logging options every binary shares.
type LogFlags struct {
	Level hclog.Level
	JSON  bool
}

// RegisterLogFlags adds -log-level and -log-format to fs. Their defaults come
// from HOPGATE_LOG_LEVEL and HOPGATE_LOG_FORMAT, so containers can set them
// without touching the command line; a bad value there is an error naming
// the variable, a bad flag value fails fs.Parse.
func RegisterLogFlags(fs *flag.FlagSet) (*LogFlags, error) {
	lf := &LogFlags{Level: hclog.Info}
	setLevel := func(s string) error {
		l := hclog.LevelFromString(s)
		if l == hclog.NoLevel || l == hclog.Off {
			return errors.New("want trace, debug, info, warn or error")
		}
		lf.Level = l
		return nil
	}
	setFormat := func(s string) error {
		switch s {
		case "text":
			lf.JSON = false
		case "json":
			lf.JSON = true
		default:
			return errors.New("want text or json")
		}
		return nil
	}
	if v := os.Getenv("HOPGATE_LOG_LEVEL"); v != "" {
		if err := setLevel(v); err != nil {
			return nil, fmt.Errorf("HOPGATE_LOG_LEVEL=%q: %v", v, err)
		}
	}
	if v := os.Getenv("HOPGATE_LOG_FORMAT"); v != "" {
		if err := setFormat(v); err != nil {
			return nil, fmt.Errorf("HOPGATE_LOG_FORMAT=%q: %v", v, err)
		}
	}
	fs.Func("log-level", "log `level`: trace, debug, info, warn, error (default info, or $HOPGATE_LOG_LEVEL)", setLevel)
	fs.Func("log-format", "log `format`: text or json (default text, or $HOPGATE_LOG_FORMAT)", setFormat)
	return lf, nil
}

// NewLogger returns the root logger of a binary, writing to w.
func NewLogger(name string, lf *LogFlags, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      lf.Level,
		JSONFormat: lf.JSON,
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
