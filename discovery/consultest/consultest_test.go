package consultest

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestStartWithACLDefaultDeny(t *testing.T) {
	a := StartWith(t, Options{ACL: true})
	if a.ManagementToken == "" {
		t.Fatal("no management token")
	}
	// The management client sees the agent's node; the anonymous token
	// sees nothing under default deny.
	if nodes, _, err := a.Client().Catalog().Nodes(nil); err != nil || len(nodes) == 0 {
		t.Fatalf("nodes with the management token: %v %v", nodes, err)
	}
	cfg := a.Config()
	cfg.Token = ""
	anon, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if nodes, _, err := anon.Catalog().Nodes(nil); err != nil || len(nodes) != 0 {
		t.Fatalf("nodes with no token = %v %v, want none", nodes, err)
	}

	tok := a.CreateToken("only-x", `service "x" { policy = "write" }`)
	cfg = a.Config()
	cfg.Token = tok
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "x", Port: 1}); err != nil {
		t.Fatalf("register x with its token: %v", err)
	}
	err = c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "y", Port: 1})
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("register y with x's token = %v, want 403", err)
	}
	env := strings.Join(a.Env(), " ")
	if !strings.Contains(env, "CONSUL_HTTP_TOKEN="+a.ManagementToken) {
		t.Errorf("Env() = %s, want the management token", env)
	}
}

func TestStartWithTLSClientCertificate(t *testing.T) {
	a := StartWith(t, Options{TLS: true})
	if _, err := a.Client().Agent().Self(); err != nil {
		t.Fatalf("agent self over https with client certificate: %v", err)
	}
	env := strings.Join(a.Env(), " ")
	for _, want := range []string{"CONSUL_HTTP_ADDR=https://" + a.HTTPAddr, "CONSUL_CACERT=" + a.TLS.CAFile,
		"CONSUL_CLIENT_CERT=" + a.TLS.ClientCert, "CONSUL_CLIENT_KEY=" + a.TLS.ClientKey} {
		if !strings.Contains(env, want) {
			t.Errorf("Env() = %s, want %s", env, want)
		}
	}
	cfg := a.Config()
	cfg.TLSConfig.CertFile, cfg.TLSConfig.KeyFile = "", ""
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Agent().Self(); err == nil {
		t.Error("agent self without a client certificate succeeded, want a TLS refusal")
	}
	cfg = a.Config()
	cfg.Scheme, cfg.TLSConfig = "http", api.TLSConfig{}
	c, err = api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Agent().Self(); err == nil {
		t.Error("plain http to the https port succeeded")
	}
}

func TestStartWithACLAndTLS(t *testing.T) {
	a := StartWith(t, Options{ACL: true, TLS: true})
	if nodes, _, err := a.Client().Catalog().Nodes(nil); err != nil || len(nodes) == 0 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
}

// TestStartMovesOffATakenPort: a free port handed out can be taken before
// the agent binds it. The agent then starts again on fresh internal ports,
// keeping its HTTP address.
func TestStartMovesOffATakenPort(t *testing.T) {
	a := Start(t)
	a.Stop()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	a.internal[4] = port // gRPC-TLS: the port seen taken in the wild
	a.start()
	if a.internal[4] == port {
		t.Errorf("the agent kept the taken port %d", port)
	}
	if !strings.Contains(a.Output(), "address already in use") {
		t.Errorf("the first start did not meet the taken port:\n%s", a.Output())
	}
	if _, err := a.Client().Status().Leader(); err != nil {
		t.Errorf("the agent at %s does not answer: %v", a.HTTPAddr, err)
	}
}
