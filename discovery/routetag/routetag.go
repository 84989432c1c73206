// Package routetag is the grammar of the Consul tags by which a service opts
// in to the gateway. It is the contract between backends (which write the
// tags when they register) and the gateway (which reads them), so it lives in
// a leaf package that both can import without pulling in either side.
//
// One tag per route:
//
//	gateway.route=[host]/path-prefix[ key=value ...]
//
// for example `gateway.route=/` or `gateway.route=api.example.com/v1 strip=/v1`.
package routetag

import (
	"errors"
	"fmt"
	"net"
	"path"
	"sort"
	"strings"
)

// Prefix marks a Consul service tag as a route. A service with no tag that
// starts with Prefix is never routable.
const Prefix = "gateway.route="

// Known option keys. Unknown keys are reported as warnings so that a tag
// written for a newer gateway still routes on an older one.
const (
	// OptStrip removes a leading path prefix before the request is proxied,
	// e.g. strip=/v1 turns /v1/users into /users.
	OptStrip = "strip"
	// OptLB picks the balancing policy: round_robin, random,
	// least_request, peak_ewma, hash:header:NAME, hash:cookie:NAME or
	// hash:client.
	OptLB = "lb"
	// OptTimeout bounds the whole request, retries included (504 after).
	OptTimeout = "timeout"
	// OptTryTimeout bounds one attempt.
	OptTryTimeout = "try_timeout"
	// OptAttempts is the most attempts per request, the first included.
	OptAttempts = "attempts"
	// OptMaxInflight caps the route's concurrent requests (503 over it).
	OptMaxInflight = "max_inflight"
	// OptSlowStart ramps a new instance's share up over a duration.
	OptSlowStart = "slow_start"
	// OptConnectTimeout bounds connecting to an instance.
	OptConnectTimeout = "connect_timeout"
	// OptIdleTimeout cuts a response that sends nothing for that long.
	OptIdleTimeout = "idle_timeout"
	// OptMaxBody caps request bodies in bytes (413 over it).
	OptMaxBody = "max_body"
	// OptWebSocket lets WebSocket upgrades through (on/off, default off).
	OptWebSocket = "websocket"
	// OptProto is the protocol spoken to the instances: http1 (default)
	// or h2c (HTTP/2 without TLS, e.g. gRPC servers).
	OptProto = "proto"
)

// The gateway checks option values; the grammar only knows their names.
var knownOptions = map[string]bool{
	OptStrip: true, OptLB: true, OptTimeout: true, OptTryTimeout: true,
	OptAttempts: true, OptMaxInflight: true, OptSlowStart: true, OptProto: true,
	OptConnectTimeout: true, OptIdleTimeout: true, OptMaxBody: true, OptWebSocket: true,
}

// Route is one parsed route tag.
type Route struct {
	// Host is the lower-cased host name the route is limited to, without a
	// port; empty means any host.
	Host string
	// PathPrefix is a clean, absolute path without a trailing slash (except
	// the root "/"). It matches itself and everything below it, on path
	// segment boundaries: /api matches /api and /api/x, not /apix.
	PathPrefix string
	// Options holds the key=value pairs after the path, known keys only.
	Options map[string]string
}

// Strip returns the strip option ("" when unset).
func (r Route) Strip() string { return r.Options[OptStrip] }

// String formats the route back into a tag value (without Prefix), with
// options in a stable order.
func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Host)
	b.WriteString(r.PathPrefix)
	keys := make([]string, 0, len(r.Options))
	for k := range r.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(r.Options[k])
	}
	return b.String()
}

// Values returns the route values (the text after Prefix) of every route tag
// in tags, in their original order.
func Values(tags []string) []string {
	var out []string
	for _, t := range tags {
		if v, ok := strings.CutPrefix(t, Prefix); ok {
			out = append(out, v)
		}
	}
	return out
}

// HasRoute reports whether any tag is a route tag: the opt-in test.
func HasRoute(tags []string) bool {
	for _, t := range tags {
		if strings.HasPrefix(t, Prefix) {
			return true
		}
	}
	return false
}

// Parse parses one route value (the tag without Prefix). A malformed value is
// an error and disables that route only; unknown option keys are returned as
// warnings and ignored.
func Parse(value string) (route Route, warnings []string, err error) {
	fields := strings.Fields(value)
	if len(fields) == 0 {
		return Route{}, nil, errors.New("empty route: want [host]/path-prefix")
	}
	target := fields[0]
	slash := strings.IndexByte(target, '/')
	if slash < 0 {
		return Route{}, nil, fmt.Errorf("route %q has no path: want [host]/path-prefix, e.g. %q", target, target+"/")
	}
	host, prefix := target[:slash], target[slash:]
	if host != "" {
		if host, err = parseHost(host); err != nil {
			return Route{}, nil, err
		}
	}
	if prefix, err = cleanPrefix(prefix); err != nil {
		return Route{}, nil, err
	}
	route = Route{Host: host, PathPrefix: prefix, Options: map[string]string{}}
	for _, kv := range fields[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return Route{}, nil, fmt.Errorf("option %q is not key=value", kv)
		}
		if !knownOptions[k] {
			warnings = append(warnings, fmt.Sprintf("unknown option %q ignored", k))
			continue
		}
		if _, dup := route.Options[k]; dup {
			return Route{}, nil, fmt.Errorf("option %q given twice", k)
		}
		route.Options[k] = v
	}
	if s, ok := route.Options[OptStrip]; ok {
		clean, err := cleanPrefix(s)
		if err != nil {
			return Route{}, nil, fmt.Errorf("strip: %w", err)
		}
		route.Options[OptStrip] = clean
	}
	return route, warnings, nil
}

// parseHost validates a route host: a DNS name or IP literal, no port, no
// wildcard; returned lower-cased.
func parseHost(h string) (string, error) {
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		return "", fmt.Errorf("host %q must not carry a port", h)
	}
	if strings.HasPrefix(h, "[") {
		if !strings.HasSuffix(h, "]") || net.ParseIP(h[1:len(h)-1]) == nil {
			return "", fmt.Errorf("host %q is not a valid IPv6 literal", h)
		}
		return strings.ToLower(h), nil
	}
	if len(h) > 253 {
		return "", fmt.Errorf("host %q is longer than 253 characters", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("host %q has an empty or over-long label", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return "", fmt.Errorf("host %q has invalid character %q", h, c)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("host %q has a label starting or ending with '-'", h)
		}
	}
	return strings.ToLower(h), nil
}

// cleanPrefix checks that p is an absolute path that is already clean (no
// "..", ".", "//", query, fragment or percent-escape), and drops a trailing
// slash: a prefix means a subtree, so /api and /api/ are the same route.
func cleanPrefix(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path prefix %q must start with '/'", p)
	}
	if strings.ContainsAny(p, "?#%\\") {
		return "", fmt.Errorf("path prefix %q must not contain '?', '#', '%%' or '\\'", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x21 || p[i] == 0x7f {
			return "", fmt.Errorf("path prefix %q contains a control character or space", p)
		}
	}
	trimmed := p
	if len(trimmed) > 1 {
		trimmed = strings.TrimSuffix(trimmed, "/")
	}
	if path.Clean(trimmed) != trimmed {
		return "", fmt.Errorf("path prefix %q is not clean (no '.', '..' or '//' segments)", p)
	}
	return trimmed, nil
}
