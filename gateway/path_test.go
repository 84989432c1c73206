package gateway

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		in, upstream, route string
		err                 error
	}{
		{"", "/", "/", nil},
		{"/", "/", "/", nil},
		{"/api/users/1", "/api/users/1", "/api/users/1", nil},
		{"/api/", "/api/", "/api/", nil},
		{"/a.b/c.d", "/a.b/c.d", "/a.b/c.d", nil},
		{"/.well-known/x", "/.well-known/x", "/.well-known/x", nil},
		{"/public/../admin", "/admin", "/admin", nil},
		{"/public/%2e%2e/admin", "/admin", "/admin", nil},
		{"/public/%2E%2E/admin", "/admin", "/admin", nil},
		{"/public/.%2e/admin", "/admin", "/admin", nil},
		{"/../../etc/passwd", "/etc/passwd", "/etc/passwd", nil},
		{"/a/./b", "/a/b", "/a/b", nil},
		{"/a//b", "/a/b", "/a/b", nil},
		{"//admin", "/admin", "/admin", nil},
		{"/a/b/..", "/a", "/a", nil},
		{"/a/b/../", "/a/", "/a/", nil},
		{"/%61dmin", "/admin", "/admin", nil},
		{"/a%20b", "/a%20b", "/a b", nil},
		{"/caf%c3%a9", "/caf%C3%A9", "/café", nil},
		{"/admin;jsessionid=1", "/admin;jsessionid=1", "/admin", nil},
		{"/public;x/../admin", "/admin", "/admin", nil},
		{"/a%3bb", "/a%3Bb", "/a;b", nil},

		{"/public/..;/admin", "", "", errPathDotParam},
		{"/public/.;x/admin", "", "", errPathDotParam},
		{"/a%2fb", "", "", errPathEncodedSlash},
		{"/a%2Fb", "", "", errPathEncodedSlash},
		{"/a%5cb", "", "", errPathEncodedSlash},
		{"/a\\b", "", "", errPathControl},
		{"/a%00b", "", "", errPathControl},
		{"/a%0ab", "", "", errPathControl},
		{"/a%zz", "", "", errPathBadEscape},
		{"/a%4", "", "", errPathBadEscape},
		{"a/b", "", "", errPathNotAbsolute},
		{"*", "", "", errPathNotAbsolute},
	}
	for _, tt := range tests {
		up, rt, err := normalizePath(tt.in)
		if !errors.Is(err, tt.err) || up != tt.upstream || rt != tt.route {
			t.Errorf("normalizePath(%q) = %q, %q, %v; want %q, %q, %v", tt.in, up, rt, err, tt.upstream, tt.route, tt.err)
		}
	}
}

func TestNormalizePathCleanIsFree(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := normalizePath("/api/v1/users/42"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a clean path allocated %v times", allocs)
	}
}

// FuzzNormalizePath checks the properties that make routing safe: the
// result is absolute, has no dot segments or empty segments, normalising
// it again changes nothing, and the route is the upstream path decoded.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/x", "/a;b/c", "/a//b/", "/caf%C3%A9", "/..;/x", "/a%2fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		up, rt, err := normalizePath(in)
		if err != nil {
			return
		}
		if !strings.HasPrefix(up, "/") || !strings.HasPrefix(rt, "/") {
			t.Fatalf("%q -> %q, %q: not absolute", in, up, rt)
		}
		for _, seg := range strings.Split(strings.Trim(up, "/"), "/") {
			name, _, _ := strings.Cut(seg, ";")
			if (seg == "" && up != "/") || name == "." || name == ".." {
				t.Fatalf("%q -> %q: empty or dot segment left", in, up)
			}
		}
		up2, rt2, err := normalizePath(up)
		if err != nil || up2 != up || rt2 != rt {
			t.Fatalf("%q -> %q, %q; again -> %q, %q, %v: not idempotent", in, up, rt, up2, rt2, err)
		}
	})
}
