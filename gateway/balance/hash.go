package balance

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// Ring-hash parameters.
const (
	// pointsPerWeight is how many points on the ring one unit of weight
	// gets: 100 keeps the share of each of 10 equal instances within a few
	// percent of 10%.
	pointsPerWeight = 100
	// maxPoints caps the ring (1000 instances of weight 1 make 100 000
	// points, 1.2 MB). Above it every weight is scaled down, which makes
	// the points, and so the keys, of a pool near the cap move more when
	// it changes.
	maxPoints = 200_000
	// ringSteps is how many ring points a Pick walks past skipped
	// endpoints before it falls back to a scan of the endpoints.
	ringSteps = 8
)

// ringHash is consistent hashing on a ring (Karger et al., as ketama and
// Envoy's ring_hash): every endpoint owns points on a 64-bit ring in
// proportion to its weight, and a key goes to the owner of the first point
// at or after the key's hash; a Pick is a binary search, O(log points).
//
// Why a ring and not Maglev or rendezvous: rendezvous hashing is O(n) per
// pick; Maglev is O(1) but moves a few keys between instances that stay
// when another leaves; the ring moves only the keys of the instance that
// leaves (to the instances after its points) and, when one joins, only the
// keys it takes. Both a point's position and a key's hash are fixed
// functions (FNV-1a, then a 64-bit finaliser) of the instance key and the
// request key, so every gateway maps a key to the same instance.
//
// A skipped endpoint is passed over by walking to the next points of the
// ring, then, after ringSteps points, to the next endpoints in order: a
// retry of the same key with the same skips goes to the same place. A
// request without the key is sent to a weighted random endpoint.
type ringHash struct {
	s      sampler
	points []ringPoint // sorted by hash
	key    func(r *http.Request) (string, bool)
}

type ringPoint struct {
	hash uint64
	ep   int32
}

func newRingHash(hashOn string, eps []*Endpoint) (*ringHash, error) {
	if err := checkHashOn(hashOn); err != nil {
		return nil, err
	}
	p := &ringHash{s: newSampler(eps), key: keyFunc(hashOn)}
	scale := uint64(pointsPerWeight)
	var total uint64
	for _, e := range eps {
		total += weight(e)
	}
	count := func(e *Endpoint) int {
		if total*pointsPerWeight <= maxPoints {
			return int(weight(e) * scale)
		}
		return int(max(1, weight(e)*maxPoints/total))
	}
	for i, e := range eps {
		seed := hashString(endpointID(e))
		for k := range count(e) {
			p.points = append(p.points, ringPoint{mix(seed + uint64(k+1)*0x9e3779b97f4a7c15), int32(i)})
		}
	}
	slices.SortFunc(p.points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		// Ties (vanishingly rare) by identity, not input order.
		return strings.Compare(endpointID(eps[a.ep]), endpointID(eps[b.ep]))
	})
	return p, nil
}

// endpointID is what places an endpoint on the ring: its instance key,
// which survives a change of address, else its address.
func endpointID(e *Endpoint) string {
	if e.Instance != nil {
		return e.Instance.Key()
	}
	return e.Addr
}

func (p *ringHash) Pick(r *http.Request, skip Skipper) (*Endpoint, error) {
	g := gate{skip: skip} // no slow start: see New
	if r == nil {
		return p.random(&g)
	}
	key, ok := p.key(r)
	if !ok {
		return p.random(&g)
	}
	return p.lookup(hashString(key), &g)
}

func (p *ringHash) random(g *gate) (*Endpoint, error) {
	if i := p.s.one(g); i >= 0 {
		return p.s.eps[i], nil
	}
	return g.result()
}

func (p *ringHash) lookup(h uint64, g *gate) (*Endpoint, error) {
	n := len(p.points)
	i, _ := slices.BinarySearchFunc(p.points, h, func(pt ringPoint, h uint64) int {
		switch {
		case pt.hash < h:
			return -1
		case pt.hash > h:
			return 1
		}
		return 0
	})
	// Walk the ring past skipped endpoints, asking about each at most once.
	var tried [ringSteps]int32
	nt := 0
	last := int32(0)
	for k := 0; k < n && nt < ringSteps; k++ {
		ep := p.points[(i+k)%n].ep
		if slices.Contains(tried[:nt], ep) {
			continue
		}
		if e := p.s.eps[ep]; g.ok(e) {
			return e, nil
		}
		tried[nt], last = ep, ep
		nt++
		if nt == len(p.s.eps) {
			return g.result()
		}
	}
	// Mostly skipped: the endpoints after the last one tried, in order.
	m := len(p.s.eps)
	for k := 1; k < m; k++ {
		ep := (int(last) + k) % m
		if slices.Contains(tried[:nt], int32(ep)) {
			continue
		}
		if e := p.s.eps[ep]; g.ok(e) {
			return e, nil
		}
	}
	return g.result()
}

// keyFunc returns the request-key reader of a checked HashOn. None
// allocates.
func keyFunc(hashOn string) func(*http.Request) (string, bool) {
	kind, name, _ := strings.Cut(hashOn, ":")
	switch kind {
	case "header":
		name = textproto.CanonicalMIMEHeaderKey(name)
		return func(r *http.Request) (string, bool) {
			v := r.Header[name]
			if len(v) == 0 || v[0] == "" {
				return "", false
			}
			return v[0], true
		}
	case "cookie":
		return func(r *http.Request) (string, bool) { return cookieValue(r.Header, name) }
	default: // client
		return func(r *http.Request) (string, bool) { return clientHost(r.RemoteAddr) }
	}
}

// cookieValue finds a cookie's value in the Cookie headers without the
// allocations of http.Request.Cookie.
func cookieValue(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if v == "" {
				return "", false
			}
			return v, true
		}
	}
	return "", false
}

// clientHost is the host of a RemoteAddr ("1.2.3.4:5678", "[::1]:5678").
// X-Forwarded-For is not trusted.
func clientHost(addr string) (string, bool) {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 && !strings.HasSuffix(addr, "]") {
		addr = addr[:i]
	}
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	return addr, addr != ""
}

// hashString is 64-bit FNV-1a followed by the murmur3 finaliser, which
// FNV's weak avalanche needs before its bits place anything on a ring.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix(h)
}

// mix is the murmur3 64-bit finaliser.
func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
