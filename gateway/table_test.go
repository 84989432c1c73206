package gateway

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/discovery/routetag"
)

// instance makes a passing instance with the given route tag values.
func instance(id string, port int, routes ...string) discovery.Instance {
	in := discovery.Instance{ID: id, Node: "n1", Address: "127.0.0.1", Port: port,
		Weight: 1, Health: discovery.Passing}
	for _, r := range routes {
		in.Tags = append(in.Tags, routetag.Prefix+r)
	}
	return in
}

func snapshot(services ...*discovery.Service) *discovery.Snapshot {
	return &discovery.Snapshot{Services: services, Index: 7}
}

func buildTable(t testing.TB, snap *discovery.Snapshot) *Table {
	t.Helper()
	gw := New(Options{})
	gw.Apply(snap)
	return gw.Table()
}

func TestMatch(t *testing.T) {
	table := buildTable(t, snapshot(
		&discovery.Service{Name: "api", Instances: []discovery.Instance{instance("api-1", 1, "/api", "/api/v2/admin")}},
		&discovery.Service{Name: "root", Instances: []discovery.Instance{instance("root-1", 2, "/")}},
		&discovery.Service{Name: "shop", Instances: []discovery.Instance{instance("shop-1", 3, "shop.example.com/", "Shop.Example.com/cart/")}},
		&discovery.Service{Name: "v6", Instances: []discovery.Instance{instance("v6-1", 4, "[::1]/six")}},
	))
	tests := []struct{ host, path, want string }{
		{"anything", "/", "/"},
		{"anything", "/index.html", "/"},
		{"anything", "/api", "/api"},
		{"anything", "/api/", "/api"},
		{"anything", "/api/users/1", "/api"},
		{"anything", "/apix", "/"}, // prefixes match on segment boundaries
		{"anything", "/api/v2/admin/x", "/api/v2/admin"},
		{"anything", "/api/v2/adminx", "/api"},
		{"shop.example.com", "/", "shop.example.com/"},
		{"SHOP.example.com:8080", "/api", "shop.example.com/"}, // host-specific beats host-less
		{"shop.example.com", "/cart/items", "shop.example.com/cart"},
		{"other.example.com", "/cart", "/"},
		{"[::1]:80", "/six/x", "[::1]/six"},
		{"anything", "", "/"},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.path, func(t *testing.T) {
			r := table.Match(tt.host, tt.path)
			if r == nil || r.Name != tt.want {
				t.Fatalf("Match(%q, %q) = %v, want route %q", tt.host, tt.path, r, tt.want)
			}
		})
	}
}

func TestMatchNoRoute(t *testing.T) {
	table := buildTable(t, snapshot(
		&discovery.Service{Name: "api", Instances: []discovery.Instance{instance("api-1", 1, "/api", "h.example/x")}},
	))
	for _, c := range [][2]string{{"any", "/"}, {"any", "/apix"}, {"h.example", "/y"}, {"any", "/x"}} {
		if r := table.Match(c[0], c[1]); r != nil {
			t.Errorf("Match(%q, %q) = %v, want no route", c[0], c[1], r)
		}
	}
	if r := (&Table{}).Match("h", "/"); r != nil {
		t.Errorf("empty table matched %v", r)
	}
}

func TestBuild(t *testing.T) {
	warning := instance("hello-3", 3, "/")
	warning.Health = discovery.Warning
	table := buildTable(t, snapshot(
		&discovery.Service{Name: "a-first", Instances: []discovery.Instance{instance("a-1", 9, "/shared")}},
		&discovery.Service{Name: "hello", Instances: []discovery.Instance{
			instance("hello-1", 1, "/", "/shared", "/bad/../tag", "/v1 strip=/v1"),
			instance("hello-2", 2, "/"),
			warning,
			instance("hello-4", 4), // no route tag on this instance
		}},
	))
	byName := map[string]*Route{}
	for _, r := range table.Routes() {
		byName[r.Name] = r
	}
	if len(byName) != 3 {
		t.Fatalf("routes = %v, want /, /shared and /v1", table.Routes())
	}
	root := byName["/"]
	if got := upstreamIDs(root); got != "[hello-1 hello-2]" {
		t.Errorf("/ upstreams = %s: want only passing instances that carry the tag", got)
	}
	if s := byName["/shared"]; s.Service != "a-first" || upstreamIDs(s) != "[a-1]" {
		t.Errorf("/shared = %v: the first service by name keeps a contested route", s)
	}
	if v1 := byName["/v1"]; v1.Strip != "/v1" {
		t.Errorf("/v1 strip = %q", v1.Strip)
	}
	if root.Endpoints[0] != byName["/v1"].Endpoints[0] {
		t.Error("an instance on several routes should share one Endpoint")
	}
	if table.Index() != 7 {
		t.Errorf("Index = %d", table.Index())
	}
}

