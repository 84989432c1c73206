package balance

import (
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestPeakEWMA(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	type sample struct {
		at      time.Duration // since t0
		rtt     time.Duration
		status  int
		failed  bool
		wantMin time.Duration // estimate right after the sample
		wantMax time.Duration
	}
	tests := []struct {
		name    string
		samples []sample
	}{
		{"first sample is the estimate", []sample{
			{0, ms(20), 200, false, ms(20), ms(20)},
		}},
		{"a peak replaces the estimate at once", []sample{
			{0, ms(10), 200, false, ms(10), ms(10)},
			{time.Millisecond, ms(100), 200, false, ms(100), ms(100)},
		}},
		{"a lower sample soon after barely moves it", []sample{
			{0, ms(100), 200, false, ms(100), ms(100)},
			{10 * time.Millisecond, ms(1), 200, false, ms(99.8), ms(100)},
		}},
		{"a lower sample one tau later weighs 1-1/e", []sample{
			{0, ms(100), 200, false, ms(100), ms(100)},
			{DecayTime, ms(0), 200, false, ms(36.7), ms(36.9)},
		}},
		{"503 costs the penalty", []sample{
			{0, ms(1), 200, false, ms(1), ms(1)},
			{time.Millisecond, ms(1), 503, false, PenaltyLatency, PenaltyLatency},
		}},
		{"429 costs the penalty", []sample{
			{0, ms(2), 429, false, PenaltyLatency, PenaltyLatency},
		}},
		{"a failed attempt costs the penalty", []sample{
			{0, ms(0.1), 0, true, PenaltyLatency, PenaltyLatency},
		}},
		{"a failure slower than the penalty costs its time", []sample{
			{0, 3 * time.Second, 0, true, 3 * time.Second, 3 * time.Second},
		}},
		{"500 is an ordinary sample", []sample{
			{0, ms(5), 500, false, ms(5), ms(5)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStats(t0)
			for i, smp := range tt.samples {
				now := t0.Add(smp.at)
				s.Begin()
				s.EndAt(now, smp.rtt, smp.status, smp.failed)
				got, ok := s.Latency(now)
				if !ok || got < smp.wantMin || got > smp.wantMax {
					t.Errorf("after sample %d: estimate %v (measured %v), want %v..%v", i, got, ok, smp.wantMin, smp.wantMax)
				}
			}
			if s.Inflight() != 0 {
				t.Errorf("inflight %d after matched Begin/End", s.Inflight())
			}
		})
	}
}

func TestLatencyDecaysWhileIdle(t *testing.T) {
	s := NewStats(t0)
	s.Observe(t0, 100*time.Millisecond, 200, false)
	got, _ := s.Latency(t0.Add(DecayTime))
	if want := 36787944 * time.Nanosecond; !within(float64(got), float64(want), float64(time.Millisecond)) {
		t.Errorf("estimate one tau after the sample = %v, want ~%v", got, want)
	}
	if got, _ := s.Latency(t0.Add(-time.Second)); got != 100*time.Millisecond {
		t.Errorf("estimate before the sample = %v, want it undecayed", got)
	}
}

func TestCost(t *testing.T) {
	s := NewStats(t0)
	if d, ok := s.Latency(t0); ok || d != DefaultLatency {
		t.Errorf("unmeasured Latency = %v, %v; want DefaultLatency, false", d, ok)
	}
	if got := s.Cost(t0); got != float64(DefaultLatency) {
		t.Errorf("unmeasured idle cost = %v, want %v", got, float64(DefaultLatency))
	}
	s.Observe(t0, 10*time.Millisecond, 200, false)
	s.Begin()
	s.Begin()
	if got, want := s.Cost(t0), 3*float64(10*time.Millisecond); got != want {
		t.Errorf("cost with 2 in flight = %v, want %v", got, want)
	}
	if s.Inflight() != 2 {
		t.Errorf("Inflight = %d, want 2", s.Inflight())
	}
	if !s.Since().Equal(t0) {
		t.Errorf("Since = %v, want %v", s.Since(), t0)
	}
}

// TestStatsConcurrent is for the race detector: Stats take no lock.
func TestStatsConcurrent(t *testing.T) {
	s := NewStats(time.Now())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				s.Begin()
				_ = s.Cost(time.Now())
				s.End(time.Duration(g*1000+i)*time.Microsecond, 200, i%100 == 0)
			}
		})
	}
	wg.Wait()
	if s.Inflight() != 0 {
		t.Errorf("inflight %d after matched Begin/End", s.Inflight())
	}
	if d, ok := s.Latency(time.Now()); !ok || d < PenaltyLatency/2 {
		t.Errorf("estimate %v after penalties, want near the penalty", d)
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	a := r.Acquire("n/a", t0)
	b := r.Acquire("n/b", t0)
	// A second holder of a: the same Stats, the first time kept.
	if r.Acquire("n/a", t0.Add(time.Minute)) != a {
		t.Fatal("Acquire of a known key made new Stats")
	}
	if !a.Since().Equal(t0) {
		t.Errorf("Since = %v, want the first Acquire's time", a.Since())
	}
	if r.Len() != 2 {
		t.Fatalf("Len = %d, want 2", r.Len())
	}
	r.Release("n/a")
	if r.Len() != 2 || r.Acquire("n/a", t0) != a {
		t.Fatal("a forgotten while still held once")
	}
	r.Release("n/a")
	r.Release("n/a")
	r.Release("n/b")
	if r.Len() != 0 {
		t.Fatalf("Len = %d after every release, want 0", r.Len())
	}
	if r.Acquire("n/b", t0.Add(2*time.Minute)) == b {
		t.Error("b came back with its old Stats; want fresh ones (slow start again)")
	}
	r.Release("n/unknown") // harmless
	if r.Len() != 1 {
		t.Errorf("Len = %d, want 1", r.Len())
	}
}

func TestDecay(t *testing.T) {
	for _, dt := range []time.Duration{0, time.Microsecond, time.Millisecond, 9 * time.Millisecond, 10 * time.Millisecond, 11 * time.Millisecond, time.Second, DecayTime, time.Hour} {
		want := math.Exp(-float64(dt) / float64(DecayTime))
		if got := decay(int64(dt)); math.Abs(got-want) > 1e-9 {
			t.Errorf("decay(%v) = %v, want %v", dt, got, want)
		}
	}
}

// TestEndUsesTheClock runs End, which reads time.Now, in a synctest bubble
// so that the decay between two answers is exact and takes no real time.
func TestEndUsesTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewStats(time.Now())
		s.Begin()
		s.End(100*time.Millisecond, 200, false)
		time.Sleep(DecayTime)
		s.Begin()
		s.End(0, 200, false)
		got, _ := s.Latency(time.Now())
		if want := 36787944 * time.Nanosecond; !within(float64(got), float64(want), float64(10*time.Microsecond)) {
			t.Errorf("estimate after a 0 sample one tau later = %v, want ~%v", got, want)
		}
	})
}
