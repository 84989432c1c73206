package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestFormatStatus(t *testing.T) {
	var doc dashboardDoc
	err := json.Unmarshal([]byte(`{"ready":true,"discovery":{"stale":false},"routes":[
		{"critical":1,"rate":{"rps":12.25,"p99_ms":3.4},"instances":[{"health":"passing"},{"health":"passing"},{"health":"passing","ejected":true}]},
		{"rate":{"rps":1},"instances":[{"health":"passing"}]}]}`), &doc)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	line, key := formatStatus(doc, now)
	want := "up · 3/5 instances passing (1 ejected) · 2 route(s) · 13.2 req/s · p99 3.4 ms · 15:04:05"
	if line != want {
		t.Errorf("line\n got %q\nwant %q", line, want)
	}
	doc.Discovery.Stale = true
	line2, key2 := formatStatus(doc, now)
	if !strings.HasPrefix(line2, "STALE") || key2 == key {
		t.Errorf("stale: %q (key %q, was %q)", line2, key2, key)
	}
}

func TestStatusLineStaysBelowOutput(t *testing.T) {
	var buf bytes.Buffer
	w := &syncWriter{w: &buf}
	_, _ = w.Write([]byte("before\n"))
	w.setStatus("status 1")
	_, _ = w.Write([]byte("gateway | a line\n"))
	w.setStatus("status 2")
	w.stopStatus()
	w.setStatus("status 3") // after stop: never drawn again
	_, _ = w.Write([]byte("after\n"))
	want := "before\n" +
		"\r\x1b[Kstatus 1" +
		"\r\x1b[Kgateway | a line\n\r\x1b[Kstatus 1" +
		"\r\x1b[Kstatus 2" +
		"\r\x1b[K" +
		"after\n"
	if got := buf.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
