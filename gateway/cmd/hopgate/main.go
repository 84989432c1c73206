// Command hopgate is the gateway: it watches Consul for services that opt in
// with route tags and proxies HTTP to their passing instances.
//
// `hopgate join [flags] -- command [args...]` is the other mode: it runs an
// unmodified server process as a backend that registers, drains and
// deregisters like the hello service (see package backend/join).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hopgate/hopgate/backend"
	"github.com/hopgate/hopgate/backend/join"
	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/gateway"
	"github.com/hopgate/hopgate/telemetry"
)

// usageError is a problem with flags or environment: exit status 2.
type usageError struct{ error }

// defaultGCPercent is the gateway's GOGC unless the environment sets one.
const defaultGCPercent = 400

func main() {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		os.Exit(backend.Probe("hopgate", os.Args[2:], os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "join" {
		// Subscribed before the child starts: a signal in between must
		// neither be lost nor kill the wrapper and orphan the child.
		signals := make(chan os.Signal, 4)
		signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
		os.Exit(join.Main(os.Args[2:], signals, os.Stdin, os.Stdout, os.Stderr))
	}
	if os.Getenv("GOGC") == "" {
		// Nearly all the gateway allocates is per-request state that dies
		// within the request: collecting it a quarter as often costs a few
		// MB of heap and buys about a tenth of the CPU per request.
		// GOGC in the environment still decides.
		debug.SetGCPercent(defaultGCPercent)
	}
	err := run(os.Args[1:], os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "hopgate:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "hopgate:", err)
		os.Exit(1)
	}
}

type config struct {
	listen   string
	admin    string
	shutdown time.Duration
	settings gateway.Settings
	server   *serverFlags
	observe  *observeFlags
	logs     *telemetry.LogFlags
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("hopgate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &config{}
	fs.StringVar(&c.listen, "listen", ":8080", "public listen `address` for proxied traffic")
	fs.StringVar(&c.admin, "admin", "127.0.0.1:9901", "admin API listen `address` (/healthz, /readyz, /routes); keep it private")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", 15*time.Second, "how long in-flight requests may take to finish on shutdown, after the drain")
	settings := registerSettings(fs)
	c.server = registerServer(fs)
	c.observe = registerObserve(fs)
	var err error
	if c.logs, err = telemetry.RegisterLogFlags(fs); err != nil {
		return nil, usageError{err}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "Usage: hopgate [flags]\n       hopgate join [flags] -- command [args...]   (run a server as a backend; hopgate join -h)\n\nConsul is reached through the standard CONSUL_HTTP_* variables; traces go where the OTEL_* variables say.\n\nFlags:")
			fs.PrintDefaults()
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	for name, addr := range map[string]string{"listen": c.listen, "admin": c.admin} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, usageError{fmt.Errorf("invalid value %q for flag -%s: want host:port or :port", addr, name)}
		}
	}
	if c.settings, err = settings.settings(); err != nil {
		return nil, usageError{err}
	}
	if err := c.observe.validate(); err != nil {
		return nil, usageError{err}
	}
	if err := c.server.validate(c.listen, c.admin); err != nil {
		return nil, usageError{err}
	}
	if c.shutdown <= 0 {
		return nil, usageError{fmt.Errorf("invalid value %v for flag -shutdown-timeout: must be positive", c.shutdown)}
	}
	return c, nil
}

func run(args []string, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	consul, err := discovery.ClientFromEnv()
	if err != nil {
		return usageError{err}
	}
	log := telemetry.NewLogger("hopgate", c.logs, stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	hostname, _ := os.Hostname()
	shutdownTracing, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: "hopgate", InstanceID: hostname, Version: version(),
	})
	if err != nil {
		return usageError{fmt.Errorf("telemetry: %w", err)}
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(ctx); err != nil {
			log.Warn("flushing traces", "error", err)
		}
	}()

	publicLn, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("public listener: %w", err)
	}
	adminLn, err := net.Listen("tcp", c.admin)
	if err != nil {
		publicLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}

	gw := gateway.New(gateway.Options{Logger: log, Settings: &c.settings})
	watcher := discovery.NewWatcher(discovery.Config{
		Consul:  discovery.NewConsul(consul),
		Logger:  log.Named("discovery"),
		Publish: gw.Apply,
	})
	proxy := gateway.NewProxy(gw, gateway.ProxyOptions{Logger: log.Named("proxy"), AccessLog: c.observe.accessLog})
	popts := gateway.PublicOptions{TLSCert: c.server.tlsCert, TLSKey: c.server.tlsKey, H2C: c.server.h2c,
		MaxConns: c.server.maxConns, EventLoops: c.server.eventLoops, Logger: log.Named("server")}
	public := gateway.NewPublicServer(publicLn, proxy, c.server.ss, popts)
	admin := &http.Server{
		Handler:           gateway.NewAdmin(gw, gateway.AdminOptions{Discovery: watcher.Status, JaegerQuery: c.observe.jaegerQuery, JaegerUI: c.observe.jaegerUI, Token: c.server.adminToken}),
		ReadHeaderTimeout: 5 * time.Second,
	}

	log.Info("hopgate starting", "version", version(), "listen", public.Addr().String(),
		"admin", adminLn.Addr().String(), "consul", discovery.Addr(), "event_loops", public.EventLoops())

	errc := make(chan error, 3)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go func() { errc <- watcher.Run(watchCtx) }()
	go func() { errc <- public.Serve() }()
	healthCtx, stopHealth := context.WithCancel(context.Background())
	defer stopHealth()
	go gw.WatchHealth(healthCtx, time.Second)
	go func() {
		err := admin.Serve(adminLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()

	var runErr error
	select {
	case <-ctx.Done():
		// Drain: /readyz fails so load balancers in front move away, and
		// every answer asks its keep-alive client to close, while requests
		// are still served. Then stop accepting and finish what is open.
		log.Info("draining", "for", c.server.drain)
		gw.Drain()
		public.Drain()
		select {
		case <-time.After(c.server.drain):
		case runErr = <-errc:
		}
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("stopping after failure", "error", runErr)
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), c.shutdown)
	defer cancel()
	if err := public.Shutdown(shutdownCtx); err != nil {
		log.Warn("in-flight requests cut at shutdown timeout", "error", err)
	}
	_ = admin.Shutdown(shutdownCtx)
	stopWatch()
	return runErr
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
