package balance

import "net/http"

// peakEWMA is the power of two choices on Stats.Cost per unit of weight:
// the peak-EWMA latency estimate times (requests in flight + 1). It draws
// two distinct endpoints in proportion to their weights and takes the
// cheaper, the first drawn on a tie.
//
// When one of the two has no latency sample yet, it is lent the other's
// estimate, so the pair competes on load alone: a new instance is probed at
// once but gets no more than its share of concurrent requests (slow start
// further ramps how often it is drawn at all). When neither has a sample,
// both cost DefaultLatency, which again compares load.
type peakEWMA struct {
	s  sampler
	ss slowStart
}

func (p *peakEWMA) Pick(_ *http.Request, skip Skipper) (*Endpoint, error) {
	now := p.ss.now()
	g := p.ss.gate(skip, now)
	a, b := p.s.two(&g)
	if a < 0 {
		return g.result()
	}
	ea := p.s.eps[a]
	if b < 0 {
		return ea, nil
	}
	eb := p.s.eps[b]
	la, okA := ea.Stats.latency.at(clock(now))
	lb, okB := eb.Stats.latency.at(clock(now))
	switch {
	case okA && !okB:
		lb = la
	case okB && !okA:
		la = lb
	case !okA && !okB:
		la, lb = float64(DefaultLatency), float64(DefaultLatency)
	}
	ca := la * float64(max(ea.Stats.Inflight(), 0)+1) / float64(weight(ea))
	cb := lb * float64(max(eb.Stats.Inflight(), 0)+1) / float64(weight(eb))
	if cb < ca {
		return eb, nil
	}
	return ea, nil
}
