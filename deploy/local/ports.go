package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
)

// fixedPort is a port a component binds that no flag names directly.
type fixedPort struct {
	port int
	role string
	udp  bool // bound for UDP as well as TCP
}

// consulPorts are a dev agent's ports besides HTTP, in the order
// consulArgs passes them.
type consulPorts struct {
	server, serfLAN, serfWAN, grpc, grpcTLS, dns int
}

// stdConsulPorts are a dev agent's defaults.
var stdConsulPorts = consulPorts{8300, 8301, 8302, 8502, 8503, 8600}

func (p consulPorts) list() []fixedPort {
	return []fixedPort{
		{p.server, "server RPC", false},
		{p.serfLAN, "serf LAN", true},
		{p.serfWAN, "serf WAN", true},
		{p.grpc, "gRPC", false},
		{p.grpcTLS, "gRPC-TLS", false},
		{p.dns, "DNS", true},
	}
}

// jaegerPorts are Jaeger's ports besides the query API and OTLP/HTTP.
type jaegerPorts struct {
	queryGRPC, otlpGRPC, health int
}

// stdJaegerPorts are Jaeger's defaults.
var stdJaegerPorts = jaegerPorts{16685, 4317, 13133}

func (p jaegerPorts) list() []fixedPort {
	return []fixedPort{
		{p.queryGRPC, "query gRPC", false},
		{p.otlpGRPC, "OTLP/gRPC", false},
		{p.health, "health check", false},
	}
}

// portCheck is one address the stack will listen on, tried before any child
// starts so a taken port is one clear line instead of a child's stack trace.
type portCheck struct {
	host string
	port int
	udp  bool
	role string // set for ports no flag names directly
	flag string // the flag that moves it
}

// checkPorts returns an error for the first port that cannot be bound.
func checkPorts(checks []portCheck) error {
	for _, c := range checks {
		if err := tryListen(c.host, c.port, c.udp); err != nil {
			what := fmt.Sprintf("port %d", c.port)
			if c.role != "" {
				what += " (" + c.role + ")"
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%s is in use: stop what runs there or pass -%s", what, c.flag)
			}
			return fmt.Errorf("%s cannot be used: %v; pass -%s", what, err, c.flag)
		}
	}
	return nil
}

func tryListen(host string, port int, udp bool) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ln.Close()
	if udp {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		pc.Close()
	}
	return nil
}

// freePorts returns n distinct ports that are free on 127.0.0.1 for both
// TCP and UDP right now and are not in avoid. Someone may take one before
// the child binds it; for a local stack that is rare enough.
func freePorts(n int, avoid map[int]bool) ([]int, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 20*n {
			return nil, errors.New("cannot find free ports on 127.0.0.1")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cannot find free ports on 127.0.0.1: %v", err)
		}
		held = append(held, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		if avoid[port] {
			continue
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			continue
		}
		held = append(held, pc)
		ports = append(ports, port)
	}
	return ports, nil
}
