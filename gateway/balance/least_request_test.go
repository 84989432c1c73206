package balance

import "testing"

func TestLeastRequest(t *testing.T) {
	tests := []struct {
		name     string
		weights  []int
		inflight []int64
		want     []float64 // share per endpoint
		tol      float64
	}{
		// Idle: ties go to the first draw, so shares follow the weights.
		{"idle equal", []int{1, 1, 1}, []int64{0, 0, 0}, []float64{1. / 3, 1. / 3, 1. / 3}, 0.03},
		{"idle 3:1", []int{3, 1}, []int64{0, 0}, []float64{.75, .25}, 0.03},
		// A loaded endpoint only wins when drawn twice, which P2C never
		// does: it gets nothing while the others are less loaded.
		{"one busy", []int{1, 1, 1}, []int64{50, 0, 0}, []float64{0, .5, .5}, 0.03},
		// Per unit of weight: 6 in flight on weight 3 beats 3 on weight 1.
		{"load per weight", []int{3, 1}, []int64{6, 3}, []float64{1, 0}, 0},
		{"single", []int{1}, []int64{9}, []float64{1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := endpoints(tt.weights...)
			for i, n := range tt.inflight {
				eps[i].Stats.inflight.Store(n)
			}
			got := counts(New(Config{Policy: LeastRequest}, eps, nil), nil, 40000)
			for i, want := range tt.want {
				if share := float64(got[name(i)]) / 40000; !within(share, want, tt.tol) {
					t.Errorf("%s: share %.3f, want %.3f ± %.2f", name(i), share, want, tt.tol)
				}
			}
		})
	}
}

// TestLeastRequestBalancesLoad holds every pick open: P2C keeps the
// in-flight counts within a few of each other.
func TestLeastRequestBalancesLoad(t *testing.T) {
	eps := equalWeights(10)
	p := New(Config{Policy: LeastRequest}, eps, nil)
	for range 1000 {
		e, _ := p.Pick(nil, nil)
		e.Stats.Begin()
	}
	lo, hi := eps[0].Stats.Inflight(), eps[0].Stats.Inflight()
	for _, e := range eps {
		lo, hi = min(lo, e.Stats.Inflight()), max(hi, e.Stats.Inflight())
	}
	if hi-lo > 10 {
		t.Errorf("in flight from %d to %d after 1000 open picks over 10; want within 10", lo, hi)
	}
}
