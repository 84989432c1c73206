package routetag

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		value    string
		host     string
		prefix   string
		strip    string
		warnings int
		err      string // substring; "" means valid
	}{
		{value: "/", prefix: "/"},
		{value: "/api", prefix: "/api"},
		{value: "/api/", prefix: "/api"},
		{value: "/api/v1/", prefix: "/api/v1"},
		{value: "API.Example.com/v1 strip=/v1", host: "api.example.com", prefix: "/v1", strip: "/v1"},
		{value: "  /x   strip=/x/  ", prefix: "/x", strip: "/x"},
		{value: "[::1]/", host: "[::1]", prefix: "/"},
		{value: "example.com/ color=blue", host: "example.com", prefix: "/", warnings: 1},
		{value: "a-b_c.example/", host: "a-b_c.example", prefix: "/"},

		{value: "", err: "empty route"},
		{value: "   ", err: "empty route"},
		{value: "example.com", err: "has no path"},
		{value: "example.com:8080/", err: "must not carry a port"},
		{value: "ex ample.com/", err: "has no path"},
		{value: "exa$mple.com/", err: "invalid character"},
		{value: "-bad.com/", err: "starting or ending"},
		{value: "a..b/", err: "empty or over-long label"},
		{value: "[zz]/", err: "IPv6"},
		{value: "/a/../b", err: "not clean"},
		{value: "/a//b", err: "not clean"},
		{value: "/a/./b", err: "not clean"},
		{value: "/a%2fb", err: "must not contain"},
		{value: "/a?x=1", err: "must not contain"},
		{value: "/ strip", err: "not key=value"},
		{value: "/ =x", err: "not key=value"},
		{value: "/ strip=/a strip=/b", err: "given twice"},
		{value: "/ strip=a", err: "strip: path prefix"},
		{value: "/\x01", err: "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			r, warnings, err := Parse(tt.value)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.value, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q) error = %v", tt.value, err)
			}
			if r.Host != tt.host || r.PathPrefix != tt.prefix || r.Strip() != tt.strip {
				t.Errorf("Parse(%q) = host %q prefix %q strip %q, want %q %q %q",
					tt.value, r.Host, r.PathPrefix, r.Strip(), tt.host, tt.prefix, tt.strip)
			}
			if len(warnings) != tt.warnings {
				t.Errorf("Parse(%q) warnings = %q, want %d", tt.value, warnings, tt.warnings)
			}
		})
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, v := range []string{"/", "example.com/v1 strip=/v1", "/a/b"} {
		r, _, err := Parse(v)
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := Parse(r.String())
		if err != nil || again.String() != r.String() {
			t.Errorf("round trip of %q: %q, %v", v, again.String(), err)
		}
	}
}

func TestValuesAndHasRoute(t *testing.T) {
	tags := []string{"web", Prefix + "/", "gateway.routeX=/nope", Prefix + "h.example/x strip=/x"}
	got := Values(tags)
	if len(got) != 2 || got[0] != "/" || got[1] != "h.example/x strip=/x" {
		t.Errorf("Values = %q", got)
	}
	if !HasRoute(tags) {
		t.Error("HasRoute = false, want true")
	}
	if HasRoute([]string{"web", "gateway.routeX=/"}) {
		t.Error("HasRoute on tags without a route tag = true")
	}
}

// FuzzParse checks that any accepted tag is in normal form: a clean
// absolute prefix, a lower-case host, and a String that parses back to the
// same route.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"/", "/api strip=/api", "Example.COM/v1 lb=hash:header:X", "[::1]/", "/a/../b", "h/ x=y", "/%2f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		r, _, err := Parse(value)
		if err != nil {
			return
		}
		if !strings.HasPrefix(r.PathPrefix, "/") || (len(r.PathPrefix) > 1 && strings.HasSuffix(r.PathPrefix, "/")) {
			t.Fatalf("%q: prefix %q not in normal form", value, r.PathPrefix)
		}
		if r.Host != strings.ToLower(r.Host) {
			t.Fatalf("%q: host %q not lower-case", value, r.Host)
		}
		again, _, err := Parse(r.String())
		if err != nil || again.String() != r.String() {
			t.Fatalf("%q -> %q -> %q, %v: not stable", value, r.String(), again.String(), err)
		}
	})
}
