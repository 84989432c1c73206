package balance

import "testing"

func TestRandomWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		skip    []string
		want    []float64 // share per endpoint
	}{
		{"equal", []int{1, 1, 1, 1}, nil, []float64{.25, .25, .25, .25}},
		{"3:1", []int{3, 1}, nil, []float64{.75, .25}},
		{"5:1:1", []int{5, 1, 1}, nil, []float64{5. / 7, 1. / 7, 1. / 7}},
		{"skip heavy", []int{5, 1, 1}, []string{"a"}, []float64{0, .5, .5}},
		{"skip light", []int{3, 1, 1}, []string{"c"}, []float64{.75, .25, 0}},
	}
	const picks = 40000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := endpoints(tt.weights...)
			p := New(Config{Policy: Random}, eps, nil)
			s := skipping(tt.skip...)
			got := map[string]int{}
			for range picks {
				e, err := p.Pick(nil, s)
				if err != nil {
					t.Fatal(err)
				}
				got[e.Instance.ID]++
			}
			for i, want := range tt.want {
				if share := float64(got[name(i)]) / picks; !within(share, want, 0.03) {
					t.Errorf("%s: share %.3f, want %.3f ± 0.03", name(i), share, want)
				}
			}
		})
	}
}

// TestIndexExcept checks the second draw of the power of two choices: it
// never repeats the first and keeps the others' proportions.
func TestIndexExcept(t *testing.T) {
	for _, weights := range [][]int{{1, 1, 1}, {3, 1, 1}, {1, 3, 1}, {1, 1, 3}} {
		s := newSampler(endpoints(weights...))
		for not := range weights {
			got := make([]int, len(weights))
			for range 30000 {
				got[s.indexExcept(not)]++
			}
			if got[not] != 0 {
				t.Fatalf("weights %v: indexExcept(%d) returned %d", weights, not, not)
			}
			rest := 0
			for i, w := range weights {
				if i != not {
					rest += w
				}
			}
			for i, w := range weights {
				if i == not {
					continue
				}
				if share := float64(got[i]) / 30000; !within(share, float64(w)/float64(rest), 0.03) {
					t.Errorf("weights %v, not %d: %s share %.3f, want %.3f", weights, not, name(i), share, float64(w)/float64(rest))
				}
			}
		}
	}
}
