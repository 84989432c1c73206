package backend

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// DetectAddress returns the address this host uses to reach the Consul agent
// at agentAddr ("host:port" or "host"): the local address of the route toward
// it. It "dials" UDP, which sends no packet, only asks the kernel for a route,
// so it is cheap and works before the agent is up (a host name must resolve,
// though). A backend on another host than the agent thus advertises an
// address on the network it shares with the agent, where the gateway can
// reach it too; a backend next to a loopback agent advertises the loopback
// address. IPv4 is preferred when the agent's name has both.
func DetectAddress(agentAddr string) (string, error) {
	host, port, err := net.SplitHostPort(agentAddr)
	if err != nil {
		host, port = agentAddr, "8500"
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		return "", fmt.Errorf("detect address: agent address %q has no host", agentAddr)
	}
	target := net.JoinHostPort(host, port)
	var errs []error
	for _, network := range []string{"udp4", "udp"} {
		c, err := net.Dial(network, target)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ip := c.LocalAddr().(*net.UDPAddr).IP
		_ = c.Close()
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
		if ip.IsUnspecified() {
			errs = append(errs, fmt.Errorf("no route toward %s", target))
			continue
		}
		return ip.String(), nil
	}
	return "", fmt.Errorf("detect address toward the Consul agent at %s: %w", target, errors.Join(errs...))
}

// newID builds a default instance ID, <service>-<host>-<port>-<12 hex>: the
// readable part says where the instance runs, the random part keeps two
// instances on the same host and port (one after the other) apart.
func newID(service string, port int) string {
	var b [6]byte          // 48 bits: no collision in any realistic fleet
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return service + "-" + shortHost() + "-" + strconv.Itoa(port) + "-" + hex.EncodeToString(b[:])
}

// shortHost is the first label of the host name, lower-cased, with anything
// but letters, digits and '-' replaced by '-'.
func shortHost() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "host"
	}
	h, _, _ = strings.Cut(strings.ToLower(h), ".")
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, h)
	if h = strings.Trim(h, "-"); h == "" {
		return "host"
	}
	return h
}

// ValidateServiceName reports whether name can be used as a Consul service
// name here: non-empty, at most 128 bytes, and free of whitespace, control
// characters and the URL-significant characters / ? # % (the name is part of
// API paths).
func ValidateServiceName(name string) error { return validateName("service name", name) }

// ValidateID reports whether id can be used as an instance (Consul service)
// ID: the same rules as ValidateServiceName. An ID with whitespace would also
// break the hello contract, where the ID is the last word of the answer.
func ValidateID(id string) error { return validateName("instance id", id) }

func validateName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > 128 {
		return fmt.Errorf("%s %q is longer than 128 bytes", what, s)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("/?#%\\", r) || r == '\uFFFD' {
			return fmt.Errorf("%s %q must not contain whitespace, control characters or any of / ? # %% \\", what, s)
		}
	}
	return nil
}

// ValidateAddress reports whether a can be advertised: an IP address
// (IPv6 without brackets) or a host name, without port or scheme.
func ValidateAddress(a string) error {
	if net.ParseIP(a) != nil {
		return nil
	}
	if strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]") && net.ParseIP(a[1:len(a)-1]) != nil {
		return fmt.Errorf("address %q: write IPv6 addresses without brackets", a)
	}
	if len(a) > 253 {
		return fmt.Errorf("address %q is longer than 253 characters", a)
	}
	for _, label := range strings.Split(a, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("address %q is neither an IP address nor a host name", a)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("address %q is neither an IP address nor a host name (no port or scheme)", a)
			}
		}
	}
	return nil
}
