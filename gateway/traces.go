package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The dashboard's traces come from Jaeger's query API (/api/traces), the
// part of Jaeger every build serves, read by the admin server so the
// browser needs no CORS and no access to Jaeger's port. Each trace becomes a
// waterfall: one row ("hop") per span, in tree order, positioned in time
// relative to the trace's start.

// TracesDoc is the JSON document served at /api/traces.
type TracesDoc struct {
	// JaegerUI is where "open in Jaeger" links point: JaegerUI + "/trace/" + id.
	JaegerUI string     `json:"jaeger_ui"`
	Traces   []TraceDoc `json:"traces"`
	Error    string     `json:"error,omitempty"`
}

// TraceDoc is one trace, drawn as a waterfall.
type TraceDoc struct {
	TraceID    string    `json:"trace_id"`
	Start      time.Time `json:"start"`
	DurationMs float64   `json:"duration_ms"`
	// Operation and Service are the root span's.
	Operation string   `json:"operation"`
	Service   string   `json:"service"`
	Status    int      `json:"status,omitempty"`
	Error     bool     `json:"error"`
	URL       string   `json:"url"`
	Hops      []HopDoc `json:"hops"`
}

// HopDoc is one span of a trace.
type HopDoc struct {
	SpanID     string  `json:"span_id"`
	ParentID   string  `json:"parent_id,omitempty"`
	Service    string  `json:"service"`
	Operation  string  `json:"operation"`
	Kind       string  `json:"kind,omitempty"` // server, client, internal...
	Depth      int     `json:"depth"`
	OffsetMs   float64 `json:"offset_ms"`
	DurationMs float64 `json:"duration_ms"`
	Status     int     `json:"status,omitempty"`
	Error      bool    `json:"error"`
	Instance   string  `json:"instance,omitempty"` // the instance an attempt went to
	Node       string  `json:"node,omitempty"`
	Attempt    int     `json:"attempt,omitempty"`
	Retry      string  `json:"retry_reason,omitempty"`
	Peer       string  `json:"peer,omitempty"` // server.address:port of an attempt
}

// jaegerTraces is the answer of Jaeger's /api/traces (its UI's JSON model).
type jaegerTraces struct {
	Data   []jaegerTrace `json:"data"`
	Errors []struct {
		Msg string `json:"msg"`
	} `json:"errors"`
}

type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerProcess struct {
	ServiceName string `json:"serviceName"`
}

type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64       `json:"startTime"` // microseconds since the epoch
	Duration  int64       `json:"duration"`  // microseconds
	Tags      []jaegerTag `json:"tags"`
	ProcessID string      `json:"processID"`
}

type jaegerTag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

func (s *jaegerSpan) tag(key string) (any, bool) {
	for _, t := range s.Tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return nil, false
}

func (s *jaegerSpan) str(key string) string {
	v, ok := s.tag(key)
	if !ok {
		return ""
	}
	if str, ok := v.(string); ok {
		return str
	}
	return fmt.Sprint(v)
}

func (s *jaegerSpan) num(keys ...string) int {
	for _, k := range keys {
		v, ok := s.tag(k)
		if !ok {
			continue
		}
		switch n := v.(type) {
		case float64:
			return int(n)
		case string:
			if i, err := strconv.Atoi(n); err == nil {
				return i
			}
		}
	}
	return 0
}

func (s *jaegerSpan) failed() bool {
	if v, ok := s.tag("error"); ok && (v == true || v == "true") {
		return true
	}
	return strings.EqualFold(s.str("otel.status_code"), "ERROR")
}

func (s *jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" && (r.TraceID == "" || r.TraceID == s.TraceID) {
			return r.SpanID
		}
	}
	return ""
}

