package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// The two least-privilege ACL policies the README's SECURITY section
// documents; TestConsulACLLeastPrivilege proves they are enough, and that
// they grant no more than they say.
const (
	// gatewayPolicy: the gateway lists services (GET /v1/catalog/services)
	// and reads each one's instances with their checks
	// (GET /v1/health/service/:name); both answers are filtered by
	// service:read, and health results also by node:read on each
	// instance's node.
	gatewayPolicy = `
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
`
	// backendPolicy: a hello registers, re-registers and deregisters its
	// own instances of the service "hello" on its local agent and watches
	// its own registration (GET /v1/agent/service/:id): service:write on
	// that one name covers all of it.
	backendPolicy = `
service "hello" {
  policy = "write"
}
`
)

func TestConsulACLLeastPrivilege(t *testing.T) {
	agent := consultest.StartWith(t, consultest.Options{ACL: true})
	gwToken := agent.CreateToken("hopgate-gateway", gatewayPolicy)
	helloToken := agent.CreateToken("hopgate-hello", backendPolicy)

	// Default deny: the tokens can do what their policy says and no more.
	if err := registerWith(agent, helloToken, "other"); !isForbidden(err) {
		t.Errorf("hello token registering service \"other\" = %v, want 403", err)
	}
	if err := registerWith(agent, gwToken, "hello"); !isForbidden(err) {
		t.Errorf("gateway token registering service \"hello\" = %v, want 403", err)
	}
	if err := registerWith(agent, gwToken, "other"); !isForbidden(err) {
		t.Errorf("gateway token registering service \"other\" = %v, want 403", err)
	}
	if err := registerWith(agent, "", "hello"); !isForbidden(err) {
		t.Errorf("no token registering service \"hello\" = %v, want 403", err)
	}

	s := securedStack(t, agent)
	s.startGatewayWith(agent.EnvWith(consultest.EnvOptions{Token: gwToken}))
	anon := securedStack(t, agent)
	anon.startGatewayWith(agent.EnvWith(consultest.EnvOptions{})) // no token at all
	a := s.startHelloWith(agent.EnvWith(consultest.EnvOptions{Token: helloToken}))
	b := s.startHelloWith(agent.EnvWith(consultest.EnvOptions{Token: helloToken}))
	s.waitInstances(30*time.Second, a, b)
	assertAnswers(t, s, a, b)

	// The hellos are registered and passing (as the management token sees
	// them) and the gateway with its token routes them: the gateway
	// without a token still routes nothing.
	waitPassing(t, agent, "hello", 2)
	assertRoutesNothing(t, anon, "gateway without a token")

	// Why the gateway policy needs node:read: with service:read alone the
	// catalog lists "hello", but the health endpoint filters out every
	// instance, because each one's node is unreadable.
	serviceOnly := clientWith(t, agent, agent.CreateToken("service-read-only", `service_prefix "" { policy = "read" }`))
	if services, _, err := serviceOnly.Catalog().Services(nil); err != nil || services["hello"] == nil {
		t.Errorf("catalog with service:read = %v %v, want hello listed", services, err)
	}
	if entries, _, err := serviceOnly.Health().Service("hello", "", false, nil); err != nil || len(entries) != 0 {
		t.Errorf("health of hello with service:read only = %d entries %v, want none (node:read missing)", len(entries), err)
	}
	if entries, _, err := clientWith(t, agent, gwToken).Health().Service("hello", "", true, nil); err != nil || len(entries) != 2 {
		t.Errorf("passing hello instances with the gateway token = %d %v, want 2", len(entries), err)
	}
	// Default deny on reads too: the hello token sees its own service only.
	if services, _, err := clientWith(t, agent, helloToken).Catalog().Services(nil); err != nil || len(services) != 1 || services["hello"] == nil {
		t.Errorf("catalog with the hello token = %v %v, want only hello", services, err)
	}

	// The hello token also deregisters: a hello stopped with SIGTERM leaves
	// Consul and the gateway.
	s.hellos[b].signal(syscall.SIGTERM)
	if code := s.hellos[b].wait(20 * time.Second); code != 0 {
		t.Errorf("hello exited %d after SIGTERM, want 0", code)
	}
	waitPassing(t, agent, "hello", 1)
	s.waitInstances(10*time.Second, a)
	if strings.Contains(agent.Output(), "blocked by ACLs") {
		t.Errorf("the agent's anti-entropy sync was refused:\n%s", agent.Output())
	}
}

