package discovery

import (
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"
)

// Consul is the part of the Consul API the watcher uses, narrowed so unit
// tests can script it.
type Consul interface {
	// Services lists catalog services and their tags (GET
	// /v1/catalog/services), blocking per q.
	Services(q *api.QueryOptions) (map[string][]string, *api.QueryMeta, error)
	// ServiceHealth lists instances of one service with their checks (GET
	// /v1/health/service/:name, passingOnly=false), blocking per q.
	ServiceHealth(service string, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error)
}

// NewConsul adapts a *api.Client.
func NewConsul(c *api.Client) Consul { return apiConsul{c} }

type apiConsul struct{ c *api.Client }

var _ Consul = apiConsul{}

func (a apiConsul) Services(q *api.QueryOptions) (map[string][]string, *api.QueryMeta, error) {
	return a.c.Catalog().Services(q)
}

func (a apiConsul) ServiceHealth(service string, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	// passingOnly=false: we want warning instances too, and we aggregate node
	// and service checks ourselves.
	return a.c.Health().Service(service, "", false, q)
}

// instancesFrom turns a health answer into the routable instances of one
// service, sorted by Key, and counts the instances left out as critical or
// in maintenance. It copies everything it keeps: the result must stay
// immutable however the caller reuses the API's memory.
func instancesFrom(entries []*api.ServiceEntry) (routable []Instance, unroutable int) {
	out := make([]Instance, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		var health Health
		// Service and node checks together: a node that fails its serf
		// check takes all its instances down with it.
		switch e.Checks.AggregatedStatus() {
		case api.HealthPassing:
			health = Passing
		case api.HealthWarning:
			health = Warning
		default:
			// Critical, maintenance, or a status this client does not know
			// (AggregatedStatus returns ""): not routable.
			unroutable++
			continue
		}
		inst := Instance{
			ID:      e.Service.ID,
			Address: e.Service.Address,
			Port:    e.Service.Port,
			Tags:    cloneTags(e.Service.Tags),
			Meta:    cloneMeta(e.Service.Meta),
			Weight:  weight(e.Service.Weights, health),
			Health:  health,
		}
		if e.Node != nil {
			inst.Node = e.Node.Node
			if inst.Address == "" {
				inst.Address = e.Node.Address
			}
		}
		out = append(out, inst)
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.Key(), b.Key()) })
	return out, unroutable
}

// weight picks the instance's weight for its health. Consul fills in 1/1
// when a registration gives no weights, so 0/0 only comes from something that
// reports no weights at all (an old agent, a hand-made catalog entry); that
// means the default, not "never pick". A Warning weight of 0 is a real
// setting (no traffic while warning) and is kept as 0.
func weight(w api.AgentWeights, h Health) int {
	switch {
	case w.Passing == 0 && w.Warning == 0:
		return 1
	case h == Warning:
		return w.Warning
	default:
		return w.Passing
	}
}

func cloneTags(t []string) []string {
	if len(t) == 0 {
		return nil
	}
	return slices.Clone(t)
}

func cloneMeta(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}
