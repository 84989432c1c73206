package gateway

import (
	"errors"
	"strings"
)

// Errors of path normalisation; each is a 400.
var (
	errPathNotAbsolute  = errors.New("path must start with '/'")
	errPathEncodedSlash = errors.New("encoded '/' or '\\' in path")
	errPathBadEscape    = errors.New("malformed percent-escape in path")
	errPathControl      = errors.New("control character or backslash in path")
	errPathDotParam     = errors.New("dot segment with parameters in path")
)

// normalizePath turns the escaped path of a request into the one path used
// both for routing and for the request sent upstream, so that no spelling
// of a path can reach a route the plain path would not (the class of bugs
// behind most path-confusion advisories of edge proxies):
//
//   - percent-escapes of unreserved characters are decoded (%41 is A, %2e
//     is '.'), so an escaped dot segment is a dot segment;
//   - dot segments are resolved and repeated slashes merged (RFC 3986
//     section 5.2.4); a trailing slash is kept;
//   - an escaped '/' or '\', a raw '\', a control character or a malformed
//     escape cannot be normalised safely and is an error;
//   - a segment's ";parameters" (which some servers strip, e.g. /admin;x)
//     are kept in the path sent upstream but ignored for routing, and a
//     dot segment carrying parameters ("..;") is an error.
//
// It returns the escaped path to send upstream and the decoded path,
// parameters removed, to route on.
func normalizePath(escaped string) (upstream, route string, err error) {
	if escaped == "" {
		return "/", "/", nil
	}
	if escaped[0] != '/' {
		return "", "", errPathNotAbsolute
	}
	// Fast path: the common clean path needs no work and no allocation.
	if isPlainPath(escaped) {
		return escaped, escaped, nil
	}
	dec, err := decodeUnreserved(escaped)
	if err != nil {
		return "", "", err
	}
	trailing := strings.HasSuffix(dec, "/")
	var out, rt []string
	for _, seg := range strings.Split(dec, "/") {
		name, _, hasParams := strings.Cut(seg, ";")
		switch {
		case seg == "" || seg == ".":
			continue
		case seg == "..":
			if len(out) > 0 {
				out, rt = out[:len(out)-1], rt[:len(rt)-1]
			}
			continue
		case hasParams && (name == "." || name == ".."):
			return "", "", errPathDotParam
		}
		out = append(out, seg)
		rt = append(rt, name)
	}
	upstream = "/" + strings.Join(out, "/")
	route = "/" + strings.Join(rt, "/")
	if trailing && len(out) > 0 {
		upstream += "/"
		route += "/"
	}
	// The route is matched against clean decoded prefixes: decode the
	// remaining escapes (never a '/', those were refused).
	if route, err = unescapeAll(route); err != nil {
		return "", "", err
	}
	return upstream, route, nil
}

// isPlainPath reports whether p needs no normalisation: only unreserved
// characters and the sub-delimiters that never matter here, no escapes, no
// parameters, no empty or dot segments.
func isPlainPath(p string) bool {
	prev := byte(0)
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '_', c == '~', c == '!', c == '$', c == '&', c == '\'',
			c == '(', c == ')', c == '*', c == '+', c == ',', c == '=', c == ':', c == '@':
		case c == '.':
			// A dot is plain unless it makes a "." or ".." segment.
			if prev == '/' && (i+1 == len(p) || p[i+1] == '/' ||
				(p[i+1] == '.' && (i+2 == len(p) || p[i+2] == '/'))) {
				return false
			}
		case c == '/':
			if prev == '/' {
				return false
			}
		default: // '%', ';', '\\', controls, non-ASCII
			return false
		}
		prev = c
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// decodeUnreserved decodes the escapes of unreserved characters, upper-cases
// the others, and refuses escaped slashes, raw backslashes and controls.
func decodeUnreserved(p string) (string, error) {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c < 0x20 || c == 0x7f || c == '\\':
			return "", errPathControl
		case c != '%':
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(p) {
			return "", errPathBadEscape
		}
		hi, ok1 := unhex(p[i+1])
		lo, ok2 := unhex(p[i+2])
		if !ok1 || !ok2 {
			return "", errPathBadEscape
		}
		v := hi<<4 | lo
		switch {
		case v == '/' || v == '\\':
			return "", errPathEncodedSlash
		case v < 0x20 || v == 0x7f:
			return "", errPathControl
		case isUnreserved(v):
			b.WriteByte(v)
		default:
			b.WriteByte('%')
			b.WriteString(strings.ToUpper(p[i+1 : i+3]))
		}
		i += 2
	}
	return b.String(), nil
}

// unescapeAll decodes every remaining escape (validated already).
func unescapeAll(p string) (string, error) {
	if !strings.Contains(p, "%") {
		return p, nil
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		if i+2 >= len(p) {
			return "", errPathBadEscape
		}
		hi, ok1 := unhex(p[i+1])
		lo, ok2 := unhex(p[i+2])
		if !ok1 || !ok2 {
			return "", errPathBadEscape
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}
