package discovery

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulConfig returns the Consul API configuration from the standard
// CONSUL_* environment variables, exactly as api.DefaultConfig reads them,
// but checked first, so that a mistake is an error instead of a silent
// default: api.DefaultConfig only logs an unparsable CONSUL_HTTP_SSL, and
// reads an unparsable CONSUL_HTTP_SSL_VERIFY as "do not verify". Checked:
// CONSUL_HTTP_ADDR is [http://|https://]host[:port] or unix:///path;
// the two booleans parse; CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY come
// together; the CA, certificate, key and token files can be loaded. The error
// names the variable.
func ConsulConfig() (*api.Config, error) {
	if v := os.Getenv(api.HTTPAddrEnvName); v != "" {
		if err := checkConsulAddr(v); err != nil {
			return nil, fmt.Errorf("%s=%q: %w", api.HTTPAddrEnvName, v, err)
		}
	}
	for _, name := range []string{api.HTTPSSLEnvName, api.HTTPSSLVerifyEnvName} {
		if v := os.Getenv(name); v != "" {
			if _, err := strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("%s=%q: want true or false", name, v)
			}
		}
	}
	cert, key := os.Getenv(api.HTTPClientCert), os.Getenv(api.HTTPClientKey)
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%s and %s must be set together", api.HTTPClientCert, api.HTTPClientKey)
	}
	for _, name := range []string{api.HTTPCAFile, api.HTTPClientCert, api.HTTPClientKey, api.HTTPTokenFileEnvName} {
		if v := os.Getenv(name); v != "" {
			if _, err := os.Stat(v); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	cfg := api.DefaultConfig()
	// A blocking query waits minutes on a quiet connection. When the path to
	// the agent dies silently (a partition, an interface gone), only TCP
	// keepalive notices, after the kernel's default of minutes: probe early
	// instead, so the watcher reports the outage within about 20 s. (A unix
	// socket address gets its own dialer from api.NewClient.)
	cfg.Transport.DialContext = (&net.Dialer{
		Timeout: 10 * time.Second,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3,
		},
	}).DialContext
	// The watcher holds one blocking query, so one connection, per watched
	// service, and each connection goes back to the idle pool between an
	// answer and the next query. consul/api's pool keeps GOMAXPROCS+1 per
	// host: when many answers come at once (startup, a burst of changes) it
	// closes most of those connections and dials them again. Let the pool
	// keep as many as there are watches; any left idle for IdleConnTimeout
	// (90s) are still closed.
	cfg.Transport.MaxIdleConns = 0 // no total cap
	cfg.Transport.MaxIdleConnsPerHost = maxIdleConsulConns
	// Building a client loads the TLS material and the token file: do it on
	// a copy, to report a bad file here, and hand back the pristine config.
	probe := *cfg
	if _, err := api.NewClient(&probe); err != nil {
		return nil, fmt.Errorf("consul client configuration (CONSUL_* variables): %w", err)
	}
	return cfg, nil
}

// maxIdleConsulConns caps the idle connections to the agent, far above any
// number of services the watcher is likely to watch.
const maxIdleConsulConns = 1 << 14

// checkConsulAddr validates an agent address in any form api.NewClient
// accepts.
func checkConsulAddr(v string) error {
	if rest, ok := strings.CutPrefix(v, "unix://"); ok {
		if rest == "" {
			return fmt.Errorf("unix:// needs a socket path")
		}
		return nil
	}
	hostport := v
	if scheme, _, ok := strings.Cut(v, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return fmt.Errorf("unknown scheme %q: want http, https or unix", scheme)
		}
		u, err := url.Parse(v)
		if err != nil {
			return err
		}
		if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("want %s://host[:port][/path-prefix]", scheme)
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		if strings.Contains(hostport, ":") && !strings.HasPrefix(hostport, "[") {
			return fmt.Errorf("want host:port: %w", err)
		}
		host, port = hostport, ""
	}
	if host == "" {
		return fmt.Errorf("no host: want host:port, e.g. 127.0.0.1:8500")
	}
	if strings.ContainsAny(host, " /?#@") {
		return fmt.Errorf("host %q is not a host name or IP address", host)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
	}
	return nil
}

// ClientFromEnv is ConsulConfig made into a client.
func ClientFromEnv() (*api.Client, error) {
	cfg, err := ConsulConfig()
	if err != nil {
		return nil, err
	}
	return api.NewClient(cfg)
}

// Addr is the agent address the environment names, for logs.
func Addr() string {
	if a := os.Getenv(api.HTTPAddrEnvName); a != "" {
		return a
	}
	return api.DefaultConfig().Address
}
