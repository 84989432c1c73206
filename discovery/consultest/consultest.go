// Package consultest starts real Consul dev agents for tests, each on its own
// free ports and data directory, so tests never collide with each other or
// with a stack a person is running.
package consultest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Agent is one running `consul agent -dev`.
type Agent struct {
	t        testing.TB
	bin      string
	args     []string // all but the internal ports' flags
	internal []int    // server, Serf LAN and WAN, gRPC, gRPC-TLS ports
	HTTPAddr string   // host:port of the HTTP API (of the HTTPS API with TLS)
	log      *Buffer

	// ManagementToken is the initial management token when the agent runs
	// with ACLs (Options.ACL); empty otherwise. Client, Config and
	// WaitReady use it.
	ManagementToken string
	// TLS names the test CA and certificates when the API is served over
	// HTTPS (Options.TLS); nil otherwise.
	TLS *TLSFiles

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
}

// Options choose how StartWith configures the dev agent. The zero value is
// what Start does.
type Options struct {
	// Addr is the loopback host:port of the HTTP (or, with TLS, HTTPS) API;
	// empty picks a free port.
	Addr string
	// ACL enables ACLs in default-deny mode. The agent's initial management
	// token (also its agent token) is Agent.ManagementToken.
	ACL bool
	// TLS serves the HTTP API over HTTPS only, requiring a client
	// certificate signed by a test CA (verify_incoming). The CA, the
	// agent's server certificate (127.0.0.1, localhost) and a client
	// certificate are generated into the test's temporary directory.
	TLS bool
	// HCL is extra agent configuration, written to a file passed with
	// -config-file after the one Options.ACL and Options.TLS produce.
	HCL string
}

// TLSFiles are the PEM files of an agent started with Options.TLS.
type TLSFiles struct {
	CAFile                string // the test CA, which signed both certificates
	ServerCert, ServerKey string // the agent's certificate: 127.0.0.1, localhost
	ClientCert, ClientKey string // a client certificate the agent accepts
}

// Start runs a dev agent and waits until it has a leader and a node in the
// catalog. It is stopped when the test ends.
func Start(t testing.TB) *Agent {
	t.Helper()
	return StartWith(t, Options{})
}

// StartAt is Start with the HTTP API on a given loopback address, for tests
// that point processes at an agent before it exists.
func StartAt(t testing.TB, httpAddr string) *Agent {
	t.Helper()
	return StartWith(t, Options{Addr: httpAddr})
}

// StartWith is Start with extra configuration: ACLs, TLS, any HCL.
func StartWith(t testing.TB, o Options) *Agent {
	t.Helper()
	httpAddr := o.Addr
	if httpAddr == "" {
		httpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePorts(t, 1)[0]))
	}
	_, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		t.Fatalf("consultest: bad address %q: %v", httpAddr, err)
	}
	ports := FreePorts(t, 6)
	ports[0], _ = strconv.Atoi(port)
	a := &Agent{
		t:        t,
		bin:      Binary(t),
		internal: ports[1:],
		HTTPAddr: httpAddr,
		log:      &Buffer{},
	}
	a.args = []string{"agent", "-dev",
		"-node", fmt.Sprintf("test-%d", ports[0]),
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-dns-port", "-1",
		"-log-level", "warn",
	}
	if !o.TLS {
		// Flags beat config files: with TLS the ports come from the file.
		a.args = append(a.args, "-http-port", strconv.Itoa(ports[0]))
	}
	var hcl []string
	if o.ACL {
		a.ManagementToken = newUUID(t)
		hcl = append(hcl, fmt.Sprintf(`acl {
  enabled = true
  default_policy = "deny"
  down_policy = "deny"
  enable_token_persistence = false
  tokens {
    initial_management = %q
    agent = %q
  }
}
`, a.ManagementToken, a.ManagementToken))
	}
	if o.TLS {
		a.TLS = writeTLSFiles(t)
		hcl = append(hcl, fmt.Sprintf(`ports {
  http = -1
  https = %d
}
tls {
  defaults {
    ca_file = %q
    cert_file = %q
    key_file = %q
  }
  https {
    verify_incoming = true
  }
}
`, ports[0], a.TLS.CAFile, a.TLS.ServerCert, a.TLS.ServerKey))
	}
	if o.HCL != "" {
		hcl = append(hcl, o.HCL)
	}
	if len(hcl) > 0 {
		dir := t.TempDir()
		for i, h := range hcl {
			f := filepath.Join(dir, fmt.Sprintf("%d.hcl", i))
			if err := os.WriteFile(f, []byte(h), 0o600); err != nil {
				t.Fatalf("consultest: %v", err)
			}
			a.args = append(a.args, "-config-file", f)
		}
	}
	a.start()
	t.Cleanup(a.Stop)
	return a
}

