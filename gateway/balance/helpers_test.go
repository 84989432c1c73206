package balance

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/hopgate/hopgate/discovery"
)

// t0 is the fake clock's origin in tests.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeClock is a settable clock for New.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// endpoints makes endpoints named a, b, c, ... with the given weights, all
// routable since long before t0.
func endpoints(weights ...int) []*Endpoint {
	eps := make([]*Endpoint, len(weights))
	for i, w := range weights {
		eps[i] = endpoint(name(i), w, t0.Add(-time.Hour))
	}
	return eps
}

func endpoint(id string, w int, since time.Time) *Endpoint {
	in := &discovery.Instance{ID: id, Node: "node", Address: "10.0.0.1", Port: 8000, Weight: w}
	return &Endpoint{Instance: in, Addr: in.HostPort(), Weight: w, Stats: NewStats(since)}
}

func name(i int) string {
	if i < 26 {
		return string(rune('a' + i))
	}
	return fmt.Sprintf("e%d", i)
}

func equalWeights(n int) []*Endpoint {
	w := make([]int, n)
	for i := range w {
		w[i] = 1
	}
	return endpoints(w...)
}

// counts picks n times and counts the picks per endpoint ID.
func counts(p Picker, r *http.Request, n int) map[string]int {
	c := map[string]int{}
	for range n {
		e, err := p.Pick(r, nil)
		if err != nil {
			panic(err)
		}
		c[e.Instance.ID]++
	}
	return c
}

func request() *http.Request { return httptest.NewRequest("GET", "/", nil) }

// skipIDs skips the endpoints with the given IDs and counts its calls.
type skipIDs struct {
	ids   map[string]bool
	calls int
}

func skipping(ids ...string) *skipIDs {
	s := &skipIDs{ids: map[string]bool{}}
	for _, id := range ids {
		s.ids[id] = true
	}
	return s
}

func (s *skipIDs) Skip(e *Endpoint) bool {
	s.calls++
	return s.ids[e.Instance.ID]
}

func within(got, want, tol float64) bool { return got >= want-tol && got <= want+tol }
