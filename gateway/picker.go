package gateway

import (
	"errors"
	"sync/atomic"
)

// ErrNoUpstream is returned by a route's picker when it has no instance to
// send to.
var ErrNoUpstream = errors.New("no healthy instance")

// Picker chooses the upstream for one attempt of a request. A picker is
// built once per routing table from a fixed set of upstreams and never
// changes afterwards; it must be safe for concurrent use without locks.
type Picker interface {
	// Pick returns an upstream, avoiding those in tried (the instances that
	// already failed this request) while any other is left.
	Pick(tried []*Upstream) (*Upstream, error)
}

// PickerFactory builds a route's picker from its upstreams.
type PickerFactory func(ups []*Upstream) Picker

// NewRoundRobin is the default PickerFactory: requests rotate over the
// upstreams in order.
func NewRoundRobin(ups []*Upstream) Picker {
	if len(ups) == 0 {
		return errPicker{ErrNoUpstream}
	}
	return &roundRobin{ups: ups}
}

var (
	_ Picker = (*roundRobin)(nil)
	_ Picker = errPicker{}
)

type roundRobin struct {
	ups  []*Upstream
	next atomic.Uint64
}

func (p *roundRobin) Pick(tried []*Upstream) (*Upstream, error) {
	n := uint64(len(p.ups))
	start := p.next.Add(1) - 1
	for i := uint64(0); i < n; i++ {
		up := p.ups[(start+i)%n]
		if !contains(tried, up) {
			return up, nil
		}
	}
	return nil, ErrNoUpstream
}

// errPicker is the picker of a route with nothing to pick: the request path
// never checks for "no state", it just gets the error.
type errPicker struct{ err error }

func (p errPicker) Pick([]*Upstream) (*Upstream, error) { return nil, p.err }

func contains(ups []*Upstream, up *Upstream) bool {
	for _, u := range ups {
		if u == up {
			return true
		}
	}
	return false
}
