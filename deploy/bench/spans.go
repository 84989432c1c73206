package main

import (
	"context"
	"fmt"
	"time"
)

// countSpans checks that the traced rows lost no spans on the way to the
// collector: what each traced hopgate made by its own metrics (a server
// span per request, a client span per attempt) against what the
// collector accepted, once every traced hopgate has stopped and so sent
// what it held. A tracer that drops spans under load would otherwise
// look cheaper than one that keeps them all.
func countSpans(ctx context.Context, targets []*target, c *collector) error {
	var made float64
	for _, t := range targets {
		if t.collector != c {
			continue
		}
		body, err := fetch(ctx, "http://"+t.admin+"/metrics")
		if err != nil {
			return fmt.Errorf("%s's metrics: %w", t.name, err)
		}
		made += sumSamples(body, "hopgate_requests_total", "hopgate_upstream_attempts_total")
		if !t.cpu.stop(15 * time.Second) {
			return fmt.Errorf("%s did not stop within 15s:\n%s", t.name, t.cpu.tail())
		}
	}
	body, err := fetch(ctx, c.metrics)
	if err != nil {
		return fmt.Errorf("the collector's metrics: %w", err)
	}
	accepted := sumSamples(body, "otelcol_receiver_accepted_spans_total")
	if made == 0 {
		return fmt.Errorf("the traced rows made no spans")
	}
	fmt.Printf("spans: the collector accepted %.0f of the %.0f the traced rows made (%.2f%%)\n",
		accepted, made, 100*accepted/made)
	return nil
}
