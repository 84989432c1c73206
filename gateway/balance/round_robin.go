package balance

import (
	"math/rand/v2"
	"net/http"
	"sync/atomic"
)

// rrSteps is how many positions of the sequence a Pick tries before it
// falls back to a scan of the endpoints: skip is called at most
// len(eps)+rrSteps times per Pick.
const rrSteps = 8

// maxSequence caps the length of a smooth round-robin sequence: a pool
// whose weights add up to more is scaled down in proportion, each weight
// staying at least 1.
const maxSequence = 10000

// smoothRR is weighted round robin without bursts, as nginx's smooth
// weighted round robin: weights 5, 1, 1 give a a b a c a a, not
// a a a a a b c (the period repeats, so the longest run is 4, across its
// boundary). The sequence is computed once, at build, over the weights
// divided by their greatest common divisor; Pick is an atomic counter into
// it, so it takes no lock. The counter starts at a random position so that
// gateways restarted together do not all hit the same instance first.
type smoothRR struct {
	eps  []*Endpoint
	seq  []int32 // indexes into eps
	next atomic.Uint64
	ss   slowStart
}

func newSmoothRR(eps []*Endpoint, ss slowStart) *smoothRR {
	p := &smoothRR{eps: eps, seq: smoothSequence(eps), ss: ss}
	p.next.Store(rand.Uint64N(uint64(len(p.seq))))
	return p
}

// smoothSequence is one period of nginx's smooth weighted round robin: at
// each step every endpoint's current value grows by its weight, the
// largest (the first on a tie) is chosen and loses the total weight.
func smoothSequence(eps []*Endpoint) []int32 {
	w := make([]int64, len(eps))
	var g, total uint64
	for i, e := range eps {
		w[i] = int64(weight(e))
		g = gcd(g, uint64(w[i]))
		total += uint64(w[i])
	}
	if total/g == uint64(len(eps)) { // all equal: plain rotation
		seq := make([]int32, len(eps))
		for i := range seq {
			seq[i] = int32(i)
		}
		return seq
	}
	sum := total / g
	total = 0
	for i := range w {
		w[i] /= int64(g)
		if sum > maxSequence {
			w[i] = max(1, w[i]*maxSequence/int64(sum))
		}
		total += uint64(w[i])
	}
	cur := make([]int64, len(w))
	seq := make([]int32, total)
	for k := range seq {
		best := 0
		for i := range cur {
			cur[i] += w[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= int64(total)
		seq[k] = int32(best)
	}
	return seq
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Pick takes the next position of the sequence. A skipped endpoint's
// position is consumed too and the next one taken, so what the skipped
// endpoint would have had is shared out by the sequence rather than all
// going to its successor.
func (p *smoothRR) Pick(_ *http.Request, skip Skipper) (*Endpoint, error) {
	g := p.ss.gate(skip, zeroTime)
	n := uint64(len(p.seq))
	var i int32
	for range min(rrSteps, n) {
		i = p.seq[(p.next.Add(1)-1)%n]
		if e := p.eps[i]; g.ok(e) {
			return e, nil
		}
	}
	// Mostly skipped: scan the endpoints once, after the last one tried.
	for k := 1; k <= len(p.eps); k++ {
		if e := p.eps[(int(i)+k)%len(p.eps)]; g.ok(e) {
			return e, nil
		}
	}
	return g.result()
}