// start runs the agent and waits until it is ready. A free port handed
// out may be taken before the agent binds it (by any process's outgoing
// connection, whose local port comes from the same range): when the agent
// exits for an address in use, it starts again on fresh internal ports.
// The HTTP port stays, as callers may already hold it.
func (a *Agent) start() {
	a.t.Helper()
	for attempt := 1; ; attempt++ {
		from := len(a.log.String())
		cmd := exec.Command(a.bin, slices.Concat(a.args, []string{
			"-server-port", strconv.Itoa(a.internal[0]),
			"-serf-lan-port", strconv.Itoa(a.internal[1]),
			"-serf-wan-port", strconv.Itoa(a.internal[2]),
			"-grpc-port", strconv.Itoa(a.internal[3]),
			"-grpc-tls-port", strconv.Itoa(a.internal[4])})...)
		cmd.Stdout, cmd.Stderr = a.log, a.log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			a.t.Fatalf("start consul: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		a.mu.Lock()
		a.cmd, a.exited = cmd, exited
		a.mu.Unlock()
		err := a.awaitReady()
		if err == nil {
			return
		}
		if attempt < 3 && strings.Contains(a.log.String()[from:], "address already in use") {
			a.Stop()
			a.internal = FreePorts(a.t, len(a.internal))
			continue
		}
		a.t.Fatalf("consul at %s not ready: %v\n%s", a.HTTPAddr, err, a.log.String())
	}
}

// Client returns a Consul API client for this agent.
func (a *Agent) Client() *api.Client {
	a.t.Helper()
	c, err := api.NewClient(a.Config())
	if err != nil {
		a.t.Fatalf("consul client: %v", err)
	}
	return c
}

// Config returns an API config pointing at this agent: https with the test
// CA and client certificate under TLS, the management token under ACLs.
func (a *Agent) Config() *api.Config {
	cfg := api.DefaultConfig()
	cfg.Address = a.HTTPAddr
	cfg.Scheme = "http"
	cfg.Token = a.ManagementToken
	cfg.TokenFile = ""
	cfg.TLSConfig = api.TLSConfig{}
	if a.TLS != nil {
		cfg.Scheme = "https"
		cfg.TLSConfig = api.TLSConfig{CAFile: a.TLS.CAFile, CertFile: a.TLS.ClientCert, KeyFile: a.TLS.ClientKey}
	}
	return cfg
}

// Env returns the environment variables that point a child process at this
// agent: the address (https:// under TLS), the CA and client certificate
// under TLS, and the management token under ACLs.
func (a *Agent) Env() []string {
	return a.EnvWith(EnvOptions{Token: a.ManagementToken})
}

// EnvOptions choose what EnvWith hands a child process.
type EnvOptions struct {
	// Token is CONSUL_HTTP_TOKEN; empty sets the variable empty, so the
	// child runs with the anonymous token even if the test's own
	// environment names one.
	Token string
	// NoClientCert leaves out CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY
	// under TLS (the CA is still given).
	NoClientCert bool
}

// EnvWith is Env with a chosen token and client certificate. Without ACLs
// and TLS it is just CONSUL_HTTP_ADDR (plus the token when one is given).
func (a *Agent) EnvWith(o EnvOptions) []string {
	if a.TLS == nil && a.ManagementToken == "" && o.Token == "" {
		return []string{api.HTTPAddrEnvName + "=" + a.HTTPAddr}
	}
	env := []string{api.HTTPTokenEnvName + "=" + o.Token, api.HTTPTokenFileEnvName + "="}
	if a.TLS == nil {
		return append(env, api.HTTPAddrEnvName+"="+a.HTTPAddr)
	}
	env = append(env,
		api.HTTPAddrEnvName+"=https://"+a.HTTPAddr,
		api.HTTPCAFile+"="+a.TLS.CAFile,
		api.HTTPCAPath+"=",
		api.HTTPSSLEnvName+"=",
		api.HTTPSSLVerifyEnvName+"=",
	)
	if o.NoClientCert {
		return append(env, api.HTTPClientCert+"=", api.HTTPClientKey+"=")
	}
	return append(env, api.HTTPClientCert+"="+a.TLS.ClientCert, api.HTTPClientKey+"="+a.TLS.ClientKey)
}

// CreateToken creates an ACL policy with the given rules (HCL) and a token
// holding only that policy, using the management token, and returns the
// token's SecretID. The agent must run with Options.ACL.
func (a *Agent) CreateToken(name, rules string) string {
	a.t.Helper()
	if a.ManagementToken == "" {
		a.t.Fatalf("consultest: CreateToken on an agent without ACLs")
	}
	acl := a.Client().ACL()
	p, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	if err != nil {
		a.t.Fatalf("consultest: create policy %s: %v", name, err)
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{
		Description: name,
		Policies:    []*api.ACLTokenPolicyLink{{ID: p.ID}},
	}, nil)
	if err != nil {
		a.t.Fatalf("consultest: create token %s: %v", name, err)
	}
	return tok.SecretID
}

// WaitReady polls until the agent has elected itself leader and registered
// its own node.
func (a *Agent) WaitReady() {
	a.t.Helper()
	if err := a.awaitReady(); err != nil {
		a.t.Fatalf("consul at %s not ready: %v\n%s", a.HTTPAddr, err, a.log.String())
	}
}

// awaitReady is WaitReady's poll: it gives up after 30 s, or at once when
// the agent has exited.
func (a *Agent) awaitReady() error {
	c := a.Client()
	a.mu.Lock()
	exited := a.exited
	a.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, err := c.Status().Leader()
		if err == nil && leader != "" {
			nodes, _, err := c.Catalog().Nodes(nil)
			if err == nil && len(nodes) > 0 {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("the agent exited (last error: %v)", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 30s (last error: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the agent (SIGINT, then SIGKILL) and waits for it.
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, exited := a.cmd, a.exited
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	if a.t.Failed() {
		a.t.Logf("consul %s output:\n%s", a.HTTPAddr, a.log.String())
	}
}

// Restart stops the agent and starts a fresh one on the same ports. A dev
// agent keeps no state, so every registration is lost, as when a real agent
// is rebuilt.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	a.start()
}

// Output is what the agent printed so far.
func (a *Agent) Output() string { return a.log.String() }

// Binary finds the consul binary: $CONSUL_BIN, else bin/consul at the module
// root (built by `make tools`), else consul on PATH.
func Binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("CONSUL_BIN"); b != "" {
		return b
	}
	if root, err := ModuleRoot(); err == nil {
		b := filepath.Join(root, "bin", "consul")
		if _, err := os.Stat(b); err == nil {
			return b
		}
	}
	if b, err := exec.LookPath("consul"); err == nil {
		return b
	}
	t.Fatalf("no consul binary: run `make tools`, or set CONSUL_BIN")
	return ""
}

// ModuleRoot walks up from the working directory to the directory holding
// go.mod of the main module.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/hopgate/hopgate\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod of github.com/hopgate/hopgate not found above the working directory")
		}
		dir = parent
	}
}

// FreePorts returns n distinct TCP ports that were free a moment ago.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		held = append(held, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Eventually polls cond every 50ms until it returns nil or the deadline
// passes, then fails the test with the last error.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not true within %v: %v", what, within, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Buffer collects a process's output while it runs: safe for concurrent
// writes and reads.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
