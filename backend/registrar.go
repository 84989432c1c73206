// Package backend is the self-registration side of hopgate: a Registrar that
// any Go HTTP service can embed to register itself with its Consul agent,
// keep the registration alive through agent restarts, and leave cleanly; and
// Serve, which ties that lifecycle to an *http.Server so that stopping a
// backend with SIGTERM fails no request that went through the gateway.
//
// The gateway only routes services that carry route tags (see package
// discovery/routetag) and only to instances whose checks pass, so a
// Registration names its routes and gets an HTTP (or TCP) health check.
package backend

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/discovery/routetag"
)

// Defaults for the zero values of a Registration.
const (
	DefaultCheckPath               = "/healthz"
	DefaultCheckInterval           = 2 * time.Second
	DefaultCheckTimeout            = 1 * time.Second
	DefaultDeregisterCriticalAfter = time.Minute
)

// Meta keys the Registrar fills in unless the Registration sets them.
const (
	MetaVersion = "version" // DefaultVersion()
	MetaHost    = "host"    // os.Hostname()
)

// Registration describes one service instance. Only Service and Port are
// required.
type Registration struct {
	// Service is the Consul service name (see ValidateServiceName).
	Service string
	// ID is the instance ID, unique on the agent. Default:
	// <service>-<hostname>-<port>-<12 random hex digits>.
	ID string
	// Address is the address the gateway dials (IP or host name, no port).
	// Empty means detected before each registration attempt with
	// DetectAddress toward the agent, so a backend on another host than the
	// agent registers an address on the network the two share.
	Address string
	// Port is the port the server really listens on (after listening on :0,
	// the one the listener got).
	Port int
	// Routes are route values, registered as the tags routetag.Prefix+value,
	// e.g. "/" or "api.example.com/v1 strip=/v1". A malformed route is an
	// error of NewRegistrar; unknown options are logged as warnings.
	Routes []string
	// Tags are extra tags. Route tags among them are checked like Routes.
	Tags []string
	// Meta is service metadata; MetaVersion and MetaHost are added unless
	// set. Keys follow Consul's rules: 1-128 of [A-Za-z0-9_-], not starting
	// with "consul-"; values at most 512 bytes; at most 64 pairs.
	Meta map[string]string
	// CheckPath is the path of the HTTP health check the agent runs against
	// http://Address:Port/CheckPath (default DefaultCheckPath); a 2xx answer
	// is passing, 429 warning, anything else critical.
	CheckPath string
	// CheckTCP replaces the HTTP check with a TCP check: passing while
	// Address:Port accepts connections. For services with no health
	// endpoint; CheckPath must then be empty.
	CheckTCP bool
	// CheckInterval and CheckTimeout pace the health check (defaults
	// DefaultCheckInterval and DefaultCheckTimeout).
	CheckInterval, CheckTimeout time.Duration
	// DeregisterCriticalAfter makes the agent remove the instance once its
	// check has been critical that long, so a backend that died without
	// deregistering does not linger (default DefaultDeregisterCriticalAfter).
	// Consul raises anything below one minute to one minute
	// (check_deregister_interval_min, which no agent configuration, dev mode
	// included, can lower) and reaps every 30 seconds, so an instance goes
	// between 1m and 1m30s after its check turns critical.
	DeregisterCriticalAfter time.Duration
}

// Registrar registers one instance with a Consul agent and keeps it there.
// Run keeps the registration alive; Deregister ends it. All methods are safe
// for concurrent use.
type Registrar struct {
	agent     agent
	agentAddr string // host:port toward which the address is detected
	reg       Registration
	id        string
	tags      []string
	meta      map[string]string
	log       hclog.Logger

	// Pacing.
	retry         backoff       // template: min and max of the retry backoff
	watchWait     time.Duration // wait time of the blocking query
	watchInterval time.Duration // minimum time between two successful queries
	attemptLimit  time.Duration // bound on one register call

	running    atomic.Bool
	registered atomic.Bool // a registration has succeeded at least once
	addr       atomic.Pointer[string]

	// mu orders register attempts against Deregister: once Deregister has
	// begun, no registration is sent, and one in flight finishes first.
	mu           sync.Mutex
	mayExist     bool        // a registration may be on the agent
	stopped      atomic.Bool // Deregister was called; set under mu
	deregistered bool
}

