package discovery

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestConsulConfig(t *testing.T) {
	dir := t.TempDir()
	pem := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(pem, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := []string{api.HTTPAddrEnvName, api.HTTPSSLEnvName, api.HTTPSSLVerifyEnvName, api.HTTPCAFile,
		api.HTTPClientCert, api.HTTPClientKey, api.HTTPTokenFileEnvName, api.HTTPTokenEnvName}
	tests := []struct {
		env  map[string]string
		want string // "" = no error
	}{
		{map[string]string{}, ""},
		{map[string]string{api.HTTPAddrEnvName: "127.0.0.1:8500"}, ""},
		{map[string]string{api.HTTPAddrEnvName: "consul"}, ""},
		{map[string]string{api.HTTPAddrEnvName: "http://consul:8500"}, ""},
		{map[string]string{api.HTTPAddrEnvName: "https://consul.example.com/prefix"}, ""},
		{map[string]string{api.HTTPAddrEnvName: "[::1]:8500"}, ""},
		{map[string]string{api.HTTPAddrEnvName: "unix:///run/consul.sock"}, ""},
		{map[string]string{api.HTTPSSLEnvName: "true", api.HTTPSSLVerifyEnvName: "false"}, ""},
		{map[string]string{api.HTTPAddrEnvName: "ftp://consul"}, `CONSUL_HTTP_ADDR="ftp://consul": unknown scheme`},
		{map[string]string{api.HTTPAddrEnvName: "127.0.0.1:http"}, `CONSUL_HTTP_ADDR="127.0.0.1:http": port`},
		{map[string]string{api.HTTPAddrEnvName: "127.0.0.1:8500/v1"}, `CONSUL_HTTP_ADDR="127.0.0.1:8500/v1"`},
		{map[string]string{api.HTTPAddrEnvName: ":8500"}, `CONSUL_HTTP_ADDR=":8500": no host`},
		{map[string]string{api.HTTPAddrEnvName: "unix://"}, `CONSUL_HTTP_ADDR="unix://"`},
		{map[string]string{api.HTTPSSLEnvName: "yes please"}, `CONSUL_HTTP_SSL="yes please"`},
		{map[string]string{api.HTTPSSLVerifyEnvName: "maybe"}, `CONSUL_HTTP_SSL_VERIFY="maybe"`},
		{map[string]string{api.HTTPClientCert: pem}, "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"},
		{map[string]string{api.HTTPCAFile: filepath.Join(dir, "missing.pem")}, "CONSUL_CACERT"},
		{map[string]string{api.HTTPCAFile: pem}, "consul client configuration"},
		{map[string]string{api.HTTPTokenFileEnvName: filepath.Join(dir, "missing")}, "CONSUL_HTTP_TOKEN_FILE"},
	}
	for _, tt := range tests {
		for _, v := range vars {
			t.Setenv(v, tt.env[v])
		}
		cfg, err := ConsulConfig()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v", tt.env, err)
		case tt.want == "" && cfg == nil:
			t.Errorf("%v: nil config", tt.env)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: err = %v, want one containing %q", tt.env, err, tt.want)
		case err == nil && (cfg.Transport.MaxIdleConns != 0 || cfg.Transport.MaxIdleConnsPerHost < 1000):
			t.Errorf("%v: idle pool %d, %d per host: want room for a connection per watched service",
				tt.env, cfg.Transport.MaxIdleConns, cfg.Transport.MaxIdleConnsPerHost)
		}
	}
}
