package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/hopgate/hopgate/gateway"
	"github.com/hopgate/hopgate/gateway/balance"
)

// settingsFlags are the flags behind gateway.Settings: the defaults of every
// route, which route tag options override.
type settingsFlags struct {
	s       gateway.Settings
	lb      string
	trusted string
}

func registerSettings(fs *flag.FlagSet) *settingsFlags {
	d := gateway.DefaultSettings
	f := &settingsFlags{s: d}
	s := &f.s
	fs.StringVar(&f.lb, "lb", d.Balance.Policy, "balancing `policy`: round_robin, random, least_request, peak_ewma, hash:header:NAME, hash:cookie:NAME or hash:client (route option lb=)")
	fs.DurationVar(&s.Balance.SlowStart, "slow-start", 0, "ramp a newly routable instance's share of traffic up over this `window` (0: off; route option slow_start=)")
	fs.DurationVar(&s.Timeout, "timeout", d.Timeout, "longest wait for an answer's headers, retries included, before a 504 (route option timeout=)")
	fs.DurationVar(&s.TryTimeout, "try-timeout", d.TryTimeout, "longest wait for one attempt's headers (0: the -timeout; route option try_timeout=)")
	fs.DurationVar(&s.ConnectTimeout, "connect-timeout", d.ConnectTimeout, "longest wait to connect to an instance (route option connect_timeout=)")
	fs.DurationVar(&s.IdleTimeout, "idle-timeout", d.IdleTimeout, "cut a response that sends nothing for this long (0: never; route option idle_timeout=)")
	fs.IntVar(&s.MaxAttempts, "max-attempts", d.MaxAttempts, "attempts per request, the first included (route option attempts=)")
	fs.IntVar(&s.MaxInflight, "max-inflight", 0, "concurrent requests per route before an immediate 503 (0: no cap; route option max_inflight=)")
	fs.IntVar(&s.MaxInflightPerInstance, "max-inflight-per-instance", 0, "concurrent requests per instance (0: no cap)")
	fs.IntVar(&s.Outlier.Consecutive, "outlier-failures", d.Outlier.Consecutive, "connection failures or 5xx answers in a row that eject an instance (0: no passive health)")
	fs.DurationVar(&s.Outlier.BaseEjection, "outlier-ejection", d.Outlier.BaseEjection, "first ejection time; it grows with each ejection")
	fs.DurationVar(&s.Outlier.MaxEjection, "outlier-max-ejection", d.Outlier.MaxEjection, "longest ejection time")
	fs.Float64Var(&s.Outlier.MaxEjectedShare, "outlier-max-share", d.Outlier.MaxEjectedShare, "largest share of a route's instances ejected at once, 0 to 1")
	fs.Float64Var(&s.PanicThreshold, "panic-threshold", d.PanicThreshold, "below this share of healthy instances, ignore ejections and spread over all, 0 to 1")
	fs.Float64Var(&s.RetryBudget, "retry-budget", d.RetryBudget, "retries allowed as a share of a route's requests over 10 s")
	fs.IntVar(&s.RetryFloor, "retry-floor", d.RetryFloor, "retries per second allowed on top of the budget, so quiet routes can retry")
	fs.Int64Var(&s.MaxReplayBody, "max-replay-body", d.MaxReplayBody, "largest request body (`bytes`) kept to retry an idempotent request")
	fs.BoolVar(&s.UseWarning, "use-warning", false, "also route to Consul warning-state instances, with their Weights.Warning")
	fs.Int64Var(&s.MaxBody, "max-body", 0, "largest request body in `bytes`, 413 over it (0: no cap; route option max_body=)")
	fs.StringVar(&f.trusted, "trusted-proxies", "", "comma-separated `CIDRs` of proxies in front whose X-Forwarded-*, Forwarded, X-Real-IP and trace context are believed")
	fs.StringVar(&s.TraceContext, "trace-context", d.TraceContext, "an untrusted client's trace context: link (new trace, linked), continue, or ignore")
	fs.IntVar(&s.MaxRequestsPerConn, "max-requests-per-conn", 0, "close a client connection after this many requests (0: no cap)")
	return f
}

