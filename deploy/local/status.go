package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// statusEvery is how often the live status line is refreshed.
const statusEvery = 2 * time.Second

// statusLogEvery is how often the status is printed as a full line when
// the output is not a terminal (it is also printed when it changes).
const statusLogEvery = 30 * time.Second

// liveStatus shows, until ctx ends, one line a person reads at a glance:
// instances passing, requests per second, p99, Consul state. On a terminal
// it is one line redrawn in place below the children's output; otherwise
// a full line now and then.
func (s *stack) liveStatus(ctx context.Context, terminal bool) {
	pr := newProbe(s.adminAddr())
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	var lastKey string
	var lastLog time.Time
	for {
		line, key := s.statusLine(ctx, pr)
		if ctx.Err() != nil {
			return
		}
		if terminal {
			s.out.setStatus(line)
		} else if key != lastKey || time.Since(lastLog) >= statusLogEvery {
			s.logf("%s", line)
			lastKey, lastLog = key, time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dashboardDoc is the part of the gateway's /api/dashboard the status
// line reads.
type dashboardDoc struct {
	Ready     bool `json:"ready"`
	Index     uint64
	Discovery *struct {
		Stale bool `json:"stale"`
	} `json:"discovery"`
	Routes []struct {
		Critical int `json:"critical"`
		Rate     struct {
			RPS   float64  `json:"rps"`
			P99Ms *float64 `json:"p99_ms"`
		} `json:"rate"`
		Instances []struct {
			Health  string `json:"health"`
			Ejected bool   `json:"ejected"`
		} `json:"instances"`
	} `json:"routes"`
}

// statusLine reads the gateway's dashboard document and returns the line,
// and a key that changes when what matters (instance counts, readiness,
// staleness) changes.
func (s *stack) statusLine(ctx context.Context, pr probe) (line, key string) {
	code, body, err := pr.get(ctx, "/api/dashboard")
	if err != nil || code != 200 {
		return "gateway admin API not answering", "down"
	}
	var doc dashboardDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return "gateway admin API: unexpected answer", "bad"
	}
	return formatStatus(doc, time.Now())
}

func formatStatus(doc dashboardDoc, now time.Time) (line, key string) {
	var passing, total, ejected int
	var rps, p99 float64
	for _, r := range doc.Routes {
		total += len(r.Instances) + r.Critical
		for _, in := range r.Instances {
			switch {
			case in.Ejected:
				ejected++
			case in.Health == "passing":
				passing++
			}
		}
		rps += r.Rate.RPS
		if r.Rate.P99Ms != nil {
			p99 = max(p99, *r.Rate.P99Ms)
		}
	}
	var b strings.Builder
	state := "up"
	switch {
	case !doc.Ready:
		state = "NOT READY"
	case doc.Discovery != nil && doc.Discovery.Stale:
		state = "STALE (Consul not answering)"
	}
	fmt.Fprintf(&b, "%s · %d/%d instances passing", state, passing, total)
	if ejected > 0 {
		fmt.Fprintf(&b, " (%d ejected)", ejected)
	}
	fmt.Fprintf(&b, " · %d route(s) · %.1f req/s", len(doc.Routes), rps)
	if p99 > 0 {
		fmt.Fprintf(&b, " · p99 %.1f ms", p99)
	}
	fmt.Fprintf(&b, " · %s", now.Format("15:04:05"))
	return b.String(), fmt.Sprint(state, passing, total, ejected, len(doc.Routes))
}

// isTerminal reports whether f is a terminal, where a line can be redrawn.
func isTerminal(f *os.File) bool {
	if os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// setStatus draws line as the status line, below everything written so
// far; "" removes it. Every later Write clears the line, writes, and draws
// it again, so the children's output scrolls above it.
func (s *syncWriter) setStatus(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.statusOff {
		return
	}
	if line == "" {
		if len(s.status) > 0 {
			_, _ = s.w.Write([]byte("\r\x1b[K"))
		}
		s.status = nil
		return
	}
	s.status = []byte("\r\x1b[K" + line)
	_, _ = s.w.Write(s.status)
}

// stopStatus removes the status line for good (on the way out).
func (s *syncWriter) stopStatus() {
	s.setStatus("")
	s.mu.Lock()
	s.statusOff = true
	s.mu.Unlock()
}