func upstreamIDs(r *Route) string {
	ids := make([]string, len(r.Endpoints))
	for i, u := range r.Endpoints {
		ids[i] = u.Instance.ID
	}
	return fmt.Sprint(ids)
}

func TestCanonicalHost(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":      "example.com",
		"Example.COM:8080": "example.com",
		"[::1]:80":         "[::1]",
		"[::1]":            "[::1]",
		"10.0.0.1:80":      "10.0.0.1",
		"":                 "",
	} {
		if got := canonicalHost(in); got != want {
			t.Errorf("canonicalHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			var svcs []*discovery.Service
			for i := range n {
				svcs = append(svcs, &discovery.Service{Name: fmt.Sprintf("svc-%05d", i),
					Instances: []discovery.Instance{instance("i", 1, fmt.Sprintf("/svc/%d", i))}})
			}
			t := buildTable(b, snapshot(svcs...))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if t.Match("example.com", "/svc/7/users/42") == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

func TestWarningInstancesOnlyWhenConfigured(t *testing.T) {
	warn := instance("w", 2, "/")
	warn.Health = discovery.Warning
	warn.Weight = 3
	zero := instance("z", 3, "/")
	zero.Health = discovery.Warning
	zero.Weight = 0 // Weights.Warning 0: no traffic while warning
	snap := snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("p", 1, "/"), warn, zero}})

	if got := upstreamIDs(buildTable(t, snap).Match("h", "/")); got != "[p]" {
		t.Errorf("by default: %s, want only the passing instance", got)
	}
	settings := DefaultSettings
	settings.UseWarning = true
	gw := New(Options{Settings: &settings})
	gw.Apply(snap)
	r := gw.Table().Match("h", "/")
	if got := upstreamIDs(r); got != "[p w]" {
		t.Errorf("with UseWarning: %s, want p and w (z has warning weight 0)", got)
	}
	if r.Endpoints[1].Weight != 3 {
		t.Errorf("warning weight = %d, want Consul's Weights.Warning 3", r.Endpoints[1].Weight)
	}
}

// FuzzMatch compares the table's map walk with a plain scan for the
// longest prefix on a segment boundary, host routes first.
func FuzzMatch(f *testing.F) {
	routes := []string{"/", "/api", "/api/v2", "/a/b/c", "shop.example/", "shop.example/cart", "api.example/v1"}
	table := buildTable(f, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("i", 1, routes...)}}))
	for _, seed := range [][2]string{{"x", "/api/v2/x"}, {"SHOP.example:80", "/cart/"}, {"api.example", "/v1"}, {"h", ""}, {"h", "/apix"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		if path != "" && path[0] != '/' {
			return // the proxy routes only normalised, absolute paths
		}
		got := table.Match(host, path)
		want := scanMatch(table.Routes(), canonicalHost(host), path)
		if got != want {
			t.Fatalf("Match(%q, %q) = %v, scan says %v", host, path, got, want)
		}
	})
}

func scanMatch(routes []*Route, host, path string) *Route {
	if path == "" {
		path = "/"
	}
	best := func(wantHost string) *Route {
		var b *Route
		for _, r := range routes {
			p := r.PathPrefix
			ok := r.Host == wantHost && (p == "/" || path == p || strings.HasPrefix(path, p+"/"))
			if ok && (b == nil || len(p) > len(b.PathPrefix)) {
				b = r
			}
		}
		return b
	}
	if host != "" {
		if r := best(host); r != nil {
			return r
		}
	}
	return best("")
}
