package gateway

import (
	"errors"
	"testing"
)

func upstreams(n int) []*Upstream {
	ups := make([]*Upstream, n)
	for i := range ups {
		in := instance(string(rune('a'+i)), i+1, "/")
		ups[i] = &Upstream{Service: "s", Instance: &in, HostPort: in.HostPort()}
	}
	return ups
}

func TestRoundRobinRotates(t *testing.T) {
	ups := upstreams(3)
	p := NewRoundRobin(ups)
	counts := map[*Upstream]int{}
	for range 300 {
		up, err := p.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[up]++
	}
	for _, up := range ups {
		if counts[up] != 100 {
			t.Errorf("%s picked %d times, want 100", up.Instance.ID, counts[up])
		}
	}
}

func TestRoundRobinSkipsTried(t *testing.T) {
	ups := upstreams(3)
	p := NewRoundRobin(ups)
	for range 10 {
		up, err := p.Pick(ups[:2])
		if err != nil || up != ups[2] {
			t.Fatalf("Pick(tried a, b) = %v, %v; want c", up, err)
		}
	}
	if _, err := p.Pick(ups); !errors.Is(err, ErrNoUpstream) {
		t.Errorf("Pick with every upstream tried: err = %v, want ErrNoUpstream", err)
	}
}

func TestEmptyRouteHasErrPicker(t *testing.T) {
	if _, err := NewRoundRobin(nil).Pick(nil); !errors.Is(err, ErrNoUpstream) {
		t.Errorf("err = %v, want ErrNoUpstream", err)
	}
}

func BenchmarkRoundRobin(b *testing.B) {
	p := NewRoundRobin(upstreams(3))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Pick(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
