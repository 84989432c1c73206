package discovery

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
)

// ClientFromEnv builds a Consul API client from the standard CONSUL_HTTP_*
// and CONSUL_* TLS variables, exactly as api.DefaultConfig reads them, but
// rejects malformed values up front with an error naming the variable: the
// API library would log a warning and carry on, and the process would fail
// later with a less helpful message.
func ClientFromEnv() (*api.Client, error) {
	if addr := os.Getenv(api.HTTPAddrEnvName); addr != "" {
		if err := checkAddr(addr); err != nil {
			return nil, fmt.Errorf("invalid %s %q: %v", api.HTTPAddrEnvName, addr, err)
		}
	}
	for _, name := range []string{api.HTTPSSLEnvName, api.HTTPSSLVerifyEnvName} {
		if v := os.Getenv(name); v != "" {
			if _, err := strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("invalid %s %q: want true or false", name, v)
			}
		}
	}
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		return nil, fmt.Errorf("consul client from CONSUL_* variables: %w", err)
	}
	return client, nil
}

// Addr is the agent address the environment names, for logs.
func Addr() string {
	if a := os.Getenv(api.HTTPAddrEnvName); a != "" {
		return a
	}
	return api.DefaultConfig().Address
}

func checkAddr(addr string) error {
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		switch scheme {
		case "unix":
			if rest == "" {
				return fmt.Errorf("empty socket path")
			}
			return nil
		case "http", "https":
			addr = rest
		default:
			return fmt.Errorf("unsupported scheme %q: want http, https or unix", scheme)
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port")
	}
	if host == "" {
		return fmt.Errorf("empty host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}
