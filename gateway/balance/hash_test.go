package balance

import (
	"fmt"
	"net/http"
	"testing"
)

func TestHashKey(t *testing.T) {
	tests := []struct {
		hashOn string
		setup  func(r *http.Request)
		want   string
		ok     bool
	}{
		{"header:X-User", func(r *http.Request) { r.Header.Set("X-User", "alice") }, "alice", true},
		{"header:x-user", func(r *http.Request) { r.Header.Set("X-User", "alice") }, "alice", true},
		{"header:X-User", func(r *http.Request) {}, "", false},
		{"header:X-User", func(r *http.Request) { r.Header.Set("X-User", "") }, "", false},
		{"cookie:session", func(r *http.Request) { r.Header.Set("Cookie", "a=1; session=s3; b=2") }, "s3", true},
		{"cookie:session", func(r *http.Request) { r.Header.Set("Cookie", `session="q"`) }, "q", true},
		{"cookie:session", func(r *http.Request) {
			r.Header.Add("Cookie", "a=1")
			r.Header.Add("Cookie", "session=second-line")
		}, "second-line", true},
		{"cookie:session", func(r *http.Request) { r.Header.Set("Cookie", "sessionx=1; xsession=2") }, "", false},
		{"cookie:session", func(r *http.Request) {}, "", false},
		{"client", func(r *http.Request) { r.RemoteAddr = "192.0.2.7:5555" }, "192.0.2.7", true},
		{"client", func(r *http.Request) { r.RemoteAddr = "[2001:db8::1]:5555" }, "2001:db8::1", true},
		{"client", func(r *http.Request) {
			r.RemoteAddr = "192.0.2.7:5555"
			r.Header.Set("X-Forwarded-For", "203.0.113.9")
		}, "192.0.2.7", true},
		{"client", func(r *http.Request) { r.RemoteAddr = "" }, "", false},
	}
	for _, tt := range tests {
		r := request()
		tt.setup(r)
		got, ok := keyFunc(tt.hashOn)(r)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s on %v %q: key %q, %v; want %q, %v", tt.hashOn, r.Header, r.RemoteAddr, got, ok, tt.want, tt.ok)
		}
	}
}

func TestHashBadKeyIsAnErrorPicker(t *testing.T) {
	if _, err := New(Config{Policy: Hash, HashOn: "body"}, equalWeights(2), nil).Pick(request(), nil); err == nil {
		t.Error("hash on body picked, want an error")
	}
}

// keyed builds requests carrying key i in X-User.
func keyed(i int) *http.Request {
	r := request()
	r.Header.Set("X-User", fmt.Sprint("user-", i))
	return r
}

func TestHashSticky(t *testing.T) {
	eps := equalWeights(10)
	p := New(Config{Policy: Hash, HashOn: "header:X-User"}, eps, nil)
	q := New(Config{Policy: Hash, HashOn: "header:X-User"}, equalWeights(10), nil) // another gateway
	for i := range 1000 {
		r := keyed(i)
		a, _ := p.Pick(r, nil)
		b, _ := p.Pick(r, nil)
		c, _ := q.Pick(r, nil)
		if a != b || a.Instance.ID != c.Instance.ID {
			t.Fatalf("key %d went to %s, %s and (other gateway) %s", i, a.Instance.ID, b.Instance.ID, c.Instance.ID)
		}
	}
}

func TestHashSkipIsDeterministic(t *testing.T) {
	eps := equalWeights(10)
	p := New(Config{Policy: Hash, HashOn: "header:X-User"}, eps, nil)
	for i := range 500 {
		r := keyed(i)
		first, _ := p.Pick(r, nil)
		s := skipping(first.Instance.ID)
		retry, err := p.Pick(r, s)
		if err != nil || retry == first {
			t.Fatalf("key %d: retry %v, %v; want another endpoint", i, retry, err)
		}
		again, _ := p.Pick(r, s)
		if again != retry {
			t.Fatalf("key %d: retries went to %s then %s", i, retry.Instance.ID, again.Instance.ID)
		}
		// Skipping all but one still finds it.
		var ids []string
		for _, e := range eps[1:] {
			ids = append(ids, e.Instance.ID)
		}
		if e, err := p.Pick(r, skipping(ids...)); err != nil || e != eps[0] {
			t.Fatalf("key %d with all but a skipped: %v, %v", i, e, err)
		}
	}
}

func TestHashWithoutKeyIsRandom(t *testing.T) {
	p := New(Config{Policy: Hash, HashOn: "cookie:session"}, endpoints(3, 1), nil)
	got := counts(p, request(), 40000)
	if share := float64(got["a"]) / 40000; !within(share, .75, .03) {
		t.Errorf("keyless share of weight 3 of 4: %.3f, want 0.75", share)
	}
	if e, err := p.Pick(nil, nil); err != nil || e == nil {
		t.Errorf("Pick(nil request) = %v, %v", e, err)
	}
}

func TestHashWeights(t *testing.T) {
	p := New(Config{Policy: Hash, HashOn: "header:X-User"}, endpoints(3, 1, 1, 1), nil)
	got := map[string]int{}
	const keys = 40000
	for i := range keys {
		e, _ := p.Pick(keyed(i), nil)
		got[e.Instance.ID]++
	}
	for i, want := range []float64{.5, 1. / 6, 1. / 6, 1. / 6} {
		if share := float64(got[name(i)]) / keys; !within(share, want, .05) {
			t.Errorf("%s: share of keys %.3f, want %.3f ± 0.05", name(i), share, want)
		}
	}
}

// TestHashReshuffle measures the keys that move when one of 10 instances
// leaves or an 11th joins. Ideal: 10% and 9.1%, and only the keys of the
// instance that left, or to the one that joined.
func TestHashReshuffle(t *testing.T) {
	const keys = 100_000
	cfg := Config{Policy: Hash, HashOn: "header:X-User"}
	eps := equalWeights(11)
	ten := New(cfg, eps[:10], nil)
	assign := func(p Picker) []string {
		out := make([]string, keys)
		for i := range out {
			e, _ := p.Pick(keyed(i), nil)
			out[i] = e.Instance.ID
		}
		return out
	}
	before := assign(ten)

	t.Run("one of 10 leaves", func(t *testing.T) {
		gone := eps[3].Instance.ID
		rest := append(append([]*Endpoint{}, eps[:3]...), eps[4:10]...)
		after := assign(New(cfg, rest, nil))
		moved := 0
		for i := range before {
			if before[i] != after[i] {
				moved++
				if before[i] != gone {
					t.Fatalf("key %d moved from %s, which stayed, to %s", i, before[i], after[i])
				}
			}
		}
		share := float64(moved) / keys
		t.Logf("%.1f%% of keys moved (ideal 10%%)", 100*share)
		if share >= 0.15 {
			t.Errorf("%.1f%% of keys moved, want < 15%%", 100*share)
		}
	})
	t.Run("an 11th joins", func(t *testing.T) {
		after := assign(New(cfg, eps, nil))
		moved := 0
		for i := range before {
			if before[i] != after[i] {
				moved++
				if after[i] != eps[10].Instance.ID {
					t.Fatalf("key %d moved from %s to %s, not to the new instance", i, before[i], after[i])
				}
			}
		}
		share := float64(moved) / keys
		t.Logf("%.1f%% of keys moved (ideal 9.1%%)", 100*share)
		if share >= 0.15 {
			t.Errorf("%.1f%% of keys moved, want < 15%%", 100*share)
		}
	})
}