func TestConsulTLSClientCertificate(t *testing.T) {
	agent := consultest.StartWith(t, consultest.Options{TLS: true})

	// The agent refuses a client that trusts its CA but has no certificate
	// of its own, and a client speaking plain HTTP.
	cfg := agent.Config()
	cfg.TLSConfig.CertFile, cfg.TLSConfig.KeyFile = "", ""
	if err := selfWith(cfg); err == nil {
		t.Error("API call with the CA but no client certificate succeeded, want a TLS refusal")
	} else {
		t.Logf("without a client certificate: %v", err)
	}
	cfg = agent.Config()
	cfg.Scheme, cfg.TLSConfig = "http", api.TLSConfig{}
	if err := selfWith(cfg); err == nil {
		t.Error("plain HTTP API call succeeded, want it refused")
	}

	s := securedStack(t, agent)
	s.startGatewayWith(agent.Env())
	noCert := securedStack(t, agent)
	noCert.startGatewayWith(agent.EnvWith(consultest.EnvOptions{NoClientCert: true}))
	a := s.startHelloWith(agent.Env())
	b := s.startHelloWith(agent.Env())
	s.waitInstances(30*time.Second, a, b)
	assertAnswers(t, s, a, b)

	waitPassing(t, agent, "hello", 2)
	assertRoutesNothing(t, noCert, "gateway without a client certificate")
	if resp, err := noCert.client.Get("http://" + noCert.admin + "/readyz"); err != nil {
		t.Errorf("readyz of the gateway without a client certificate: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("readyz of the gateway without a client certificate = %d, want 503", resp.StatusCode)
		}
	}
	if doc, err := noCert.routes(); err != nil || doc.Discovery.LastError == "" {
		t.Errorf("gateway without a client certificate reports no discovery error: %+v %v", doc.Discovery, err)
	} else {
		t.Logf("gateway without a client certificate: %s", doc.Discovery.LastError)
	}
}

// securedStack is a stack around an agent started with options; its
// processes get the Consul variables the test chooses.
func securedStack(t *testing.T, agent *consultest.Agent) *stack {
	return &stack{t: t, consul: agent, hellos: map[string]*proc{}, client: &http.Client{Timeout: 10 * time.Second}}
}

// startGatewayWith is startGateway with the given CONSUL_* variables.
func (s *stack) startGatewayWith(consulEnv []string, extra ...string) {
	s.t.Helper()
	ports := consultest.FreePorts(s.t, 2)
	s.public = "127.0.0.1:" + strconv.Itoa(ports[0])
	s.admin = "127.0.0.1:" + strconv.Itoa(ports[1])
	env := append(consulEnv, "OTEL_SERVICE_NAME=hopgate", "HOPGATE_LOG_LEVEL=debug")
	s.gateway = startProc(s.t, "gateway-"+s.admin, filepath.Join(binDir, "hopgate"), env,
		append([]string{"-listen", s.public, "-admin", s.admin}, extra...)...)
}

// startHelloWith is startHello with the given CONSUL_* variables.
func (s *stack) startHelloWith(consulEnv []string, extra ...string) string {
	s.t.Helper()
	s.n++
	id := fmt.Sprintf("hello-e2e-%d", s.n)
	env := append(consulEnv, "OTEL_SERVICE_NAME=hello", "HOPGATE_LOG_LEVEL=debug")
	args := append([]string{"-listen", "127.0.0.1:0", "-id", id, "-drain", "2s"}, extra...)
	s.hellos[id] = startProc(s.t, id, filepath.Join(binDir, "hello"), env, args...)
	return id
}

// assertAnswers sends requests through the gateway until every id answered.
func assertAnswers(t *testing.T, s *stack, ids ...string) {
	t.Helper()
	seen := map[string]bool{}
	consultest.Eventually(t, 10*time.Second, fmt.Sprintf("answers from %v through the gateway", ids), func() error {
		code, body, err := s.get("/")
		if err != nil || code != 200 || !strings.HasPrefix(body, "Hello from ") {
			return fmt.Errorf("GET / = %d %q %v", code, body, err)
		}
		seen[lastWord(body)] = true
		for _, id := range ids {
			if !seen[id] {
				return fmt.Errorf("no answer from %s yet (seen %v)", id, seen)
			}
		}
		return nil
	})
}

// waitPassing waits until Consul (asked with the management token and
// client certificate) has n passing instances of service.
func waitPassing(t *testing.T, agent *consultest.Agent, service string, n int) {
	t.Helper()
	c := agent.Client()
	consultest.Eventually(t, 30*time.Second, fmt.Sprintf("%d passing %s instances in Consul", n, service), func() error {
		entries, _, err := c.Health().Service(service, "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != n {
			return fmt.Errorf("%d passing", len(entries))
		}
		return nil
	})
}

// assertRoutesNothing checks, on three consecutive polls of /routes, that
// the gateway routes nothing. Called once Consul demonstrably holds passing
// instances that a correctly configured gateway already routes.
func assertRoutesNothing(t *testing.T, s *stack, what string) {
	t.Helper()
	for i := range 3 {
		if i > 0 {
			time.Sleep(250 * time.Millisecond) // pacing between polls, not a readiness wait
		}
		doc, err := s.routes()
		if err != nil {
			t.Fatalf("%s: /routes: %v", what, err)
		}
		if len(doc.Routes) != 0 {
			t.Fatalf("%s routes %+v, want nothing", what, doc.Routes)
		}
		if i == 2 {
			t.Logf("%s: ready=%v, no routes, discovery %+v", what, doc.Ready, doc.Discovery)
		}
	}
}

func registerWith(agent *consultest.Agent, token, service string) error {
	cfg := agent.Config()
	cfg.Token = token
	c, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	err = c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: service + "-probe", Name: service, Port: 1})
	if err == nil {
		_ = c.Agent().ServiceDeregister(service + "-probe")
	}
	return err
}

func clientWith(t *testing.T, agent *consultest.Agent, token string) *api.Client {
	t.Helper()
	cfg := agent.Config()
	cfg.Token = token
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func isForbidden(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusForbidden
}

func selfWith(cfg *api.Config) error {
	c, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	_, err = c.Agent().Self()
	return err
}
