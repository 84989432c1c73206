package gateway

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/hopgate/hopgate/discovery/routetag"
	"github.com/hopgate/hopgate/gateway/balance"
)

// Settings are the gateway-wide defaults of every route, from flags. Route
// tag options override the per-route ones.
type Settings struct {
	Balance balance.Config
	// Timeout bounds the wait for an answer's headers, retries included:
	// 504 after it. Bodies stream for as long as they flow, so server-sent
	// events and downloads are not cut.
	Timeout time.Duration
	// TryTimeout bounds one attempt's wait for headers; 0 means Timeout.
	TryTimeout time.Duration
	// ConnectTimeout bounds connecting to an instance: a dead one must fail
	// fast so that the retry still fits the client's patience.
	ConnectTimeout time.Duration
	// IdleTimeout cuts a response body that sends nothing for that long;
	// 0 means never.
	IdleTimeout time.Duration
	// MaxAttempts per request, the first included.
	MaxAttempts int
	// MaxInflight caps a route's concurrent requests; 0 means no cap.
	MaxInflight int
	// MaxInflightPerInstance caps requests open to one instance; 0 means
	// no cap. Over either cap the answer is an immediate 503.
	MaxInflightPerInstance int
	// Outlier is passive health checking.
	Outlier balance.OutlierConfig
	// PanicThreshold: when fewer than this share of a service's instances
	// are healthy (Consul-passing and not ejected), ejections are ignored
	// and load spreads over every routable instance.
	PanicThreshold float64
	// RetryBudget caps retries at this share of a route's requests over the
	// last ten seconds, plus RetryFloor retries per second.
	RetryBudget float64
	RetryFloor  int
	// MaxReplayBody is the largest request body buffered so that an
	// idempotent request can be retried after the instance saw it.
	MaxReplayBody int64
	// UseWarning routes to Consul warning-state instances too, with their
	// Weights.Warning; by default only passing instances get traffic.
	UseWarning bool
	// MaxBody caps request bodies (413 over it); 0 means no cap. Route
	// option max_body.
	MaxBody int64

	// The edge.

	// TrustedProxies are the peers whose X-Forwarded-*, Forwarded,
	// X-Real-IP and trace context are believed; everyone else's are
	// replaced.
	TrustedProxies []netip.Prefix
	// TraceContext says what to do with an untrusted client's trace
	// context: TraceLink (default), TraceContinue or TraceIgnore.
	TraceContext string
	// MaxRequestsPerConn closes a client connection after that many
	// requests; 0 means no cap.
	MaxRequestsPerConn int
}

// DefaultSettings are the defaults of the gateway's flags.
var DefaultSettings = Settings{
	Balance:        balance.Config{Policy: balance.DefaultPolicy},
	Timeout:        60 * time.Second,
	ConnectTimeout: 2 * time.Second,
	IdleTimeout:    5 * time.Minute,
	MaxAttempts:    3,
	Outlier:        balance.DefaultOutlierConfig,
	PanicThreshold: 0.5,
	RetryBudget:    0.2,
	RetryFloor:     3,
	MaxReplayBody:  64 << 10,
	TraceContext:   TraceLink,
}

// routePolicy is what one route does, after its tag options.
type routePolicy struct {
	balance     balance.Config
	timeout     time.Duration
	tryTimeout  time.Duration
	connect     time.Duration
	idle        time.Duration
	attempts    int
	maxInflight int
	maxBody     int64
	websocket   bool
	h2c         bool
}

// policyFor applies a route's options to the defaults. A bad value is an
// error that disables the route, like any malformed tag.
func (s *Settings) policyFor(opts map[string]string) (routePolicy, error) {
	p := routePolicy{
		balance:     s.Balance,
		timeout:     s.Timeout,
		tryTimeout:  s.TryTimeout,
		connect:     s.ConnectTimeout,
		idle:        s.IdleTimeout,
		attempts:    s.MaxAttempts,
		maxInflight: s.MaxInflight,
		maxBody:     s.MaxBody,
	}
	for k, v := range opts {
		var err error
		switch k {
		case routetag.OptLB:
			var c balance.Config
			if c, err = balance.ParseConfig(v); err == nil {
				c.SlowStart = p.balance.SlowStart
				p.balance = c
			}
		case routetag.OptSlowStart:
			p.balance.SlowStart, err = parseDuration(v, true)
		case routetag.OptTimeout:
			p.timeout, err = parseDuration(v, false)
		case routetag.OptTryTimeout:
			p.tryTimeout, err = parseDuration(v, false)
		case routetag.OptConnectTimeout:
			p.connect, err = parseDuration(v, false)
		case routetag.OptIdleTimeout:
			p.idle, err = parseDuration(v, true)
		case routetag.OptAttempts:
			p.attempts, err = parseCount(v, 1, 10)
		case routetag.OptMaxInflight:
			p.maxInflight, err = parseCount(v, 1, 1<<20)
		case routetag.OptMaxBody:
			var n int
			n, err = parseCount(v, 1, 1<<40)
			p.maxBody = int64(n)
		case routetag.OptWebSocket:
			switch v {
			case "on":
				p.websocket = true
			case "off":
			default:
				err = fmt.Errorf("want on or off")
			}
		case routetag.OptProto:
			switch v {
			case "http1":
			case "h2c":
				p.h2c = true
			default:
				err = fmt.Errorf("want http1 or h2c")
			}
		}
		if err != nil {
			return routePolicy{}, fmt.Errorf("option %s=%s: %w", k, v, err)
		}
	}
	if p.tryTimeout == 0 || p.tryTimeout > p.timeout {
		p.tryTimeout = p.timeout
	}
	return p, nil
}

func parseDuration(v string, zeroOK bool) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || (d == 0 && !zeroOK) {
		return 0, fmt.Errorf("want a positive duration such as 2s or 500ms")
	}
	return d, nil
}

func parseCount(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("want a whole number from %d to %d", lo, hi)
	}
	return n, nil
}
