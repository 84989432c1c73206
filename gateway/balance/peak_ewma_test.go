package balance

import (
	"testing"
	"time"
)

func TestPeakEWMAPicker(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name     string
		latency  []time.Duration // 0: no sample
		inflight []int64
		weights  []int
		check    func(t *testing.T, share []float64)
	}{
		{"slow endpoint avoided", []time.Duration{50 * ms, ms, ms}, nil, nil,
			func(t *testing.T, s []float64) {
				if s[0] >= 0.10 {
					t.Errorf("50 ms endpoint got %.3f, want < 0.10", s[0])
				}
			}},
		{"equal latencies share evenly", []time.Duration{ms, ms, ms, ms}, nil, nil,
			func(t *testing.T, s []float64) {
				for i := range s {
					if !within(s[i], .25, .03) {
						t.Errorf("%s got %.3f, want 0.25", name(i), s[i])
					}
				}
			}},
		{"load counts: fast but busy loses", []time.Duration{ms, 2 * ms}, []int64{5, 0}, nil,
			func(t *testing.T, s []float64) {
				if s[0] != 0 {
					t.Errorf("1 ms endpoint with 5 in flight got %.3f, want 0 against an idle 2 ms one", s[0])
				}
			}},
		{"unmeasured endpoint is probed, on load alone", []time.Duration{0, 10 * ms, 10 * ms}, nil, nil,
			func(t *testing.T, s []float64) {
				if !within(s[0], 1./3, .03) {
					t.Errorf("new endpoint got %.3f, want its third while all are idle", s[0])
				}
			}},
		{"penalised endpoint avoided", []time.Duration{PenaltyLatency, 20 * ms, 20 * ms}, nil, nil,
			func(t *testing.T, s []float64) {
				if s[0] != 0 {
					t.Errorf("penalised endpoint got %.3f, want 0", s[0])
				}
			}},
		{"weight counts", []time.Duration{10 * ms, 10 * ms}, []int64{1, 0}, []int{3, 1},
			func(t *testing.T, s []float64) {
				// a: 10*2/3 = 6.7 per weight, b: 10*1/1 = 10: a always wins.
				if s[0] != 1 {
					t.Errorf("heavy endpoint got %.3f, want 1", s[0])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.weights
			if w == nil {
				w = make([]int, len(tt.latency))
				for i := range w {
					w[i] = 1
				}
			}
			eps := endpoints(w...)
			for i, d := range tt.latency {
				if d > 0 {
					eps[i].Stats.Observe(t0, d, 200, false)
				}
				if tt.inflight != nil {
					eps[i].Stats.inflight.Store(tt.inflight[i])
				}
			}
			clk := &fakeClock{t0}
			got := counts(New(Config{Policy: PeakEWMA}, eps, clk.now), nil, 20000)
			share := make([]float64, len(eps))
			for i := range eps {
				share[i] = float64(got[name(i)]) / 20000
			}
			tt.check(t, share)
		})
	}
}

// TestPeakEWMAReactsToAnswers feeds End samples as a proxy would: an
// endpoint that turns slow loses its traffic.
func TestPeakEWMAReactsToAnswers(t *testing.T) {
	eps := equalWeights(3)
	clk := &fakeClock{t0}
	p := New(Config{}, eps, clk.now) // "" is the default policy
	got := map[string]int{}
	for i := range 30000 {
		e, err := p.Pick(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.Stats.Begin()
		rtt := time.Millisecond
		if e == eps[0] && i > 1000 {
			rtt = 50 * time.Millisecond // a turns slow
		}
		clk.t = clk.t.Add(100 * time.Microsecond)
		e.Stats.EndAt(clk.t, rtt, 200, false)
		if i > 2000 {
			got[e.Instance.ID]++
		}
	}
	if share := float64(got["a"]) / 28000; share >= 0.10 {
		t.Errorf("slow endpoint got %.3f of the traffic, want < 0.10", share)
	}
}
