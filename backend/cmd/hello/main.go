// Command hello is hopgate's demo backend: an HTTP service that registers
// itself with Consul (route tag gateway.route=/ by default) and answers
// "Hello from <instance-id>", or a JSON object with Accept: application/json.
//
// It listens on an ephemeral port by default and registers the port it got.
// On SIGTERM or SIGINT it deregisters, keeps answering for -drain while
// gateways converge, then shuts down letting in-flight requests finish.
//
// Exit codes: 0 clean stop, 1 runtime failure, 2 bad flags or configuration
// (with one line on stderr saying what was wrong).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/hopgate/hopgate/backend"
	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/telemetry"
)

const name = "hello"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		os.Exit(backend.Probe("hello", os.Args[2:], os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // from now on a second signal kills at once
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is the parsed command line.
type config struct {
	*backend.InstanceFlags
	listen  string
	drain   time.Duration
	version string
	faults  faults
	log     *telemetry.LogFlags
}

// faults make a hello misbehave on purpose, for resilience tests and demos
// of what the gateway does about it. /healthz is never affected: Consul
// still sees the instance as healthy, only the gateway's own passive health
// and latency-aware balancing can tell.
type faults struct {
	status  int           // answer every request with this status (0: normal)
	latency time.Duration // wait this long before answering
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, fs, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(fs, stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	consul, err := discovery.ConsulConfig()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}

	log := telemetry.NewLogger(name, cfg.log, stderr)

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		log.Error("cannot listen", "listen", cfg.listen, "error", err)
		return 1
	}
	reg, err := backend.NewRegistrar(consul, backend.Registration{
		Service: cfg.Service,
		ID:      cfg.ID,
		Address: cfg.Advertise,
		Port:    ln.Addr().(*net.TCPAddr).Port,
		Routes:  cfg.Routes,
		Meta:    map[string]string{backend.MetaVersion: cfg.version},
	}, log)
	if err != nil {
		_ = ln.Close()
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	// After NewRegistrar: the instance id needs the port.
	shutdownTelemetry, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: cfg.Service, InstanceID: reg.ID(), Version: cfg.version})
	if err != nil {
		_ = ln.Close()
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTelemetry(sctx); err != nil {
			log.Warn("telemetry shutdown", "error", err)
		}
	}()

	advertise := cfg.Advertise
	if advertise == "" {
		advertise = "auto (detected toward the Consul agent at each registration)"
	}
	log.Info("listening", "listen", ln.Addr().String(), "advertise", advertise, "id", reg.ID(),
		"service", cfg.Service, "routes", strings.Join(cfg.Routes, ", "), "version", cfg.version,
		"consul", consul.Address)

	srv := &http.Server{
		Handler: newHandler(info{
			Instance: reg.ID(),
			Service:  cfg.Service,
			Version:  cfg.version,
		}, cfg.faults, log),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	if err := backend.Serve(ctx, srv, ln, reg, backend.ServeOptions{
		Drain:           cfg.drain,
		ShutdownTimeout: 10 * time.Second,
	}); err != nil {
		log.Error("stopped with an error", "error", err)
		return 1
	}
	return 0
}

func parseFlags(args []string) (*config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := &config{}
	lf, err := telemetry.RegisterLogFlags(fs)
	if err != nil {
		return nil, fs, err
	}
	cfg.log = lf
	cfg.listen = ":0"
	fs.Func("listen", "`address` to listen on, host:port (default \":0\": any interface, an ephemeral port; the real port is registered)", func(s string) error {
		_, port, err := net.SplitHostPort(s)
		if err != nil {
			return errors.New("want host:port, e.g. :8081 or 127.0.0.1:0")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
		cfg.listen = s
		return nil
	})
	cfg.InstanceFlags = backend.RegisterInstanceFlags(fs, "hello")
	cfg.drain = 3 * time.Second
	fs.Func("drain", "`duration` to keep answering after deregistering on SIGTERM/SIGINT, while gateways converge (default 3s)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("want a duration such as 3s or 500ms")
		}
		if d < 0 {
			return errors.New("must not be negative")
		}
		cfg.drain = d
		return nil
	})
	fs.StringVar(&cfg.version, "version", backend.DefaultVersion(), "version `string` reported in the service meta and the JSON answer")
	fs.Func("fail-status", "answer every request but /healthz with this HTTP `status` (fault injection; default off)", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 || n > 599 {
			return errors.New("want an HTTP status from 100 to 599")
		}
		cfg.faults.status = n
		return nil
	})
	fs.Func("latency", "wait this `duration` before answering every request but /healthz (fault injection; default 0)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return errors.New("want a non-negative duration such as 50ms")
		}
		cfg.faults.latency = d
		return nil
	})

	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	if fs.NArg() > 0 {
		return nil, fs, fmt.Errorf("unexpected argument %q (flags only; see -h)", fs.Arg(0))
	}
	if err := cfg.Check(); err != nil {
		return nil, fs, err
	}
	return cfg, fs, nil
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, `Usage: %s [flags]

hopgate's demo backend. Registers with the Consul agent named by the standard
CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT... variables and answers
"Hello from <instance-id>" (JSON with Accept: application/json). /healthz is
its health check.

Flags:
`, name)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// info is what the hello answer reports.
type info struct {
	Instance string `json:"instance"`
	Service  string `json:"service"`
	Version  string `json:"version"`
	TraceID  string `json:"trace_id"`
}

