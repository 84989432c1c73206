package balance

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// configs is one Config per policy, for the tests every policy must pass.
var configs = []Config{
	{Policy: RoundRobin},
	{Policy: Random},
	{Policy: LeastRequest},
	{Policy: PeakEWMA},
	{Policy: Hash, HashOn: "header:X-User"},
}

func TestNewWithoutEndpoints(t *testing.T) {
	for _, cfg := range configs {
		for _, eps := range [][]*Endpoint{nil, {}} {
			if _, err := New(cfg, eps, nil).Pick(request(), nil); !errors.Is(err, ErrNoEndpoint) {
				t.Errorf("%s with no endpoints: err = %v, want ErrNoEndpoint", cfg.Policy, err)
			}
		}
	}
}

func TestNewUnknownPolicy(t *testing.T) {
	_, err := New(Config{Policy: "fastest"}, equalWeights(2), nil).Pick(request(), nil)
	if err == nil || errors.Is(err, ErrNoEndpoint) {
		t.Errorf("unknown policy: err = %v, want one that names it", err)
	}
}

func TestNewCopiesEndpoints(t *testing.T) {
	eps := equalWeights(2)
	p := New(Config{Policy: RoundRobin}, eps, nil)
	eps[0], eps[1] = nil, nil
	if e, err := p.Pick(nil, nil); err != nil || e == nil {
		t.Errorf("Pick after the caller reused its slice: %v, %v", e, err)
	}
}

// TestSkip holds every policy to the skip contract: a skipped endpoint is
// never returned, everything skipped is ErrNoEndpoint, and skip is called
// a bounded number of times per Pick.
func TestSkip(t *testing.T) {
	const slack = 8 // skip calls allowed beyond len(eps)
	for _, cfg := range configs {
		for _, n := range []int{1, 2, 3, 10, 1000} {
			t.Run(fmt.Sprintf("%s/n=%d", cfg.Policy, n), func(t *testing.T) {
				eps := endpoints(weightsFor(n)...)
				p := New(cfg, eps, nil)
				all := make([]string, n)
				for i, e := range eps {
					all[i] = e.Instance.ID
				}
				for k := range 200 {
					r := keyed(k)
					s := skipping(all...)
					if e, err := p.Pick(r, s); !errors.Is(err, ErrNoEndpoint) {
						t.Fatalf("everything skipped: %v, %v; want ErrNoEndpoint", e, err)
					}
					if s.calls > n+slack {
						t.Fatalf("everything skipped: %d skip calls for %d endpoints", s.calls, n)
					}
					keep := eps[k%n]
					s = skipping(all...)
					delete(s.ids, keep.Instance.ID)
					if e, err := p.Pick(r, s); err != nil || e != keep {
						t.Fatalf("all but %s skipped: %v, %v", keep.Instance.ID, e, err)
					}
					if s.calls > n+slack {
						t.Fatalf("all but one skipped: %d skip calls for %d endpoints", s.calls, n)
					}
					s = skipping(eps[0].Instance.ID)
					e, err := p.Pick(r, s)
					switch {
					case n == 1 && !errors.Is(err, ErrNoEndpoint):
						t.Fatalf("only endpoint skipped: %v, %v", e, err)
					case n > 1 && (err != nil || e == eps[0]):
						t.Fatalf("a skipped: %v, %v", e, err)
					}
				}
			})
		}
	}
}

// weightsFor gives n endpoints mixed weights, so that both the equal and
// the weighted code paths are covered.
func weightsFor(n int) []int {
	w := make([]int, n)
	for i := range w {
		w[i] = 1 + i%3
	}
	return w
}

