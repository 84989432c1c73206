// Package balance holds the load-balancing policies. A policy builds an
// immutable Picker from a route's endpoints once per routing table; the
// live measurements a policy reads (in-flight requests, latency) sit in
// Stats, which outlive tables so that a new snapshot does not forget them.
//
// The policies, each a small file: round_robin (smooth weighted round
// robin), random (weighted), least_request (power of two choices on
// requests in flight), peak_ewma (power of two choices on latency times
// load, the default) and hash (a consistent-hash ring on a header, a cookie
// or the client address). New builds one; Pick never locks and never
// allocates, and asks its Skipper a bounded number of times.
package balance

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hopgate/hopgate/discovery"
)

// ErrNoEndpoint is returned when a picker has nothing left to offer.
var ErrNoEndpoint = errors.New("no healthy instance")

// Endpoint is one instance a route may send to. It is immutable; its Stats
// are shared by every table that holds the same instance.
type Endpoint struct {
	Instance *discovery.Instance
	// Addr is the dialable host:port, precomputed.
	Addr string
	// Weight is the instance's Consul weight for its health (>= 1 for a
	// routable endpoint; an endpoint of weight 0 is never built).
	Weight int
	Stats  *Stats
}

// Picker chooses the endpoint for one attempt of a request. It is built once
// per table and must be safe for concurrent use without locks on the hot
// path.
type Picker interface {
	// Pick returns an endpoint for r, passing over those skip skips
	// (instances that failed this request already, or that are ejected)
	// while any other is left; skip may be nil.
	Pick(r *http.Request, skip Skipper) (*Endpoint, error)
}

// Skipper says which endpoints a Pick passes over. An interface, not a
// func: a caller's skipper can be a value it already has on the heap,
// where a closure over the request's state would be one allocation more
// on every request.
type Skipper interface {
	Skip(*Endpoint) bool
}

// SkipFunc adapts a function to a Skipper.
type SkipFunc func(*Endpoint) bool

// Skip calls f(e).
func (f SkipFunc) Skip(e *Endpoint) bool { return f(e) }

// Policy names, as written in the lb= route option and the -lb flag.
const (
	RoundRobin   = "round_robin"
	Random       = "random"
	LeastRequest = "least_request"
	PeakEWMA     = "peak_ewma"
	Hash         = "hash"
)

// DefaultPolicy balances on observed latency and load.
const DefaultPolicy = PeakEWMA

// Config selects and parameterises a policy.
type Config struct {
	Policy string
	// HashOn is the key source of the hash policy: "header:NAME",
	// "cookie:NAME" or "client" (the client address).
	HashOn string
	// SlowStart ramps a newly routable instance's share of traffic up over
	// this window; 0 disables it.
	SlowStart time.Duration
}

// ParseConfig reads a policy as written in a route option, e.g.
// "peak_ewma", "hash:header:X-User", "hash:cookie:session", "hash:client".
func ParseConfig(s string) (Config, error) {
	name, arg, _ := strings.Cut(s, ":")
	switch name {
	case RoundRobin, Random, LeastRequest, PeakEWMA:
		if arg != "" {
			return Config{}, fmt.Errorf("policy %s takes no argument", name)
		}
		return Config{Policy: name}, nil
	case Hash:
		if err := checkHashOn(arg); err != nil {
			return Config{}, err
		}
		return Config{Policy: Hash, HashOn: arg}, nil
	}
	return Config{}, fmt.Errorf("unknown policy %q: want one of %s", name, strings.Join(Policies(), ", "))
}

// Policies lists the policy names, sorted.
func Policies() []string {
	p := []string{RoundRobin, Random, LeastRequest, PeakEWMA, Hash}
	sort.Strings(p)
	return p
}

func checkHashOn(arg string) error {
	kind, name, _ := strings.Cut(arg, ":")
	switch {
	case kind == "client" && name == "":
		return nil
	case (kind == "header" || kind == "cookie") && name != "":
		return nil
	}
	return fmt.Errorf("hash needs a key: hash:header:NAME, hash:cookie:NAME or hash:client, not %q", "hash:"+arg)
}