// NewRegistrar validates reg, fills in its defaults and returns a Registrar
// that talks to the agent cfg points at (nil means api.DefaultConfig(); see
// also discovery.ConsulConfig). It takes the configuration rather than an
// *api.Client because it needs the agent's address to detect its own, which
// a client does not expose. It does not contact the agent. log may be nil.
func NewRegistrar(cfg *api.Config, reg Registration, log hclog.Logger) (*Registrar, error) {
	if cfg == nil {
		cfg = api.DefaultConfig()
	}
	c := *cfg // api.NewClient normalizes the config it is given
	client, err := api.NewClient(&c)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	agentAddr := c.Address
	if strings.HasPrefix(cfg.Address, "unix://") {
		agentAddr = ""
	}
	return newRegistrar(consulAgent{client}, agentAddr, reg, log)
}

// newRegistrar is NewRegistrar with the agent given; agentAddr is where to
// detect the advertised address toward ("" when that is impossible).
func newRegistrar(a agent, agentAddr string, reg Registration, log hclog.Logger) (*Registrar, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := &Registrar{
		agent:         a,
		agentAddr:     agentAddr,
		log:           log,
		retry:         backoff{min: retryMin, max: retryMax},
		watchWait:     30 * time.Second,
		watchInterval: time.Second,
		attemptLimit:  5 * time.Second,
	}
	if err := r.setRegistration(reg); err != nil {
		return nil, err
	}
	return r, nil
}

var metaKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// setRegistration validates reg and fills in its defaults.
func (r *Registrar) setRegistration(reg Registration) error {
	if err := ValidateServiceName(reg.Service); err != nil {
		return err
	}
	if reg.Port < 1 || reg.Port > 65535 {
		return fmt.Errorf("port %d is not from 1 to 65535", reg.Port)
	}
	if reg.ID == "" {
		reg.ID = newID(reg.Service, reg.Port)
	}
	if err := ValidateID(reg.ID); err != nil {
		return err
	}
	if reg.Address != "" {
		if err := ValidateAddress(reg.Address); err != nil {
			return err
		}
		r.addr.Store(&reg.Address)
	} else if r.agentAddr == "" {
		return errors.New("the Consul agent is reached over a unix socket: set the advertised address, it cannot be detected")
	}

	var tags []string
	addTag := func(t string) {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	checkRoute := func(v string) error {
		_, warnings, err := routetag.Parse(v)
		if err != nil {
			return fmt.Errorf("route tag %q: %w", routetag.Prefix+v, err)
		}
		for _, w := range warnings {
			r.log.Warn("route tag: "+w, "tag", routetag.Prefix+v)
		}
		return nil
	}
	for _, v := range reg.Routes {
		if err := checkRoute(v); err != nil {
			return err
		}
		addTag(routetag.Prefix + v)
	}
	for _, t := range reg.Tags {
		if strings.TrimSpace(t) == "" {
			return errors.New("empty tag")
		}
		if v, ok := strings.CutPrefix(t, routetag.Prefix); ok {
			if err := checkRoute(v); err != nil {
				return err
			}
		}
		addTag(t)
	}

	meta := maps.Clone(reg.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	if _, ok := meta[MetaVersion]; !ok {
		meta[MetaVersion] = DefaultVersion()
	}
	if _, ok := meta[MetaHost]; !ok {
		if h, err := os.Hostname(); err == nil {
			meta[MetaHost] = h
		}
	}
	if len(meta) > 64 {
		return fmt.Errorf("%d meta pairs: Consul allows at most 64", len(meta))
	}
	for k, v := range meta {
		if !metaKey.MatchString(k) || strings.HasPrefix(strings.ToLower(k), "consul-") {
			return fmt.Errorf("meta key %q: want 1-128 of A-Z a-z 0-9 _ -, not starting with consul-", k)
		}
		if len(v) > 512 {
			return fmt.Errorf("meta %q: value longer than 512 bytes", k)
		}
	}

	if reg.CheckTCP && reg.CheckPath != "" {
		return fmt.Errorf("check path %q with a TCP check: choose one", reg.CheckPath)
	}
	if reg.CheckPath == "" && !reg.CheckTCP {
		reg.CheckPath = DefaultCheckPath
	}
	if !reg.CheckTCP && (!strings.HasPrefix(reg.CheckPath, "/") || strings.ContainsFunc(reg.CheckPath, func(r rune) bool { return r <= ' ' || r == 0x7f })) {
		return fmt.Errorf("check path %q: want an absolute path without spaces", reg.CheckPath)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"check interval", &reg.CheckInterval, DefaultCheckInterval},
		{"check timeout", &reg.CheckTimeout, DefaultCheckTimeout},
		{"deregister-critical-after", &reg.DeregisterCriticalAfter, DefaultDeregisterCriticalAfter},
	} {
		if *d.v < 0 {
			return fmt.Errorf("%s %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}

	reg.Routes = slices.Clone(reg.Routes)
	reg.Tags = slices.Clone(reg.Tags)
	reg.Meta = nil // use r.meta
	r.reg, r.id, r.tags, r.meta = reg, reg.ID, tags, meta
	return nil
}

// ID is the instance ID (the Consul service ID).
func (r *Registrar) ID() string { return r.id }

// Service is the Consul service name.
func (r *Registrar) Service() string { return r.reg.Service }

// Address is the advertised address: the configured one, else the one last
// detected and registered ("" before the first registration).
func (r *Registrar) Address() string {
	if p := r.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Registered reports whether a registration has succeeded at least once.
func (r *Registrar) Registered() bool { return r.registered.Load() }

// Tags are the tags registered: route tags first, then the extra ones.
func (r *Registrar) Tags() []string { return slices.Clone(r.tags) }

// Meta is the metadata registered, defaults included.
func (r *Registrar) Meta() map[string]string { return maps.Clone(r.meta) }

var errStopped = errors.New("registrar deregistered")

// Run registers the instance and keeps it registered until ctx is done or
// Deregister is called; then it returns nil, without deregistering (call
// Deregister, or let Serve do it). It never gives up: while the agent is
// unreachable or refuses, it retries with capped, jittered exponential
// backoff and logs every attempt. Once registered it holds a blocking query
// on the agent's copy of the service; the query breaks at once when the agent
// restarts, and when it finds the service gone (an agent restarted without
// state, or someone deregistered it) Run registers again. Run may only run
// once at a time; a second concurrent call returns an error.
func (r *Registrar) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("registrar: Run is already running")
	}
	defer r.running.Store(false)

	bo := backoff{min: r.retry.min, max: r.retry.max, jitter: r.retry.jitter}
	reason := "start"
	for {
		// Register, until it sticks.
		for attempt := 1; ; attempt++ {
			addr, err := r.register(ctx)
			if errors.Is(err, errStopped) || ctx.Err() != nil {
				return nil
			}
			if err == nil {
				r.log.Info("registered with the Consul agent", "id", r.id, "service", r.reg.Service,
					"address", addr, "port", r.reg.Port, "reason", reason, "attempt", attempt)
				break
			}
			wait := bo.next()
			r.log.Warn("registration failed; retrying", "id", r.id, "reason", reason,
				"attempt", attempt, "retry_in", wait.Round(time.Millisecond), "error", err)
			if !sleep(ctx, wait) {
				return nil
			}
		}
		bo.reset()

		// Watch the registration until it vanishes.
		hash := ""
		for {
			start := time.Now()
			svc, newHash, err := r.agent.service(ctx, r.id, hash, r.watchWait)
			if ctx.Err() != nil || r.isStopped() {
				return nil
			}
			if errors.Is(err, errNotFound) {
				r.log.Warn("registration vanished from the Consul agent; registering again", "id", r.id)
				reason = "vanished"
				break
			}
			if err != nil {
				wait := bo.next()
				r.log.Warn("watching the registration failed; retrying", "id", r.id,
					"retry_in", wait.Round(time.Millisecond), "error", err)
				if !sleep(ctx, wait) {
					return nil
				}
				continue
			}
			bo.reset()
			if newHash != hash && hash != "" && svc != nil &&
				(svc.Service != r.reg.Service || svc.Port != r.reg.Port || svc.Address != r.Address()) {
				r.log.Warn("registration was changed on the agent by someone else", "id", r.id,
					"service", svc.Service, "address", svc.Address, "port", svc.Port)
			}
			blocking := hash != ""
			hash = newHash
			// Rate limit: a blocking query that came back early (content
			// changed) is not followed by another for watchInterval.
			if blocking && !sleep(ctx, r.watchInterval-time.Since(start)) {
				return nil
			}
		}
	}
}

// register sends one registration, unless Deregister has begun. The call is
// bounded by attemptLimit but not cut short by ctx: once sent it completes,
// so Deregister (which waits for it) can never be overtaken by it.
func (r *Registrar) register(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped.Load() {
		return "", errStopped
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	addr := r.reg.Address
	if addr == "" {
		var err error
		if addr, err = DetectAddress(r.agentAddr); err != nil {
			return "", err
		}
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.attemptLimit)
	defer cancel()
	err := r.agent.register(actx, r.registration(addr))
	if err == nil || !notApplied(err) {
		r.mayExist = true
	}
	if err != nil {
		return "", err
	}
	r.addr.Store(&addr)
	r.registered.Store(true)
	return addr, nil
}

func (r *Registrar) isStopped() bool { return r.stopped.Load() }

// registration is what is sent to the agent.
func (r *Registrar) registration(addr string) *api.AgentServiceRegistration {
	reg := r.reg
	hostPort := net.JoinHostPort(addr, strconv.Itoa(reg.Port))
	check := &api.AgentServiceCheck{
		Interval:                       reg.CheckInterval.String(),
		Timeout:                        reg.CheckTimeout.String(),
		DeregisterCriticalServiceAfter: reg.DeregisterCriticalAfter.String(),
	}
	if reg.CheckTCP {
		check.Name, check.TCP = "TCP "+hostPort, hostPort
	} else {
		check.Name, check.HTTP, check.Method = "HTTP GET "+reg.CheckPath, "http://"+hostPort+reg.CheckPath, "GET"
	}
	return &api.AgentServiceRegistration{
		ID:      r.id,
		Name:    reg.Service,
		Address: addr,
		Port:    reg.Port,
		Tags:    slices.Clone(r.tags),
		Meta:    maps.Clone(r.meta),
		Check:   check,
	}
}

// Deregister removes the instance from the agent and stops Run from
// registering it again (Run returns). It retries failed calls with backoff
// until ctx is done. It is safe to call more than once (after a success the
// later calls do nothing) and when nothing was ever registered: when every
// registration attempt was refused or never reached the agent, it does not
// contact the agent at all. A registration call in flight is allowed to
// finish first, so it cannot land after the deregistration.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped.Store(true)
	if r.deregistered || !r.mayExist {
		r.deregistered = true
		return nil
	}
	bo := backoff{min: r.retry.min, max: r.retry.max, jitter: r.retry.jitter}
	for attempt := 1; ; attempt++ {
		err := r.agent.deregister(ctx, r.id)
		if err == nil {
			r.deregistered = true
			r.log.Info("deregistered from the Consul agent", "id", r.id, "service", r.reg.Service)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("deregister %s: %w", r.id, err)
		}
		wait := bo.next()
		r.log.Warn("deregistration failed; retrying", "id", r.id, "attempt", attempt,
			"retry_in", wait.Round(time.Millisecond), "error", err)
		if !sleep(ctx, wait) {
			return fmt.Errorf("deregister %s: %w", r.id, err)
		}
	}
}

// notApplied reports whether a failed register call certainly changed
// nothing on the agent: the agent answered with an error, or the connection
// was never made.
func notApplied(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}
