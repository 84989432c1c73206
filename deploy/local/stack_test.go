package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestRoutesMissing(t *testing.T) {
	const three = `{"ready":true,"routes":[{"route":"/api","path_prefix":"/api","service":"api","instances":[{}]},
		{"route":"/","path_prefix":"/","service":"hello","instances":[{"id":"a"},{"id":"b"},{"id":"c"}]}]}`
	for _, tc := range []struct {
		name, body string
		want       int
		missing    string
	}{
		{"all there", three, 3, ""},
		{"more than asked", three, 2, ""},
		{"some missing", three, 4, "route / has 3 of 4 hello instances"},
		{"no route", `{"routes":[]}`, 3, "route / is not in the routing table yet (0 of 3 hello instances)"},
		{"host route does not count", `{"routes":[{"route":"a.example/","host":"a.example","path_prefix":"/","instances":[{},{},{}]}]}`, 3, "route / is not in the routing table"},
		{"no hellos wanted", `not even JSON`, 0, ""},
		{"bad JSON", `<html>`, 1, "not the JSON expected"},
	} {
		if got := routesMissing([]byte(tc.body), tc.want); (tc.missing == "") != (got == "") || !strings.Contains(got, tc.missing) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.missing)
		}
	}
}

func TestChildEnv(t *testing.T) {
	env := childEnv([]string{
		"PATH=/usr/bin",
		"CONSUL_HTTP_ADDR=prod:8500",
		"CONSUL_HTTP_SSL=true",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://collector:4318/v1/traces",
		"OTEL_TRACES_EXPORTER=console",
		"OTEL_SERVICE_NAME=other",
		"OTEL_TRACES_SAMPLER=always_on",
		"JAEGER_QUERY_PORT=1",
		"HOPGATE_LOG_LEVEL=debug",
	}, map[string]string{"CONSUL_HTTP_ADDR": "127.0.0.1:8500", "OTEL_SERVICE_NAME": "hello"})
	want := []string{
		"PATH=/usr/bin",
		"OTEL_TRACES_SAMPLER=always_on",
		"HOPGATE_LOG_LEVEL=debug",
		"CONSUL_HTTP_ADDR=127.0.0.1:8500",
		"OTEL_SERVICE_NAME=hello",
	}
	if !slices.Equal(env, want) {
		t.Errorf("got  %q\nwant %q", env, want)
	}
}

func TestFindBinary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "consul")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) string { return "" }

	if p, err := findBinary("consul", "CONSUL_BIN", dir, true, noEnv); err != nil || p != exe {
		t.Errorf("from -bin: %q, %v", p, err)
	}
	other := filepath.Join(t.TempDir(), "my-consul")
	os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755)
	env := func(k string) string {
		if k == "CONSUL_BIN" {
			return other
		}
		return ""
	}
	if p, err := findBinary("consul", "CONSUL_BIN", dir, true, env); err != nil || p != other {
		t.Errorf("from CONSUL_BIN: %q, %v", p, err)
	}
	badEnv := func(string) string { return filepath.Join(dir, "missing") }
	if _, err := findBinary("consul", "CONSUL_BIN", dir, true, badEnv); err == nil || !strings.Contains(err.Error(), "CONSUL_BIN=") {
		t.Errorf("bad CONSUL_BIN: %v", err)
	}
	if _, err := findBinary("hello", "", dir, false, noEnv); err == nil || !strings.Contains(err.Error(), "no hello binary at "+filepath.Join(dir, "hello")) {
		t.Errorf("not executable: %v", err)
	}
	if _, err := findBinary("hopgate", "", dir, false, noEnv); err == nil || !strings.Contains(err.Error(), "pass -bin") {
		t.Errorf("missing: %v", err)
	}
}

func TestCheckPorts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port

	free, err := freePorts(2, map[int]bool{taken: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(free) != 2 || free[0] == free[1] || free[0] == taken || free[1] == taken {
		t.Fatalf("freePorts = %v (taken %d)", free, taken)
	}
	if err := checkPorts([]portCheck{{host: "127.0.0.1", port: free[0], udp: true, flag: "consul-port"}}); err != nil {
		t.Errorf("free port: %v", err)
	}

	err = checkPorts([]portCheck{
		{host: "127.0.0.1", port: free[0], flag: "consul-port"},
		{host: "", port: taken, flag: "gateway-listen"},
	})
	want := "port " + strconv.Itoa(taken) + " is in use: stop what runs there or pass -gateway-listen"
	if err == nil || err.Error() != want {
		t.Errorf("taken port: %v, want %q", err, want)
	}
	pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(free[1])))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	err = checkPorts([]portCheck{{host: "127.0.0.1", port: free[1], udp: true, role: "Consul DNS", flag: "consul-port"}})
	if want := "port " + strconv.Itoa(free[1]) + " (Consul DNS) is in use: stop what runs there or pass -consul-port"; err == nil || err.Error() != want {
		t.Errorf("UDP taken: %v, want %q", err, want)
	}
	err = checkPorts([]portCheck{{host: "127.0.0.1", port: taken, role: "Consul server RPC", flag: "consul-port"}})
	if err == nil || !strings.HasPrefix(err.Error(), "port "+strconv.Itoa(taken)+" (Consul server RPC) is in use") {
		t.Errorf("taken fixed port: %v", err)
	}
}

func TestConsulArgs(t *testing.T) {
	s := &stack{cfg: &config{consulPort: 8500, jaegerPort: 16686, otlpPort: 4318, gatewayListen: ":8080", admin: "127.0.0.1:9901"}}
	if err := s.settlePorts(); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(s.consulArgs(), " "), "agent -dev -client 127.0.0.1 -log-level warn"; got != want {
		t.Errorf("standard: %q, want %q", got, want)
	}
	if s.consulPorts != stdConsulPorts || s.jaegerPorts != stdJaegerPorts {
		t.Errorf("standard ports moved: %+v %+v", s.consulPorts, s.jaegerPorts)
	}

	s.cfg.consulPort = 18500
	if err := s.settlePorts(); err != nil {
		t.Fatal(err)
	}
	args := strings.Join(s.consulArgs(), " ")
	if !strings.Contains(args, "-http-port 18500") || !strings.Contains(args, "-dns-port "+strconv.Itoa(s.consulPorts.dns)) {
		t.Errorf("moved: %q", args)
	}
	if s.consulPorts.server == 8300 || s.jaegerPorts != stdJaegerPorts {
		t.Errorf("moved ports: %+v %+v", s.consulPorts, s.jaegerPorts)
	}
}
