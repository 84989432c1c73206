package main

import (
	"os"
	"testing"
	"time"
)

const wrkOK = `Running 5s test @ http://127.0.0.1:41234/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.16ms    1.37ms  28.21ms   71.92%
    Req/Sec    20.50k     1.52k   22.62k    80.00%
  Latency Distribution
     50%    2.91ms
     75%    3.54ms
     90%    4.93ms
     99%  812.00us
  102400 requests in 5.00s, 13.16MB read
Requests/sec:  20478.79
Transfer/sec:      2.63MB
`

const wrkErrors = `Running 5s test @ http://127.0.0.1:41234/
  1 threads and 64 connections
  Latency Distribution
     50%    1.50s
     75%    1.60s
     90%    1.70s
     99%    1.20m
  1234 requests in 1.00m, 1.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 10
Requests/sec:     20.56
Transfer/sec:      1.00KB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOK)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 102400, Elapsed: 5 * time.Second, RPS: 20478.79,
		P50: 2910 * time.Microsecond, P99: 812 * time.Microsecond}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}

	r, err = parseWrk(wrkErrors)
	if err != nil {
		t.Fatal(err)
	}
	want = wrkResult{Requests: 1234, Elapsed: time.Minute, RPS: 20.56,
		P50: 1500 * time.Millisecond, P99: 72 * time.Second, Errors: 20}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}

	for name, out := range map[string]string{
		"empty":      "",
		"no latency": "  10 requests in 1.00s, 1KB read\nRequests/sec: 10.00\n",
		"no rate":    "  10 requests in 1.00s, 1KB read\n     50%  1.00ms\n     99%  2.00ms\n",
	} {
		if _, err := parseWrk(out); err == nil {
			t.Errorf("%s: parseWrk accepted %q", name, out)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a ')' in it: fields count from the last ')'.
	line := "4242 (nginx: (worker) x) S 4241 4241 2796 0 -1 4194560 300 0 0 0 1234 567 0 0 20 0 1 0 576948 3133440 412 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	s, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if s.PPID != 4241 || s.Ticks != 1234+567 {
		t.Errorf("parseProcStat = %+v, want ppid 4241 ticks 1801", s)
	}
	for _, bad := range []string{"", "1 (x) S 0 1 2", "1 (x) S zz 1 2 3 4 5 6 7 8 9 10 11 12 13"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("parseProcStat accepted %q", bad)
		}
	}
	// The live file parses too, and this process is in its own tree.
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatalf("the benchmark reads CPU time from /proc, which this machine must have: %v", err)
	}
	if _, err := parseProcStat(string(b)); err != nil {
		t.Errorf("/proc/self/stat: %v", err)
	}
	if _, err := treeTicks(os.Getpid()); err != nil {
		t.Errorf("treeTicks(self): %v", err)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestSumSamples(t *testing.T) {
	text := `# HELP hopgate_requests_total Requests answered.
# TYPE hopgate_requests_total counter
hopgate_requests_total{code="2xx",method="GET",route="/"} 165461
hopgate_requests_total{code="4xx",method="GET",route="/ a}b"} 80
hopgate_requests_total_other 5
hopgate_upstream_attempts_total{instance="u1",outcome="ok"} 82725 1700000000000
hopgate_upstream_attempts_total 1e3
otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"} 8
`
	if got := sumSamples(text, "hopgate_requests_total", "hopgate_upstream_attempts_total"); got != 165461+80+82725+1000 {
		t.Errorf("sum = %v", got)
	}
	if got := sumSamples(text, "otelcol_receiver_accepted_spans_total"); got != 8 {
		t.Errorf("accepted = %v", got)
	}
	if got := sumSamples(text, "missing"); got != 0 {
		t.Errorf("missing = %v", got)
	}
}
