package backend

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
)

// agent is the part of the Consul agent API the Registrar uses, narrowed so
// unit tests can script it (see fakeAgent in the tests).
type agent interface {
	// register (re)places the service and its check on the agent.
	register(ctx context.Context, reg *api.AgentServiceRegistration) error
	// deregister removes the service; an unknown ID is not an error.
	deregister(ctx context.Context, id string) error
	// service is a blocking query on the agent's local copy of the service:
	// it returns once the content hash differs from hash (at once when hash
	// is empty) or after about wait. A service the agent does not know is
	// errNotFound.
	service(ctx context.Context, id, hash string, wait time.Duration) (*api.AgentService, string, error)
}

// errNotFound: the agent does not know the service ID (it restarted without
// state, or someone deregistered the instance).
var errNotFound = errors.New("service not registered on the agent")

// consulAgent is the real agent behind an *api.Client.
type consulAgent struct{ c *api.Client }

var _ agent = consulAgent{}

func (a consulAgent) register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}
	return a.c.Agent().ServiceRegisterOpts(reg, opts.WithContext(ctx))
}

func (a consulAgent) deregister(ctx context.Context, id string) error {
	err := a.c.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	if isStatus(err, http.StatusNotFound) {
		return nil
	}
	return err
}

func (a consulAgent) service(ctx context.Context, id, hash string, wait time.Duration) (*api.AgentService, string, error) {
	q := &api.QueryOptions{WaitHash: hash, WaitTime: wait}
	svc, meta, err := a.c.Agent().Service(id, q.WithContext(ctx))
	if isStatus(err, http.StatusNotFound) {
		return nil, "", errNotFound
	}
	if err != nil {
		return nil, "", err
	}
	return svc, meta.LastContentHash, nil
}

func isStatus(err error, code int) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == code
}
