package balance

import "net/http"

// random picks an endpoint at random in proportion to its weight.
type random struct {
	s  sampler
	ss slowStart
}

func (p *random) Pick(_ *http.Request, skip Skipper) (*Endpoint, error) {
	g := p.ss.gate(skip, zeroTime)
	if i := p.s.one(&g); i >= 0 {
		return p.s.eps[i], nil
	}
	return g.result()
}
