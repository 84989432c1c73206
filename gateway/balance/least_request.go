package balance

import "net/http"

// leastRequest is the power of two choices on load: it draws two distinct
// endpoints in proportion to their weights and takes the one with fewer
// requests in flight per unit of weight (the first drawn on a tie, so that
// an idle pool is shared by weight).
type leastRequest struct {
	s  sampler
	ss slowStart
}

func (p *leastRequest) Pick(_ *http.Request, skip Skipper) (*Endpoint, error) {
	g := p.ss.gate(skip, zeroTime)
	a, b := p.s.two(&g)
	if a < 0 {
		return g.result()
	}
	ea := p.s.eps[a]
	if b < 0 {
		return ea, nil
	}
	eb := p.s.eps[b]
	// inflight(b)/w(b) < inflight(a)/w(a), without division.
	if uint64(max(eb.Stats.Inflight(), 0))*weight(ea) < uint64(max(ea.Stats.Inflight(), 0))*weight(eb) {
		return eb, nil
	}
	return ea, nil
}
