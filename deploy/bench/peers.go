package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// The peers are configured as an operator would for this job: round robin
// over the two upstreams, keep-alive to the client and to the upstreams
// (connections reused across clients), no access log, no per-connection
// request cap, and the forwarding headers hopgate sends too (X-Forwarded-For,
// -Host, -Proto, X-Real-IP), so the upstreams parse the same request from
// every proxy. Parallelism: -workers (0: each one's default, every CPU).

var haproxyConfig = template.Must(template.New("haproxy").Parse(`global
    maxconn 4096
{{- if .Workers}}
    nbthread {{.Workers}}
{{- end}}
    pidfile {{.Dir}}/haproxy.pid

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend bench
    bind 127.0.0.1:{{.Port}}
    default_backend upstreams

backend upstreams
    balance roundrobin
    option forwardfor
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Real-IP %[src]
{{- range $i, $p := .Upstreams}}
    server u{{$i}} 127.0.0.1:{{$p}}
{{- end}}
`))

var nginxConfig = template.Must(template.New("nginx").Parse(`daemon off;
master_process on;
worker_processes {{if .Workers}}{{.Workers}}{{else}}auto{{end}};
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path {{.Dir}}/nginx-body;
    proxy_temp_path {{.Dir}}/nginx-proxy;
    fastcgi_temp_path {{.Dir}}/nginx-fastcgi;
    uwsgi_temp_path {{.Dir}}/nginx-uwsgi;
    scgi_temp_path {{.Dir}}/nginx-scgi;
    keepalive_requests 1000000;

    upstream upstreams {
{{- range .Upstreams}}
        server 127.0.0.1:{{.}};
{{- end}}
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:{{.Port}};
        location / {
            proxy_pass http://upstreams;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Real-IP $remote_addr;
        }
    }
}
`))

type peerConfig struct {
	Dir       string
	Port      int
	Workers   int
	Upstreams []int
}

func writeConfig(t *template.Template, path string, c peerConfig) error {
	var b strings.Builder
	if err := t.Execute(&b, c); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func startHAProxy(ctx context.Context, ps *procs, dir string, upstreams []int, workers int) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := writeConfig(haproxyConfig, cfg, peerConfig{dir, port, workers, upstreams}); err != nil {
		return nil, "", err
	}
	// -db: foreground, no daemon; -Ws would add a master process.
	p, err := ps.start("haproxy", cleanEnv(), "haproxy", "-db", "-f", cfg)
	if err != nil {
		return nil, "", err
	}
	return p, peerURL(port), waitReady(ctx, p, port)
}

func startNginx(ctx context.Context, ps *procs, dir string, upstreams []int, workers int) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(dir, "nginx.conf")
	if err := writeConfig(nginxConfig, cfg, peerConfig{dir, port, workers, upstreams}); err != nil {
		return nil, "", err
	}
	// -e: the error log before the config is read (nginx ≥ 1.19.5).
	p, err := ps.start("nginx", cleanEnv(), "nginx", "-p", dir, "-c", cfg, "-e", filepath.Join(dir, "nginx-error.log"))
	if err != nil {
		return nil, "", err
	}
	return p, peerURL(port), waitReady(ctx, p, port)
}

// startFloor starts one of the bare Go proxies, deploy/bench/fasthttp-proxy
// or gnet-proxy, which take the same flags, as the row name.
func startFloor(ctx context.Context, ps *procs, name, bin string, upstreams []int) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addrs := make([]string, len(upstreams))
	for i, u := range upstreams {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", u)
	}
	p, err := ps.start(name, cleanEnv(), bin, "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-upstreams", strings.Join(addrs, ","))
	if err != nil {
		return nil, "", err
	}
	return p, peerURL(port), waitReady(ctx, p, port)
}

func peerURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/", port) }

func waitReady(ctx context.Context, p *proc, port int) error {
	return waitFor(ctx, p, peerURL(port), 10*time.Second, func(b string) bool { return strings.HasPrefix(b, "Hello from ") })
}
