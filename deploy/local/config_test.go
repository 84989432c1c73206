package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsDefaults(t *testing.T) {
	c, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		binDir:        "bin",
		jaegerConfig:  "deploy/local/jaeger.yaml",
		gatewayListen: ":8080",
		admin:         "127.0.0.1:9901",
		hellos:        3,
		consulPort:    8500,
		jaegerPort:    16686,
		otlpPort:      4318,
		readyTimeout:  90 * time.Second,
		stopTimeout:   15 * time.Second,
	}
	if *c != want {
		t.Errorf("defaults = %+v\nwant       %+v", *c, want)
	}
	if !c.jaegerStandard() {
		t.Error("default Jaeger ports are not standard")
	}
}

func TestParseFlagsOverrides(t *testing.T) {
	c, err := parseFlags([]string{
		"-bin", "/opt/bin", "-hellos", "0", "-gateway-listen", "127.0.0.1:18080",
		"-admin", "127.0.0.1:19901", "-consul-port", "18500", "-jaeger-port", "26686",
		"-otlp-port", "24318", "-ready-timeout", "5s", "-stop-timeout", "1m",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.binDir != "/opt/bin" || c.hellos != 0 || c.gatewayListen != "127.0.0.1:18080" ||
		c.admin != "127.0.0.1:19901" || c.consulPort != 18500 || c.jaegerPort != 26686 ||
		c.otlpPort != 24318 || c.readyTimeout != 5*time.Second || c.stopTimeout != time.Minute {
		t.Errorf("got %+v", *c)
	}
	if c.jaegerStandard() {
		t.Error("moved Jaeger ports count as standard")
	}
}

// Moving the gateway onto a port that Consul binds only while its own ports
// are the defaults is fine once Consul's ports move too.
func TestParseFlagsFixedPortsFollowTheirComponent(t *testing.T) {
	if _, err := parseFlags([]string{"-gateway-listen", ":8300"}); err == nil {
		t.Error("-gateway-listen :8300 with Consul's default ports: no error")
	}
	if _, err := parseFlags([]string{"-gateway-listen", ":8300", "-consul-port", "18500"}); err != nil {
		t.Errorf("-gateway-listen :8300 with Consul moved: %v", err)
	}
	if _, err := parseFlags([]string{"-admin", "127.0.0.1:4317"}); err == nil {
		t.Error("-admin on Jaeger's OTLP/gRPC port: no error")
	}
	if _, err := parseFlags([]string{"-admin", "127.0.0.1:4317", "-otlp-port", "24318"}); err != nil {
		t.Errorf("-admin :4317 with Jaeger moved: %v", err)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the message
	}{
		{[]string{"-nope"}, "flag provided but not defined: -nope"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"-hellos", "-1"}, `invalid value "-1" for flag -hellos: want a whole number from 0 to 50`},
		{[]string{"-hellos", "many"}, `invalid value "many" for flag -hellos`},
		{[]string{"-hellos", "51"}, "from 0 to 50"},
		{[]string{"-consul-port", "0"}, `invalid value "0" for flag -consul-port: want a whole number from 1 to 65535`},
		{[]string{"-jaeger-port", "70000"}, "-jaeger-port"},
		{[]string{"-otlp-port", "x"}, "-otlp-port"},
		{[]string{"-gateway-listen", "8080"}, `invalid value "8080" for flag -gateway-listen: want host:port or :port`},
		{[]string{"-gateway-listen", ":0"}, `invalid value ":0" for flag -gateway-listen: want a port from 1 to 65535`},
		{[]string{"-admin", "localhost:http"}, "for flag -admin: want a port"},
		{[]string{"-ready-timeout", "0s"}, `invalid value "0s" for flag -ready-timeout: want a positive duration`},
		{[]string{"-stop-timeout", "soon"}, "-stop-timeout"},
		{[]string{"-bin", ""}, "-bin"},
		{[]string{"-jaeger-config", ""}, "-jaeger-config"},
		{[]string{"-admin", "127.0.0.1:8080"}, "port 8080 is taken twice: by -gateway-listen and -admin"},
		{[]string{"-jaeger-port", "8500"}, "port 8500 is taken twice: by -consul-port and -jaeger-port"},
		{[]string{"-gateway-listen", ":8600"}, "port 8600 is taken twice: by -gateway-listen and Consul's DNS port"},
	} {
		_, err := parseFlags(tc.args)
		if err == nil {
			t.Errorf("%q: no error", tc.args)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q, want one line containing %q", tc.args, msg, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	if _, err := parseFlags([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-h"}, &out, &errOut); code != 0 {
		t.Errorf("run -h = %d, want 0", code)
	}
	if !strings.Contains(out.String(), "-gateway-listen") || errOut.Len() != 0 {
		t.Errorf("usage: stdout %q, stderr %q", out.String(), errOut.String())
	}
}

func TestRunBadFlagExitsTwo(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-hellos", "x"}, &out, &errOut); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if got := errOut.String(); strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, progName+": invalid value") {
		t.Errorf("stderr %q, want one line", got)
	}
}
