package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one `wrk --latency` run printed.
type wrkResult struct {
	Requests int64         // "N requests in 5.00s"
	Elapsed  time.Duration // the "in 5.00s" part
	RPS      float64       // "Requests/sec:"
	P50, P99 time.Duration // from the latency distribution
	Errors   int64         // socket errors (all kinds) plus non-2xx/3xx answers
}

var (
	wrkRequestsRe = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b`)
	wrkRPSRe      = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkPctRe      = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$`)
	wrkSocketRe   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xxRe   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// wrkUnits are the time units wrk's format_time prints.
var wrkUnits = map[string]float64{
	"us": float64(time.Microsecond), "ms": float64(time.Millisecond),
	"s": float64(time.Second), "m": float64(time.Minute), "h": float64(time.Hour),
}

func wrkDuration(num, unit string) (time.Duration, error) {
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(f * wrkUnits[unit]), nil
}

// parseWrk reads the output of `wrk --latency`. The request count, the
// rate and both percentiles must be there; errors are optional lines.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRequestsRe.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output has no \"N requests in T\" line")
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	var err error
	if r.Elapsed, err = wrkDuration(m[2], m[3]); err != nil {
		return r, err
	}
	m = wrkRPSRe.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output has no Requests/sec line")
	}
	if r.RPS, err = strconv.ParseFloat(m[1], 64); err != nil {
		return r, err
	}
	for _, m := range wrkPctRe.FindAllStringSubmatch(out, -1) {
		d, err := wrkDuration(m[2], m[3])
		if err != nil {
			return r, err
		}
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if r.P50 == 0 || r.P99 == 0 {
		return r, fmt.Errorf("wrk output has no 50%%/99%% latency lines (run it with --latency)")
	}
	if m := wrkSocketRe.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += n
		}
	}
	if m := wrkNon2xxRe.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.Errors += n
	}
	return r, nil
}

// procStat is the part of /proc/<pid>/stat the benchmark needs.
type procStat struct {
	PPID  int
	Ticks uint64 // utime + stime of every thread, in clock ticks
}

// parseProcStat reads one /proc/<pid>/stat line. The command name (field 2)
// is in parentheses and may hold spaces or parentheses itself, so fields are
// counted from the last ')'.
func parseProcStat(line string) (procStat, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("no ')' in stat line")
	}
	f := strings.Fields(line[i+1:])
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat line has %d fields after the command, want at least 13", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("ppid: %w", err)
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stime: %w", err)
	}
	return procStat{PPID: ppid, Ticks: ut + st}, nil
}

// treeTicks is the CPU time, in clock ticks, of pid and all its live
// descendants (nginx's workers are children of its master). Threads are
// already summed in their process's utime and stime.
func treeTicks(pid int) (uint64, error) {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	stats := make(map[int]procStat, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process is gone
		}
		s, err := parseProcStat(string(b))
		if err != nil {
			continue
		}
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		stats[n] = s
	}
	if _, ok := stats[pid]; !ok {
		return 0, fmt.Errorf("process %d is not running", pid)
	}
	children := map[int][]int{}
	for p, s := range stats {
		children[s.PPID] = append(children[s.PPID], p)
	}
	var total uint64
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		total += stats[p].Ticks
		queue = append(queue, children[p]...)
	}
	return total, nil
}

// median of xs (the mean of the two middle values for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// sumSamples adds up the samples of the named metrics in Prometheus's
// text format, over all their labels.
func sumSamples(text string, names ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			name = line[:i]
			// Label values may hold spaces: the value follows the '}'.
			if j := strings.LastIndexByte(line, '}'); j > i {
				rest = strings.TrimSpace(line[j+1:])
			}
		}
		if !slices.Contains(names, name) {
			continue
		}
		value, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // a timestamp may follow
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			sum += v
		}
	}
	return sum
}
