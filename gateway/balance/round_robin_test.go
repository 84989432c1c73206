package balance

import (
	"strings"
	"testing"
)

func TestSmoothSequence(t *testing.T) {
	tests := []struct {
		weights []int
		want    string
	}{
		{[]int{1}, "a"},
		{[]int{1, 1, 1}, "abc"},
		{[]int{5, 1, 1}, "aabacaa"},
		{[]int{10, 2, 2}, "aabacaa"}, // normalised by the gcd
		{[]int{2, 1}, "aba"},
		{[]int{3, 3, 1}, "abcabab"},
		{[]int{0, 1}, "ab"}, // a weight below 1 counts as 1
	}
	for _, tt := range tests {
		seq := smoothSequence(endpoints(tt.weights...))
		var got strings.Builder
		for _, i := range seq {
			got.WriteString(name(int(i)))
		}
		if got.String() != tt.want {
			t.Errorf("weights %v: sequence %s, want %s", tt.weights, got.String(), tt.want)
		}
	}
}

func TestSmoothSequenceCapped(t *testing.T) {
	seq := smoothSequence(endpoints(30000, 10000, 1))
	if len(seq) > maxSequence+1 {
		t.Fatalf("sequence of %d entries, want at most about %d", len(seq), maxSequence)
	}
	n := map[int32]int{}
	for _, i := range seq {
		n[i]++
	}
	if n[2] != 1 || !within(float64(n[0])/float64(n[1]), 3, 0.01) {
		t.Errorf("capped shares %v, want 3:1 and the light one kept at 1", n)
	}
}

func TestRoundRobinPick(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		skip    []string
		picks   int
		want    map[string]int
	}{
		{"equal", []int{1, 1, 1}, nil, 300, map[string]int{"a": 100, "b": 100, "c": 100}},
		{"weighted", []int{5, 1, 1}, nil, 700, map[string]int{"a": 500, "b": 100, "c": 100}},
		// A skipped endpoint's share is spread, not handed to its successor.
		{"skip one", []int{1, 1, 1}, []string{"b"}, 300, map[string]int{"a": 150, "c": 150}},
		{"skip heavy", []int{5, 1, 1}, []string{"a"}, 700, map[string]int{"b": 350, "c": 350}},
		{"skip light", []int{2, 1, 1}, []string{"c"}, 300, map[string]int{"a": 200, "b": 100}},
		{"skip all but one", []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, 10, map[string]int{"j": 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{Policy: RoundRobin}, endpoints(tt.weights...), nil)
			s := skipping(tt.skip...)
			got := map[string]int{}
			for range tt.picks {
				e, err := p.Pick(nil, s)
				if err != nil {
					t.Fatal(err)
				}
				got[e.Instance.ID]++
			}
			for id, n := range tt.want {
				if got[id] != n {
					t.Errorf("%s picked %d times, want %d (all: %v)", id, got[id], n, got)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("picked %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRoundRobinNoBurst checks that the picks, not just the sequence, are
// smooth: at 5:1:1 the heavy endpoint never gets 5 in a row (the period
// a a b a c a a repeats, so 4 in a row happen across its boundary).
func TestRoundRobinNoBurst(t *testing.T) {
	p := New(Config{Policy: RoundRobin}, endpoints(5, 1, 1), nil)
	run, prev := 0, ""
	for range 70 {
		e, _ := p.Pick(nil, nil)
		if e.Instance.ID == prev {
			run++
		} else {
			run, prev = 1, e.Instance.ID
		}
		if run > 4 {
			t.Fatalf("%s picked %d times in a row", prev, run)
		}
	}
}