// settings validates the flags and returns the gateway settings.
func (f *settingsFlags) settings() (gateway.Settings, error) {
	s := f.s
	lb, err := balance.ParseConfig(f.lb)
	if err != nil {
		return s, fmt.Errorf("invalid value %q for flag -lb: %v", f.lb, err)
	}
	lb.SlowStart = s.Balance.SlowStart
	s.Balance = lb
	checks := []struct {
		bad  bool
		flag string
		want string
		val  any
	}{
		{s.Balance.SlowStart < 0, "slow-start", "must not be negative", s.Balance.SlowStart},
		{s.Timeout <= 0, "timeout", "must be positive", s.Timeout},
		{s.TryTimeout < 0, "try-timeout", "must not be negative", s.TryTimeout},
		{s.ConnectTimeout <= 0, "connect-timeout", "must be positive", s.ConnectTimeout},
		{s.IdleTimeout < 0, "idle-timeout", "must not be negative", s.IdleTimeout},
		{s.MaxAttempts < 1 || s.MaxAttempts > 10, "max-attempts", "must be from 1 to 10", s.MaxAttempts},
		{s.MaxInflight < 0, "max-inflight", "must not be negative", s.MaxInflight},
		{s.MaxInflightPerInstance < 0, "max-inflight-per-instance", "must not be negative", s.MaxInflightPerInstance},
		{s.Outlier.Consecutive < 0, "outlier-failures", "must not be negative", s.Outlier.Consecutive},
		{s.Outlier.BaseEjection <= 0, "outlier-ejection", "must be positive", s.Outlier.BaseEjection},
		{s.Outlier.MaxEjection < s.Outlier.BaseEjection, "outlier-max-ejection", "must be at least -outlier-ejection", s.Outlier.MaxEjection},
		{s.Outlier.MaxEjectedShare < 0 || s.Outlier.MaxEjectedShare > 1, "outlier-max-share", "must be from 0 to 1", s.Outlier.MaxEjectedShare},
		{s.PanicThreshold < 0 || s.PanicThreshold > 1, "panic-threshold", "must be from 0 to 1", s.PanicThreshold},
		{s.RetryBudget < 0, "retry-budget", "must not be negative", s.RetryBudget},
		{s.RetryFloor < 0, "retry-floor", "must not be negative", s.RetryFloor},
		{s.MaxReplayBody < 0, "max-replay-body", "must not be negative", s.MaxReplayBody},
		{s.MaxBody < 0, "max-body", "must not be negative", s.MaxBody},
		{s.MaxRequestsPerConn < 0, "max-requests-per-conn", "must not be negative", s.MaxRequestsPerConn},
	}
	for _, c := range checks {
		if c.bad {
			return s, fmt.Errorf("invalid value %v for flag -%s: %s", c.val, c.flag, c.want)
		}
	}
	switch s.TraceContext {
	case gateway.TraceLink, gateway.TraceContinue, gateway.TraceIgnore:
	default:
		return s, fmt.Errorf("invalid value %q for flag -trace-context: want link, continue or ignore", s.TraceContext)
	}
	for _, c := range strings.Split(f.trusted, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return s, fmt.Errorf("invalid value %q for flag -trusted-proxies: %q is not a CIDR such as 10.0.0.0/8", f.trusted, c)
		}
		s.TrustedProxies = append(s.TrustedProxies, p.Masked())
	}
	return s, nil
}

// serverFlags shape the listeners.
type serverFlags struct {
	eventLoops bool
	drain      time.Duration
	h2c        bool
	tlsCert    string
	tlsKey     string
	maxConns   int
	adminToken string
	ss         gateway.ServerSettings
}

func registerServer(fs *flag.FlagSet) *serverFlags {
	f := &serverFlags{ss: gateway.DefaultServerSettings}
	d := gateway.DefaultServerSettings
	fs.DurationVar(&f.ss.HeaderTimeout, "header-timeout", d.HeaderTimeout, "close a client connection whose request head is not in after this long (slowloris)")
	fs.DurationVar(&f.ss.BodyTimeout, "body-timeout", d.BodyTimeout, "longest time to read a request body (0: no limit)")
	fs.DurationVar(&f.ss.IdleTimeout, "client-idle-timeout", d.IdleTimeout, "close a client keep-alive connection unused this long")
	fs.IntVar(&f.ss.MaxHeaderBytes, "max-header-bytes", d.MaxHeaderBytes, "largest request head in `bytes`, 431 over it")
	fs.IntVar(&f.maxConns, "max-conns", 0, "concurrent client connections; more wait in the backlog (0: no cap)")
	fs.StringVar(&f.adminToken, "admin-token", os.Getenv("HOPGATE_ADMIN_TOKEN"), "bearer `token` required by the admin API except /healthz and /readyz; required when -admin is not loopback (env HOPGATE_ADMIN_TOKEN)")
	fs.DurationVar(&f.drain, "drain", 5*time.Second, "on SIGTERM, how long to keep serving with /readyz failing before closing listeners, so load balancers in front move away")
	fs.BoolVar(&f.h2c, "h2c", false, "accept HTTP/2 without TLS (prior knowledge) on the public listener, as gRPC clients speak it")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "certificate `file` (PEM) to serve HTTPS and HTTP/2 on the public listener; needs -tls-key")
	fs.StringVar(&f.tlsKey, "tls-key", "", "private key `file` (PEM) for -tls-cert")
	fs.BoolVar(&f.eventLoops, "event-loops", runtime.GOOS == "linux", "serve plain HTTP/1.1 on epoll event loops, one per processor (Linux only); false: a goroutine per connection")
	return f
}

func (f *serverFlags) validate(listen, admin string) error {
	switch {
	case f.drain < 0:
		return fmt.Errorf("invalid value %v for flag -drain: must not be negative", f.drain)
	case (f.tlsCert == "") != (f.tlsKey == ""):
		return fmt.Errorf("flags -tls-cert and -tls-key go together")
	case f.ss.HeaderTimeout <= 0:
		return fmt.Errorf("invalid value %v for flag -header-timeout: must be positive", f.ss.HeaderTimeout)
	case f.ss.BodyTimeout < 0 || f.ss.IdleTimeout <= 0:
		return fmt.Errorf("flags -body-timeout and -client-idle-timeout must not be negative, -client-idle-timeout not zero")
	case f.ss.MaxHeaderBytes < 1024:
		return fmt.Errorf("invalid value %d for flag -max-header-bytes: at least 1024", f.ss.MaxHeaderBytes)
	case f.maxConns < 0:
		return fmt.Errorf("invalid value %d for flag -max-conns: must not be negative", f.maxConns)
	}
	// The admin API never shares the public listener, and off loopback it
	// answers only with a token.
	lh, lp, _ := net.SplitHostPort(listen)
	ah, ap, _ := net.SplitHostPort(admin)
	if lp == ap && lp != "0" && (lh == ah || lh == "" || ah == "" || lh == "0.0.0.0" || ah == "0.0.0.0" || lh == "::" || ah == "::") {
		return fmt.Errorf("flags -admin and -listen must not share a port (%s, %s): the admin API is never public", admin, listen)
	}
	if !isLoopback(ah) && f.adminToken == "" {
		return fmt.Errorf("flag -admin %s is not loopback: set -admin-token (or HOPGATE_ADMIN_TOKEN) so the admin API is not open", admin)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
