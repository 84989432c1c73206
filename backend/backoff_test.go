package backend

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffGrowsCappedAndJittered(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000, 2000} // ms, before jitter
	for i, w := range want {
		d := b.next()
		hi := w * time.Millisecond
		if d < hi/2 || d > hi {
			t.Errorf("wait %d = %v, want in [%v, %v]", i, d, hi/2, hi)
		}
	}
	// Far along the schedule it stays capped (no overflow).
	for range 100 {
		if d := b.next(); d < time.Second || d > 2*time.Second {
			t.Fatalf("capped wait = %v, want in [1s, 2s]", d)
		}
	}
	b.reset()
	if d := b.next(); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Errorf("after reset: %v, want in [50ms, 100ms]", d)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	for _, j := range []float64{0, 0.5, 0.999999} {
		b := backoff{min: time.Second, max: time.Minute, jitter: func() float64 { return j }}
		d := b.next()
		want := time.Second/2 + time.Duration(j*float64(time.Second/2))
		if d != want {
			t.Errorf("jitter %v: %v, want %v", j, d, want)
		}
	}
}

func TestBackoffIsJittered(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		b := backoff{min: time.Second, max: time.Minute}
		seen[b.next()] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 first waits took only %d distinct values: not jittered", len(seen))
	}
}

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !sleep(context.Background(), 3*time.Second) {
			t.Fatal("sleep reported cancellation")
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("slept %v, want 3s", got)
		}

		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		start = time.Now()
		if sleep(ctx, time.Hour) {
			t.Fatal("sleep ignored cancellation")
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("cancelled after %v, want 1s", got)
		}
		if sleep(ctx, 0) {
			t.Error("sleep(0) on a done context reported success")
		}
	})
}
