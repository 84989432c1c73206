package main

import (
	"strings"
	"testing"
	"time"
)

// TestPrintTableCompare: with compare rows, the table ends with the two
// builds' ratios, untraced and traced, the one over the upstreams' CPU
// among them, taken round by round: a round where the machine ran slow for
// everyone moves both proxies' CPU and the upstreams' alike.
func TestPrintTableCompare(t *testing.T) {
	rounds := func(cpu, up []float64) []round {
		var rs []round
		for i := range cpu {
			rs = append(rs, round{wrk: wrkResult{RPS: 1000 / cpu[i], P50: time.Millisecond, P99: 2 * time.Millisecond},
				cpuUS: cpu[i], upUS: up[i]})
		}
		return rs
	}
	targets := []*target{
		{name: "haproxy", rounds: rounds([]float64{20, 20, 30}, []float64{20, 20, 30})},
		// Round 3 ran half as fast for everyone.
		{name: "hopgate rr", rounds: rounds([]float64{36, 36, 72}, []float64{30, 30, 60})},
		{name: "compare rr", rounds: rounds([]float64{40, 40, 80}, []float64{32, 32, 64})},
		{name: "hopgate rr+trace", rounds: rounds([]float64{60, 60, 120}, []float64{30, 30, 60})},
		{name: "compare rr+trace", rounds: rounds([]float64{75, 75, 150}, []float64{30, 30, 60})},
	}
	var out strings.Builder
	printTable(&out, targets, false)
	for _, want := range []string{
		"hopgate rr vs compare rr: 1.11× req/s, 0.90× CPU/req, 0.960× CPU/req over the upstreams' (1.200 vs 1.250)\n",
		"hopgate rr+trace vs compare rr+trace: 1.25× req/s, 0.80× CPU/req, 0.800× CPU/req over the upstreams' (2.000 vs 2.500)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table:\n%s\nwant a line %q", out.String(), want)
		}
	}
	out.Reset()
	printTable(&out, targets[:2], false)
	if strings.Contains(out.String(), "vs compare") {
		t.Errorf("a compare line without a compare row:\n%s", out.String())
	}
}