// newHandler serves the hello answer on every path but /healthz, inside an
// OpenTelemetry server span that continues the caller's trace (traceparent,
// read by the global propagator). Health checks leave no spans. Each answer
// is logged at debug level with its trace and span IDs. GET /metrics serves
// the request metrics (Prometheus, OpenMetrics with trace-ID exemplars).
func newHandler(in info, f faults, log hclog.Logger) http.Handler {
	mux := http.NewServeMux()
	metrics := telemetry.NewHTTPMetrics(name)
	mux.Handle("GET /metrics", metrics.Handler())
	internal := func(r *http.Request) bool { return r.URL.Path == "/healthz" || r.URL.Path == "/metrics" }
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		if f.latency > 0 {
			select {
			case <-time.After(f.latency):
			case <-r.Context().Done():
				return
			}
		}
		if f.status != 0 {
			w.WriteHeader(f.status)
		}
		sc := trace.SpanContextFromContext(r.Context())
		asJSON := wantsJSON(r.Header.Values("Accept"))
		if log.IsDebug() {
			log.Debug("request", "method", r.Method, "path", r.URL.Path, "json", asJSON,
				"trace_id", traceID(sc), "span_id", spanID(sc))
		}
		if asJSON {
			out := in
			out.TraceID = traceID(sc)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(out)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Hello from "+in.Instance+"\n")
	})
	return otelhttp.NewHandler(metrics.Wrap(mux, internal), name,
		otelhttp.WithFilter(func(r *http.Request) bool { return !internal(r) }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if r.Pattern != "" {
				return r.Pattern
			}
			return r.Method
		}),
	)
}

// traceID is the trace ID of sc, "" when there is none.
func traceID(sc trace.SpanContext) string {
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// spanID is the span ID of sc, "" when there is none.
func spanID(sc trace.SpanContext) string {
	if !sc.HasSpanID() {
		return ""
	}
	return sc.SpanID().String()
}

// wantsJSON reports whether an Accept header lists application/json (with a
// non-zero quality).
func wantsJSON(accept []string) bool {
	for _, line := range accept {
		for _, part := range strings.Split(line, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || mt != "application/json" {
				continue
			}
			if q, err := strconv.ParseFloat(params["q"], 64); err == nil && q == 0 {
				continue
			}
			return true
		}
	}
	return false
}
