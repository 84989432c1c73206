// Package discovery watches Consul for the services that opt in to the
// gateway (see package routetag) and publishes complete, immutable snapshots
// of their healthy instances. It knows nothing of HTTP proxying: the gateway
// consumes snapshots and never calls back.
package discovery

import (
	"maps"
	"net"
	"slices"
	"strconv"
	"time"
)

// Health is the aggregated state of an instance's Consul checks (service and
// node checks together). Critical instances never appear in a snapshot.
type Health string

const (
	Passing Health = "passing"
	Warning Health = "warning"
)

// Instance is one non-critical instance of a service, as Consul reports it.
// Instances are values inside an immutable Snapshot: never modify one.
type Instance struct {
	// ID is the Consul service ID, unique on its node.
	ID string
	// Node is the Consul node the instance is registered on.
	Node string
	// Address is the service address, or the node address when the service
	// registered none.
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// Weight is Consul's Weights.Passing, or Weights.Warning for an instance
	// in warning state (Consul's defaults are 1 and 1). It is 0 for an
	// instance in warning registered with Weights.Warning 0, which asks for
	// no traffic while it warns: balancers must allow for 0.
	Weight int
	Health Health
}

// Key identifies an instance across the whole catalog (IDs are only unique
// per node).
func (i *Instance) Key() string { return i.Node + "/" + i.ID }

// HostPort is the dialable address of the instance.
func (i *Instance) HostPort() string {
	return net.JoinHostPort(i.Address, strconv.Itoa(i.Port))
}

func (i *Instance) equal(o *Instance) bool {
	return i.ID == o.ID && i.Node == o.Node && i.Address == o.Address &&
		i.Port == o.Port && i.Weight == o.Weight && i.Health == o.Health &&
		slices.Equal(i.Tags, o.Tags) && maps.Equal(i.Meta, o.Meta)
}

// Service is one opted-in service and its instances, sorted by Key.
type Service struct {
	Name      string
	Instances []Instance
	// Unroutable counts the instances Consul knows but reports critical or
	// in maintenance: not in Instances, but part of the service's size, so
	// the gateway can tell when too few instances are healthy (panic mode).
	Unroutable int
}

// Equal reports whether two services have the same content.
func (s *Service) Equal(o *Service) bool {
	if s == o {
		return true
	}
	if s == nil || o == nil || s.Name != o.Name || s.Unroutable != o.Unroutable ||
		len(s.Instances) != len(o.Instances) {
		return false
	}
	for i := range s.Instances {
		if !s.Instances[i].equal(&o.Instances[i]) {
			return false
		}
	}
	return true
}

// Snapshot is the complete state of every opted-in service at one moment.
// It is immutable once published: consumers may keep and share it freely, and
// a *Service that did not change keeps its pointer from one snapshot to the
// next, so consumers can reuse work done for it.
type Snapshot struct {
	// Services is sorted by Name.
	Services []*Service
	// Index is the highest Consul raft index among the data it was built from.
	Index uint64
	// Built is when this content was assembled.
	Built time.Time
	// Changed is when discovery received the oldest of the Consul answers
	// this snapshot is the first to include (answers that arrive together
	// are coalesced into one snapshot): the moment Consul's index moved, as
	// near as the gateway can tell. From Changed to the routes being in
	// force is the route-update latency.
	Changed time.Time
}

// Service returns the named service, or nil.
func (s *Snapshot) Service(name string) *Service {
	i, found := slices.BinarySearchFunc(s.Services, name, func(svc *Service, n string) int {
		switch {
		case svc.Name < n:
			return -1
		case svc.Name > n:
			return 1
		}
		return 0
	})
	if !found {
		return nil
	}
	return s.Services[i]
}

// SameContent reports whether two snapshots route the same way: same
// services with the same instances. Index and Built are ignored.
func (s *Snapshot) SameContent(o *Snapshot) bool {
	if s == nil || o == nil {
		return s == o
	}
	return slices.EqualFunc(s.Services, o.Services, (*Service).Equal)
}

// Instances counts the instances over all services.
func (s *Snapshot) Instances() int {
	n := 0
	for _, svc := range s.Services {
		n += len(svc.Instances)
	}
	return n
}
