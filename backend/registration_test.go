package backend

import (
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestNewRegistrarDefaults(t *testing.T) {
	r, err := NewRegistrar(&api.Config{Address: "127.0.0.1:8500"}, Registration{
		Service: "web",
		Port:    8080,
		Routes:  []string{"/", "api.example.com/v1 strip=/v1"},
		Tags:    []string{"blue", "gateway.route=/"}, // duplicate route tag: kept once
		Meta:    map[string]string{"team": "edge"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if !regexp.MustCompile(`^web-[a-z0-9-]+-8080-[0-9a-f]{12}$`).MatchString(r.ID()) {
		t.Errorf("ID = %q, want web-<host>-8080-<12 hex>", r.ID())
	}
	if want := []string{"gateway.route=/", "gateway.route=api.example.com/v1 strip=/v1", "blue"}; !slices.Equal(r.Tags(), want) {
		t.Errorf("tags = %q, want %q", r.Tags(), want)
	}
	meta := r.Meta()
	if meta["team"] != "edge" || meta[MetaVersion] != DefaultVersion() || meta[MetaHost] != host {
		t.Errorf("meta = %v, want team, version=%q and host=%q", meta, DefaultVersion(), host)
	}
	if r.Address() != "" {
		t.Errorf("Address() before any registration = %q, want empty (detected later)", r.Address())
	}

	reg := r.registration("10.1.2.3")
	if reg.ID != r.ID() || reg.Name != "web" || reg.Address != "10.1.2.3" || reg.Port != 8080 {
		t.Errorf("registration = %+v", reg)
	}
	c := reg.Check
	if c.HTTP != "http://10.1.2.3:8080/healthz" || c.Method != "GET" || c.Interval != "2s" || c.Timeout != "1s" || c.DeregisterCriticalServiceAfter != "1m0s" {
		t.Errorf("check = %+v", c)
	}
	if got := r.registration("fd00::1").Check.HTTP; got != "http://[fd00::1]:8080/healthz" {
		t.Errorf("IPv6 check URL = %q", got)
	}
}

func TestNewRegistrarKeepsGivenValues(t *testing.T) {
	r, err := NewRegistrar(&api.Config{Address: "127.0.0.1:8500"}, Registration{
		Service:                 "web",
		ID:                      "web-1",
		Address:                 "web.internal",
		Port:                    9000,
		Meta:                    map[string]string{MetaVersion: "1.2.3", MetaHost: "h"},
		CheckPath:               "/ready",
		CheckInterval:           5 * time.Second,
		CheckTimeout:            3 * time.Second,
		DeregisterCriticalAfter: 90 * time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID() != "web-1" || r.Address() != "web.internal" {
		t.Errorf("ID, Address = %q, %q", r.ID(), r.Address())
	}
	if m := r.Meta(); m[MetaVersion] != "1.2.3" || m[MetaHost] != "h" {
		t.Errorf("meta = %v: given values must win over defaults", m)
	}
	c := r.registration(r.Address()).Check
	if c.HTTP != "http://web.internal:9000/ready" || c.Interval != "5s" || c.Timeout != "3s" || c.DeregisterCriticalServiceAfter != "1m30s" {
		t.Errorf("check = %+v", c)
	}
	if len(r.Tags()) != 0 {
		t.Errorf("tags = %q, want none", r.Tags())
	}
}

func TestNewRegistrarRejects(t *testing.T) {
	ok := Registration{Service: "web", Port: 8080}
	tests := []struct {
		name string
		edit func(*Registration)
		want string // substring of the error
	}{
		{"no service", func(r *Registration) { r.Service = "" }, "service name is empty"},
		{"service with slash", func(r *Registration) { r.Service = "a/b" }, `service name "a/b"`},
		{"no port", func(r *Registration) { r.Port = 0 }, "port 0"},
		{"port too big", func(r *Registration) { r.Port = 70000 }, "port 70000"},
		{"id with space", func(r *Registration) { r.ID = "web 1" }, `instance id "web 1"`},
		{"route without path", func(r *Registration) { r.Routes = []string{"/", "example.com"} }, `route tag "gateway.route=example.com"`},
		{"route not clean", func(r *Registration) { r.Routes = []string{"/a/../b"} }, `route tag "gateway.route=/a/../b"`},
		{"route bad option", func(r *Registration) { r.Routes = []string{"/ strip"} }, `route tag "gateway.route=/ strip"`},
		{"empty route", func(r *Registration) { r.Routes = []string{""} }, `route tag "gateway.route="`},
		{"bad route among tags", func(r *Registration) { r.Tags = []string{"gateway.route=nope"} }, `route tag "gateway.route=nope"`},
		{"empty tag", func(r *Registration) { r.Tags = []string{" "} }, "empty tag"},
		{"address with port", func(r *Registration) { r.Address = "10.0.0.1:80" }, `address "10.0.0.1:80"`},
		{"address with scheme", func(r *Registration) { r.Address = "http://x" }, `address "http://x"`},
		{"bracketed IPv6", func(r *Registration) { r.Address = "[::1]" }, "without brackets"},
		{"meta key", func(r *Registration) { r.Meta = map[string]string{"a.b": "x"} }, `meta key "a.b"`},
		{"reserved meta key", func(r *Registration) { r.Meta = map[string]string{"consul-x": "x"} }, `meta key "consul-x"`},
		{"long meta value", func(r *Registration) { r.Meta = map[string]string{"k": strings.Repeat("v", 513)} }, `meta "k"`},
		{"check path", func(r *Registration) { r.CheckPath = "healthz" }, `check path "healthz"`},
		{"check path with TCP check", func(r *Registration) { r.CheckTCP, r.CheckPath = true, "/healthz" }, "with a TCP check"},
		{"negative interval", func(r *Registration) { r.CheckInterval = -time.Second }, "check interval -1s is negative"},
		{"negative reap", func(r *Registration) { r.DeregisterCriticalAfter = -time.Second }, "deregister-critical-after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := ok
			tt.edit(&reg)
			_, err := NewRegistrar(&api.Config{Address: "127.0.0.1:8500"}, reg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNewRegistrarTCPCheck(t *testing.T) {
	r, err := NewRegistrar(&api.Config{Address: "127.0.0.1:8500"}, Registration{
		Service: "web", Port: 8000, CheckTCP: true, CheckInterval: 5 * time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := r.registration("10.1.2.3").Check
	if c.TCP != "10.1.2.3:8000" || c.HTTP != "" || c.Method != "" || c.Name != "TCP 10.1.2.3:8000" ||
		c.Interval != "5s" || c.Timeout != "1s" || c.DeregisterCriticalServiceAfter != "1m0s" {
		t.Errorf("check = %+v, want a TCP check of 10.1.2.3:8000 with the usual pacing and reaping", c)
	}
	if got := r.registration("fd00::1").Check.TCP; got != "[fd00::1]:8000" {
		t.Errorf("IPv6 TCP check = %q", got)
	}
}

func TestNewRegistrarUnixSocketNeedsAddress(t *testing.T) {
	cfg := &api.Config{Address: "unix:///run/consul.sock"}
	if _, err := NewRegistrar(cfg, Registration{Service: "web", Port: 80}, nil); err == nil || !strings.Contains(err.Error(), "unix socket") {
		t.Fatalf("err = %v, want one about the unix socket", err)
	}
	cfg = &api.Config{Address: "unix:///run/consul.sock"}
	if _, err := NewRegistrar(cfg, Registration{Service: "web", Port: 80, Address: "10.0.0.1"}, nil); err != nil {
		t.Fatalf("with an address: %v", err)
	}
}

func TestNewIDUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newID("hello", 8080)
		if err := ValidateID(id); err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("duplicate ID %q", id)
		}
		seen[id] = true
	}
	// The readable part is the same every time.
	a, b := newID("hello", 8080), newID("hello", 8080)
	if a[:len(a)-12] != b[:len(b)-12] {
		t.Errorf("%q and %q differ before the random suffix", a, b)
	}
}

func TestShortHost(t *testing.T) {
	h := shortHost()
	if !regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`).MatchString(h) {
		t.Errorf("shortHost() = %q: want a lower-case DNS label", h)
	}
}

func TestDetectAddress(t *testing.T) {
	for _, agent := range []string{"127.0.0.1:8500", "127.0.0.1", "localhost:8500"} {
		got, err := DetectAddress(agent)
		if err != nil {
			t.Fatalf("DetectAddress(%q): %v", agent, err)
		}
		ip := net.ParseIP(got)
		if ip == nil || !ip.IsLoopback() {
			t.Errorf("DetectAddress(%q) = %q, want a loopback IP", agent, got)
		}
	}
	if _, err := DetectAddress(":8500"); err == nil {
		t.Error("DetectAddress(:8500): no error for an address without host")
	}
}

func TestValidateAddress(t *testing.T) {
	for _, a := range []string{"10.0.0.1", "fd00::1", "web", "web-1.example.com", "host_name"} {
		if err := ValidateAddress(a); err != nil {
			t.Errorf("ValidateAddress(%q): %v", a, err)
		}
	}
	for _, a := range []string{"", "10.0.0.1:80", "[fd00::1]", "http://web", "a..b", "-web", "web/x", "we b"} {
		if err := ValidateAddress(a); err == nil {
			t.Errorf("ValidateAddress(%q): no error", a)
		}
	}
}

func TestDefaultVersion(t *testing.T) {
	if v := DefaultVersion(); v == "" || strings.ContainsAny(v, " \n") {
		t.Errorf("DefaultVersion() = %q", v)
	}
}