// TestSlowStart ramps a new 11th endpoint in under every policy but hash:
// its share grows as max(0.1, elapsed/window) of a full one's.
func TestSlowStart(t *testing.T) {
	const window = time.Minute
	for _, cfg := range configs[:4] {
		t.Run(cfg.Policy, func(t *testing.T) {
			for _, tt := range []struct {
				elapsed time.Duration
				ramp    float64
			}{
				{0, 0.1},
				{window / 10, 0.1},
				{window / 2, 0.5},
				{window * 3 / 4, 0.75},
				{window, 1},
				{time.Hour, 1},
			} {
				clk := &fakeClock{t0}
				eps := equalWeights(10)
				fresh := endpoint("new", 1, t0)
				eps = append(eps, fresh)
				cfg := cfg
				cfg.SlowStart = window
				clk.t = t0.Add(tt.elapsed)
				p := New(cfg, eps, clk.now)
				got := counts(p, nil, 40000)
				share := float64(got["new"]) / 40000
				want := tt.ramp / 11
				if !within(share, want, want*0.3+0.003) {
					t.Errorf("after %v: new endpoint's share %.4f, want ~%.4f", tt.elapsed, share, want)
				}
			}
		})
	}
	t.Run("hash ignores it", func(t *testing.T) {
		clk := &fakeClock{t0}
		eps := append(equalWeights(3), endpoint("new", 1, t0))
		p := New(Config{Policy: Hash, HashOn: "header:X-User", SlowStart: window}, eps, clk.now)
		q := New(Config{Policy: Hash, HashOn: "header:X-User"}, eps, clk.now)
		for k := range 1000 {
			a, _ := p.Pick(keyed(k), nil)
			b, _ := q.Pick(keyed(k), nil)
			if a != b {
				t.Fatalf("key %d: %s with slow start, %s without", k, a.Instance.ID, b.Instance.ID)
			}
		}
	})
}

// TestSlowStartOnlyRamping: a pool of new instances still serves, and
// evenly.
func TestSlowStartOnlyRamping(t *testing.T) {
	for _, cfg := range configs[:4] {
		clk := &fakeClock{t0}
		eps := []*Endpoint{endpoint("a", 1, t0), endpoint("b", 1, t0)}
		cfg.SlowStart = time.Minute
		got := counts(New(cfg, eps, clk.now), nil, 10000)
		for _, id := range []string{"a", "b"} {
			if share := float64(got[id]) / 10000; !within(share, .5, .05) {
				t.Errorf("%s: %s got %.3f of a pool of two new endpoints, want 0.5", cfg.Policy, id, share)
			}
		}
	}
}

// TestSlowStartClockNotReadAfterRamp: once every endpoint is out of its
// window as of the build, Pick never reads the clock for slow start.
func TestSlowStartClockNotReadAfterRamp(t *testing.T) {
	reads := 0
	clock := func() time.Time { reads++; return t0 }
	p := New(Config{Policy: Random, SlowStart: time.Minute}, equalWeights(3), clock)
	reads = 0
	for range 100 {
		p.Pick(nil, nil)
	}
	if reads != 0 {
		t.Errorf("%d clock reads in 100 picks with nothing ramping, want 0", reads)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	skip := SkipFunc(func(e *Endpoint) bool { return e.Weight == 2 })
	for _, cfg := range append(configs,
		Config{Policy: Hash, HashOn: "cookie:session"},
		Config{Policy: Hash, HashOn: "client"},
		Config{Policy: Random, SlowStart: time.Minute},
	) {
		eps := endpoints(weightsFor(100)...)
		eps = append(eps, endpoint("new", 1, t0))
		clk := &fakeClock{t0.Add(time.Second)}
		p := New(cfg, eps, clk.now)
		r := benchRequest()
		if n := testing.AllocsPerRun(1000, func() { p.Pick(r, skip) }); n != 0 {
			t.Errorf("%s %s: %.1f allocations per Pick, want 0", cfg.Policy, cfg.HashOn, n)
		}
	}
}

func benchRequest() *http.Request {
	r := request()
	r.Header.Set("X-User", "alice")
	r.Header.Set("Cookie", "theme=dark; session=0123456789")
	r.RemoteAddr = "192.0.2.7:5555"
	return r
}

func BenchmarkPick(b *testing.B) {
	for _, cfg := range configs {
		for _, n := range []int{3, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", cfg.Policy, n), func(b *testing.B) {
				eps := equalWeights(n)
				for _, e := range eps {
					e.Stats.Observe(time.Now(), time.Millisecond, 200, false)
				}
				p := New(cfg, eps, nil)
				r := benchRequest()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := p.Pick(r, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	b.Run("round_robin/n=1000/weighted", func(b *testing.B) {
		p := New(Config{Policy: RoundRobin}, endpoints(weightsFor(1000)...), nil)
		b.ReportAllocs()
		for b.Loop() {
			p.Pick(nil, nil)
		}
	})
	b.Run("peak_ewma/n=1000/parallel", func(b *testing.B) {
		p := New(Config{Policy: PeakEWMA}, equalWeights(1000), nil)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e, _ := p.Pick(nil, nil)
				e.Stats.Begin()
				e.Stats.End(time.Millisecond, 200, false)
			}
		})
	})
}