// waterfall turns one Jaeger trace into its waterfall: spans in tree order
// (each after its parent, siblings by start time), offsets from the
// earliest span's start. Spans whose parent is not in the trace are roots.
func waterfall(jt jaegerTrace, uiBase string) TraceDoc {
	doc := TraceDoc{TraceID: jt.TraceID, Hops: []HopDoc{}}
	if uiBase != "" {
		doc.URL = strings.TrimSuffix(uiBase, "/") + "/trace/" + jt.TraceID
	}
	if len(jt.Spans) == 0 {
		return doc
	}
	byID := make(map[string]*jaegerSpan, len(jt.Spans))
	start, end := jt.Spans[0].StartTime, int64(0)
	for i := range jt.Spans {
		sp := &jt.Spans[i]
		byID[sp.SpanID] = sp
		start = min(start, sp.StartTime)
		end = max(end, sp.StartTime+sp.Duration)
	}
	children := map[string][]*jaegerSpan{}
	var roots []*jaegerSpan
	for i := range jt.Spans {
		sp := &jt.Spans[i]
		if p := sp.parent(); p != "" && byID[p] != nil && p != sp.SpanID {
			children[p] = append(children[p], sp)
		} else {
			roots = append(roots, sp)
		}
	}
	byStart := func(a, b *jaegerSpan) int {
		return cmp.Or(cmp.Compare(a.StartTime, b.StartTime), cmp.Compare(a.SpanID, b.SpanID))
	}
	slices.SortFunc(roots, byStart)
	seen := map[string]bool{}
	var walk func(sp *jaegerSpan, depth int)
	walk = func(sp *jaegerSpan, depth int) {
		if seen[sp.SpanID] { // a cycle in bad data: draw each span once
			return
		}
		seen[sp.SpanID] = true
		hop := HopDoc{
			SpanID:     sp.SpanID,
			ParentID:   sp.parent(),
			Service:    jt.Processes[sp.ProcessID].ServiceName,
			Operation:  sp.OperationName,
			Kind:       sp.str("span.kind"),
			Depth:      depth,
			OffsetMs:   float64(sp.StartTime-start) / 1000,
			DurationMs: float64(sp.Duration) / 1000,
			Status:     sp.num("http.response.status_code", "http.status_code"),
			Error:      sp.failed(),
			Instance:   sp.str("hopgate.instance.id"),
			Node:       sp.str("hopgate.instance.node"),
			Attempt:    sp.num("hopgate.attempt"),
			Retry:      sp.str("hopgate.retry.reason"),
		}
		if addr := sp.str("server.address"); addr != "" && hop.Kind == "client" {
			hop.Peer = addr
			if port := sp.num("server.port"); port != 0 {
				hop.Peer += ":" + strconv.Itoa(port)
			}
		}
		doc.Hops = append(doc.Hops, hop)
		kids := children[sp.SpanID]
		slices.SortFunc(kids, byStart)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	root := roots[0]
	doc.Start = time.UnixMicro(start).UTC()
	doc.DurationMs = float64(end-start) / 1000
	doc.Operation = root.OperationName
	doc.Service = jt.Processes[root.ProcessID].ServiceName
	doc.Status = root.num("http.response.status_code", "http.status_code")
	for _, h := range doc.Hops {
		doc.Error = doc.Error || h.Error && h.Depth == 0
	}
	return doc
}

// jaegerClient reads traces from Jaeger's query API.
type jaegerClient struct {
	base    string // e.g. http://127.0.0.1:16686
	service string
	client  *http.Client
}

// maxTraces caps how many traces one dashboard request reads.
const maxTraces = 20

// traces returns the most recent traces of route (all of the service's
// when route is empty), newest first.
func (j *jaegerClient) traces(ctx context.Context, route string, limit int, uiBase string) ([]TraceDoc, error) {
	q := url.Values{}
	q.Set("service", j.service)
	q.Set("limit", strconv.Itoa(limit))
	q.Set("lookback", "1h")
	if route != "" {
		tags, _ := json.Marshal(map[string]string{"hopgate.route": route})
		q.Set("tags", string(tags))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.base+"/api/traces?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jaeger query API: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("jaeger query API: %w", err)
	}
	var jr jaegerTraces
	if err := json.Unmarshal(body, &jr); err != nil {
		return nil, fmt.Errorf("jaeger query API answered %s, not traces: %.200s", resp.Status, body)
	}
	if resp.StatusCode != http.StatusOK {
		msg := resp.Status
		if len(jr.Errors) > 0 {
			msg += ": " + jr.Errors[0].Msg
		}
		// An unknown service is no traces yet, not an error.
		if resp.StatusCode == http.StatusNotFound || strings.Contains(msg, "not found") {
			return []TraceDoc{}, nil
		}
		return nil, fmt.Errorf("jaeger query API answered %s", msg)
	}
	return convertTraces(jr, uiBase, limit), nil
}

// convertTraces turns Jaeger's answer into waterfalls, newest first.
func convertTraces(jr jaegerTraces, uiBase string, limit int) []TraceDoc {
	out := make([]TraceDoc, 0, len(jr.Data))
	for _, jt := range jr.Data {
		out = append(out, waterfall(jt, uiBase))
	}
	slices.SortFunc(out, func(a, b TraceDoc) int { return b.Start.Compare(a.Start) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}
