// Command bench runs hopgate side by side with haproxy and nginx on this
// machine and prints one table: requests/s, latency and the proxy's CPU time
// per request, each against haproxy's (`make bench`).
//
// Every proxy balances round robin over the same two upstreams (this
// program's own `upstream` mode: a minimal net/http server answering "Hello
// from <name>"), with keep-alive on both sides. A "direct" row sends the
// load straight at one upstream. wrk drives each target in interleaved
// rounds (haproxy, nginx, hopgate..., direct, haproxy, ...) so a noisy
// neighbour hits all of them alike; the table shows the median of the rounds.
// The proxy's CPU is read from /proc/<pid>/stat (utime+stime, summed over
// its process tree) before and after each measured run.
//
// Those rounds run every proxy flat out, so each one's latency is that of
// its own throughput. A second pass then offers every target the same load
// (-same-load, by default half what the slowest untraced proxy served): each
// wrk connection waits a fixed delay between requests, and latency is
// compared at equal work.
//
// A "fasthttp" row, when bin/fasthttp-proxy is built (deploy/bench/
// fasthttp-proxy, its own module), is the floor for a Go proxy built as
// hopgate is, a goroutine per connection: a bare round robin on fasthttp,
// which parses into reused buffers and allocates next to nothing, on the
// same runtime and kernel as hopgate. The distance from hopgate to it is
// hopgate's own code. A "gnet" row, when bin/gnet-proxy is built (deploy/
// bench/gnet-proxy), is the floor for a Go proxy built as haproxy is: a
// bare round robin on epoll event loops, one per CPU. The distance from
// fasthttp to it is what goroutine-per-connection networking costs.
// hopgate's rows run it as it runs by default, on event loops too; the
// "goroutines rr" row runs it with -event-loops=false, a goroutine per
// connection.
//
// It is a benchmark, not a test: nothing in `make test` runs it. It needs
// nginx, haproxy and wrk (installed from Debian packages with -install when
// missing), bin/hopgate and a consul binary; with a jaeger binary it adds a
// hopgate row with every request traced.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

type options struct {
	bin, hopgate, consul, jaeger    string
	fasthttp, gnet, compare         string
	jaegerConfig, perf, perfRow     string
	rounds, connections, threads    int
	duration, warmup, timeout       time.Duration
	workers                         int
	install, tracing, defaultPolicy bool
	sameLoad                        float64
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "upstream" {
		os.Exit(upstreamMain(os.Args[2:]))
	}
	var o options
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.StringVar(&o.bin, "bin", "bin", "`directory` holding hopgate (and consul, jaeger unless named)")
	fs.StringVar(&o.hopgate, "hopgate", "", "hopgate `binary` (default: <bin>/hopgate)")
	fs.StringVar(&o.compare, "compare", "", "another hopgate `binary` (an earlier build, say) for a \"compare rr\" row beside \"hopgate rr\" (and a \"compare rr+trace\" one with tracing), to measure a change in one run")
	fs.StringVar(&o.perf, "perf", "", "after the rounds, one more unmeasured run of the -perf-row under `perf record -g`, written to this `file` (use unstripped binaries)")
	fs.StringVar(&o.perfRow, "perf-row", "hopgate rr", "the `row` that -perf profiles, e.g. fasthttp to compare with hopgate's profile")
	fs.StringVar(&o.consul, "consul", "", "consul `binary` (default: <bin>/consul, then PATH)")
	fs.StringVar(&o.jaeger, "jaeger", "", "jaeger `binary` for the traced row (default: <bin>/jaeger, then PATH; none: no traced row)")
	fs.StringVar(&o.fasthttp, "fasthttp", "", "fasthttp-proxy `binary` for the Go floor row (default: <bin>/fasthttp-proxy; none: no such row)")
	fs.StringVar(&o.gnet, "gnet", "", "gnet-proxy `binary` for the event-loop floor row (default: <bin>/gnet-proxy; none: no such row)")
	fs.StringVar(&o.jaegerConfig, "jaeger-config", "deploy/local/jaeger.yaml", "Jaeger config `file`")
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved rounds over every target")
	fs.DurationVar(&o.duration, "d", 5*time.Second, "wrk duration of each measured run")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "wrk warm-up before each measured run (not measured)")
	fs.IntVar(&o.connections, "c", 64, "wrk connections")
	fs.IntVar(&o.threads, "t", 1, "wrk threads")
	fs.IntVar(&o.workers, "workers", 0, "proxy parallelism, the same for all: nginx worker_processes, haproxy nbthread, hopgate GOMAXPROCS (0: each one's default, all CPUs)")
	fs.BoolVar(&o.install, "install", true, "apt-get install nginx-light (or nginx), haproxy and wrk when missing")
	fs.BoolVar(&o.tracing, "tracing", true, "add a hopgate row with tracing on (every request sampled, exported to a local Jaeger) when a jaeger binary is found")
	fs.BoolVar(&o.defaultPolicy, "default-policy", true, "add a hopgate row with the default balancing policy besides round_robin")
	fs.DurationVar(&o.timeout, "timeout", 12*time.Minute, "give up after this long, whatever is left")
	fs.Float64Var(&o.sameLoad, "same-load", -1, "after the flat-out rounds, offer every target this many `req/s` and compare latency (-1: half what the slowest untraced proxy served; 0: skip)")
	_ = fs.Parse(os.Args[1:])
	if o.rounds < 1 || o.duration <= 0 || o.connections < 1 || o.threads < 1 || o.workers < 0 {
		fmt.Fprintln(os.Stderr, "bench: -rounds, -d, -c and -t must be positive, -workers not negative")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// target is one row of the table: where wrk sends load and whose CPU counts.
type target struct {
	name   string
	url    string
	cpu    *proc   // the process whose tree's CPU is measured
	rounds []round // flat out
	paced  []round // at the same offered load
	// For a traced hopgate: the collector its spans go to, whose CPU is
	// measured beside it, and its admin address, for the spans it made.
	collector *collector
	admin     string
}

// collector is the Jaeger the traced rows export to.
type collector struct {
	*proc
	metrics string // its own metrics' URL: the spans it accepted
}

type round struct {
	wrk    wrkResult
	cpuUS  float64 // proxy CPU µs per request
	upUS   float64 // both upstreams' CPU µs per request
	collUS float64 // the collector's CPU µs per request, for a traced row
	failed error
}

func run(ctx context.Context, o options) error {
	if err := ensurePackages(ctx, o.install); err != nil {
		return err
	}
	hopgate := o.hopgate
	if hopgate == "" {
		hopgate = filepath.Join(o.bin, "hopgate")
	}
	if _, err := os.Stat(hopgate); err != nil {
		return fmt.Errorf("%s missing: run make build", hopgate)
	}
	consul := findBin(o.consul, o.bin, "consul")
	if consul == "" {
		return fmt.Errorf("no consul binary: run make tools or pass -consul")
	}
	jaeger := ""
	if o.tracing {
		jaeger = findBin(o.jaeger, o.bin, "jaeger")
		if jaeger == "" {
			fmt.Println("no jaeger binary: skipping the traced hopgate row")
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "hopgate-bench-")
	if err != nil {
		return err
	}
	ps := &procs{dir: dir}
	defer func() {
		ps.stopAll(5 * time.Second)
		os.RemoveAll(dir)
	}()
	fmt.Printf("work dir %s; %d CPUs; %s\n", dir, runtime.NumCPU(), cpuModel())

	// Upstreams: the same two processes behind every proxy.
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	var ups []*proc
	for i, port := range ports {
		name := fmt.Sprintf("upstream-%d", i+1)
		p, err := ps.start(name, cleanEnv(), self, "upstream", "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-name", name)
		if err != nil {
			return err
		}
		if err := waitFor(ctx, p, fmt.Sprintf("http://127.0.0.1:%d/", port), 10*time.Second,
			func(b string) bool { return strings.HasPrefix(b, "Hello from ") }); err != nil {
			return err
		}
		ups = append(ups, p)
	}

	// Consul, with the upstreams registered under the route tag.
	consulAddr, err := startConsul(ctx, ps, consul)
	if err != nil {
		return err
	}
	for i, port := range ports {
		if err := register(ctx, consulAddr, fmt.Sprintf("bench-upstream-%d", i+1), port); err != nil {
			return err
		}
	}

	var targets []*target
	add := func(name, url string, p *proc) { targets = append(targets, &target{name: name, url: url, cpu: p}) }

	// haproxy and nginx.
	p, url, err := startHAProxy(ctx, ps, dir, ports, o.workers)
	if err != nil {
		return err
	}
	add("haproxy", url, p)
	p, url, err = startNginx(ctx, ps, dir, ports, o.workers)
	if err != nil {
		return err
	}
	add("nginx", url, p)
	for _, floor := range []struct{ row, flag, bin, what string }{
		{"fasthttp", o.fasthttp, "fasthttp-proxy", "the Go floor"},
		{"gnet", o.gnet, "gnet-proxy", "the event-loop floor"},
	} {
		bin := findBin(floor.flag, o.bin, floor.bin)
		if floor.flag == "none" || bin == "" {
			fmt.Printf("no %s binary: skipping %s row\n", floor.bin, floor.what)
			continue
		}
		p, url, err := startFloor(ctx, ps, floor.row, bin, ports)
		if err != nil {
			return err
		}
		add(floor.row, url, p)
	}

	// hopgate, one process per configuration.
	gomaxprocs := []string{}
	if o.workers > 0 {
		gomaxprocs = append(gomaxprocs, "GOMAXPROCS="+strconv.Itoa(o.workers))
	}
	hopWith := func(bin, name string, lb string, env ...string) error {
		var flags []string
		if strings.HasPrefix(name, "goroutines ") {
			flags = []string{"-event-loops=false"}
		}
		p, url, admin, err := startHopgate(ctx, ps, bin, name, consulAddr, lb, flags, append(gomaxprocs, env...))
		if err != nil {
			return err
		}
		add(name, url, p)
		targets[len(targets)-1].admin = admin
		return nil
	}
	hop := func(name string, lb string, env ...string) error { return hopWith(hopgate, name, lb, env...) }
	if err := hop("hopgate rr", "round_robin"); err != nil {
		return err
	}
	if err := hop("goroutines rr", "round_robin"); err != nil {
		return err
	}
	if o.compare != "" {
		if err := hopWith(o.compare, "compare rr", "round_robin"); err != nil {
			return err
		}
	}
	if o.defaultPolicy {
		if err := hop("hopgate default", ""); err != nil {
			return err
		}
	}
	var coll *collector
	if jaeger != "" {
		var otlp string
		coll, otlp, err = startJaeger(ctx, ps, jaeger, o.jaegerConfig)
		if err != nil {
			return err
		}
		traced := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + otlp,
			"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
			"OTEL_TRACES_SAMPLER=always_on"}
		if err := hop("hopgate rr+trace", "round_robin", traced...); err != nil {
			return err
		}
		targets[len(targets)-1].collector = coll
		if o.compare != "" {
			if err := hopWith(o.compare, "compare rr+trace", "round_robin", traced...); err != nil {
				return err
			}
			targets[len(targets)-1].collector = coll
		}
	}
	add("direct", fmt.Sprintf("http://127.0.0.1:%d/", ports[0]), ups[0])

	total := time.Duration(o.rounds*len(targets)) * (o.duration + o.warmup)
	fmt.Printf("wrk -t%d -c%d -d%v --latency, %v warm-up each, %d interleaved rounds over %d targets (~%v)\n",
		o.threads, o.connections, o.duration, o.warmup, o.rounds, len(targets), total.Round(time.Second))
	tck := clockTicks()
	if err := runRounds(ctx, o, targets, ups, tck, ""); err != nil {
		return err
	}
	if o.sameLoad != 0 {
		if err := sameLoad(ctx, o, targets, ups, tck, dir); err != nil {
			return err
		}
	}
	if o.perf != "" {
		if err := profile(ctx, o, targets); err != nil {
			return err
		}
	}
	if coll != nil {
		if err := countSpans(ctx, targets, coll); err != nil {
			return err
		}
	}
	for _, p := range ups {
		if !p.alive() {
			return fmt.Errorf("%s died during the run:\n%s", p.name, p.tail())
		}
	}
	return nil
}

// sameLoad offers every target the same request rate, in interleaved
// rounds, and prints their latencies side by side.
func sameLoad(ctx context.Context, o options, targets []*target, ups []*proc, tck float64, dir string) error {
	rate := o.sameLoad
	if rate < 0 {
		for _, t := range targets {
			if t.name == "direct" || strings.Contains(t.name, "trace") {
				continue
			}
			var rps []float64
			for _, rd := range t.rounds {
				if rd.failed == nil {
					rps = append(rps, rd.wrk.RPS)
				}
			}
			if m := median(rps); m > 0 && (rate < 0 || m/2 < rate) {
				rate = m / 2
			}
		}
		if rate <= 0 {
			return fmt.Errorf("same load: no proxy served anything to take half of")
		}
	}
	// wrk paces a connection by a delay before each request, in whole
	// milliseconds: the offered rate is the connections over that delay
	// (a little less, as each request also takes its latency).
	delayMS := max(1, int(float64(o.connections)*1000/rate+0.5))
	script := filepath.Join(dir, "paced.lua")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("function delay() return %d end\n", delayMS)), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nthe same load for all: each of %d connections sends a request every %d ms (~%.0f req/s offered), %d interleaved rounds\n",
		o.connections, delayMS, float64(o.connections)*1000/float64(delayMS), o.rounds)
	return runRounds(ctx, o, targets, ups, tck, script)
}

// runRounds measures every target o.rounds times, interleaved, then prints
// the table of medians. With a wrk script (the pacing of the same-load
// pass) the rounds are the targets' paced ones.
func runRounds(ctx context.Context, o options, targets []*target, ups []*proc, tck float64, script string) error {
	paced := script != ""
	for r := 1; r <= o.rounds; r++ {
		for _, t := range targets {
			rd := measure(ctx, o, t, ups, tck, script)
			if ctx.Err() != nil {
				return fmt.Errorf("stopped: %w", context.Cause(ctx))
			}
			if paced {
				t.paced = append(t.paced, rd)
			} else {
				t.rounds = append(t.rounds, rd)
			}
			if rd.failed != nil {
				fmt.Printf("  round %d %-17s FAILED: %v\n", r, t.name, rd.failed)
				continue
			}
			coll := ""
			if t.collector != nil {
				coll = fmt.Sprintf("  collector %5.1f µs/req", rd.collUS)
			}
			fmt.Printf("  round %d %-17s %8.0f req/s  p50 %-9v p99 %-9v cpu %6.1f µs/req  upstreams %5.1f µs/req  errors %d%s\n",
				r, t.name, rd.wrk.RPS, rd.wrk.P50.Round(time.Microsecond), rd.wrk.P99.Round(time.Microsecond), rd.cpuUS, rd.upUS, rd.wrk.Errors, coll)
		}
	}
	fmt.Println()
	printTable(os.Stdout, targets, paced)
	return nil
}

// measure runs a warm-up then one measured wrk against t; script, when
// set, is a wrk Lua script (the pacing of the same-load pass).
func measure(ctx context.Context, o options, t *target, ups []*proc, tck float64, script string) round {
	if o.warmup > 0 {
		if _, err := runWrk(ctx, o, t.url, o.warmup, script); err != nil {
			return round{failed: fmt.Errorf("warm-up: %w", err)}
		}
	}
	cpu0, err0 := treeTicks(t.pid())
	up0, coll0 := upTicks(ups), collectorTicks(t)
	out, err := runWrk(ctx, o, t.url, o.duration, script)
	cpu1, err1 := treeTicks(t.pid())
	up1, coll1 := upTicks(ups), collectorTicks(t)
	if err != nil {
		return round{failed: err}
	}
	if err := errors.Join(err0, err1); err != nil {
		return round{failed: fmt.Errorf("%s: %w\n%s", t.cpu.name, err, t.cpu.tail())}
	}
	w, err := parseWrk(out)
	if err == nil && w.Requests == 0 {
		err = errors.New("no answers")
	}
	if err != nil {
		// Say what became of the proxy while its log still exists: the
		// work directory goes at exit.
		return round{failed: fmt.Errorf("%w:\n%s\n%s alive: %v; its last log lines:\n%s",
			err, out, t.cpu.name, t.cpu.alive(), t.cpu.tail())}
	}
	rd := round{wrk: w}
	if w.Requests > 0 {
		rd.cpuUS = float64(cpu1-cpu0) / tck * 1e6 / float64(w.Requests)
		rd.upUS = float64(up1-up0) / tck * 1e6 / float64(w.Requests)
		rd.collUS = float64(coll1-coll0) / tck * 1e6 / float64(w.Requests)
	}
	return rd
}

// collectorTicks is the CPU time of t's collector so far, if it has one.
func collectorTicks(t *target) uint64 {
	if t.collector == nil {
		return 0
	}
	n, _ := treeTicks(t.collector.pid())
	return n
}

// profile runs wrk once more at the -perf-row with perf recording it.
func profile(ctx context.Context, o options, targets []*target) error {
	for _, t := range targets {
		if t.name != o.perfRow {
			continue
		}
		secs := strconv.Itoa(max(1, int(o.duration/time.Second)))
		perf := exec.CommandContext(ctx, "perf", "record", "-g", "-F", "999", "-o", o.perf,
			"-p", strconv.Itoa(t.pid()), "--", "sleep", secs)
		if err := perf.Start(); err != nil {
			return fmt.Errorf("perf: %w", err)
		}
		out, err := runWrk(ctx, o, t.url, o.duration, "")
		if perr := perf.Wait(); perr != nil {
			return fmt.Errorf("perf record: %w", perr)
		}
		if err != nil {
			return err
		}
		w, _ := parseWrk(out)
		fmt.Printf("profiled %s at %.0f req/s into %s (perf report -i %s --no-children)\n", t.name, w.RPS, o.perf, o.perf)
		return nil
	}
	return fmt.Errorf("-perf-row %q: no such row", o.perfRow)
}

func (t *target) pid() int { return t.cpu.pid() }

func upTicks(ups []*proc) uint64 {
	var n uint64
	for _, p := range ups {
		v, _ := treeTicks(p.pid())
		n += v
	}
	return n
}

func runWrk(ctx context.Context, o options, url string, d time.Duration, script string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d+15*time.Second)
	defer cancel()
	secs := max(1, int(d.Round(time.Second)/time.Second))
	args := []string{"-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.connections),
		"-d", fmt.Sprintf("%ds", secs), "--timeout", "5s", "--latency"}
	if script != "" {
		args = append(args, "-s", script)
	}
	cmd := exec.CommandContext(ctx, "wrk", append(args, url)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("wrk: %w: %s", err, firstLine(string(out)))
	}
	return string(out), nil
}

// printTable prints the medians of the flat-out rounds, or with paced
// those of the same-load pass.
func printTable(w io.Writer, targets []*target, paced bool) {
	type row struct {
		rps, p50, p99, cpu, up float64
		perUp                  float64 // CPU per request over the upstreams'
		coll                   float64 // the collector's CPU per request
		errors                 int64
		n                      int
	}
	rows := map[string]row{}
	for _, t := range targets {
		var rps, p50, p99, cpu, up, perUp, coll []float64
		var r row
		rounds := t.rounds
		if paced {
			rounds = t.paced
		}
		for _, rd := range rounds {
			if rd.failed != nil {
				continue
			}
			rps = append(rps, rd.wrk.RPS)
			p50 = append(p50, float64(rd.wrk.P50))
			p99 = append(p99, float64(rd.wrk.P99))
			cpu = append(cpu, rd.cpuUS)
			up = append(up, rd.upUS)
			coll = append(coll, rd.collUS)
			if rd.upUS > 0 {
				perUp = append(perUp, rd.cpuUS/rd.upUS)
			}
			r.errors += rd.wrk.Errors
			r.n++
		}
		r.rps, r.p50, r.p99, r.cpu, r.up, r.perUp, r.coll = median(rps), median(p50), median(p99), median(cpu), median(up), median(perUp), median(coll)
		rows[t.name] = r
	}
	base := rows["haproxy"]
	ratio := func(x, b float64) string {
		if b == 0 || x == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", x/b)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "proxy\treq/s\tp50\tp99\tCPU µs/req\treq/s vs haproxy\tCPU/req vs haproxy\tp99 vs haproxy\tupstreams µs/req\terrors\trounds\t")
	for _, t := range targets {
		r := rows[t.name]
		cpu, cpuRatio := fmt.Sprintf("%.1f", r.cpu), ratio(r.cpu, base.cpu)
		if t.name == "direct" { // the upstream's own CPU: there is no proxy
			cpu, cpuRatio = fmt.Sprintf("(%.1f)", r.cpu), "-"
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%v\t%s\t%s\t%s\t%s\t%.1f\t%d\t%d\t\n", t.name, r.rps,
			time.Duration(r.p50).Round(time.Microsecond), time.Duration(r.p99).Round(time.Microsecond),
			cpu, ratio(r.rps, base.rps), cpuRatio, ratio(r.p99, base.p99), r.up, r.errors, r.n)
	}
	tw.Flush()
	fmt.Fprintln(w, "medians of the rounds. CPU: utime+stime of the proxy's process tree per request (direct: the upstream's own).")
	fmt.Fprintln(w, "upstreams: both upstreams' CPU per request, the same servers behind every row.")
	if !paced {
		if off, on := rows["hopgate rr"], rows["hopgate rr+trace"]; on.n > 0 && off.rps > 0 {
			fmt.Fprintf(w, "tracing on (every request sampled) vs off, hopgate rr: %.2f× req/s, %.2f× CPU/req (target ≥0.75× req/s)\n",
				on.rps/off.rps, on.cpu/off.cpu)
			// The collector runs on the same CPUs as everything else:
			// what it spends per request, the proxies cannot.
			fmt.Fprintf(w, "the collector (Jaeger), taking hopgate rr+trace's spans: %.1f µs/req of CPU, %s of haproxy's whole CPU per request\n",
				on.coll, ratio(on.coll, base.cpu))
		}
	}
	// A busy neighbour slows every process alike, so a proxy's CPU over
	// the upstreams' (their work per request is the same behind any build)
	// moves far less from round to round than either.
	for _, suffix := range []string{"rr", "rr+trace"} {
		now, was := rows["hopgate "+suffix], rows["compare "+suffix]
		if now.n > 0 && was.n > 0 && was.cpu > 0 && was.perUp > 0 {
			fmt.Fprintf(w, "hopgate %s vs compare %[1]s: %.2f× req/s, %.2f× CPU/req, %.3f× CPU/req over the upstreams' (%.3f vs %.3f)\n",
				suffix, now.rps/was.rps, now.cpu/was.cpu, now.perUp/was.perUp, now.perUp, was.perUp)
		}
	}
}

// ensurePackages installs nginx, haproxy and wrk from Debian packages when
// any is missing (and install is allowed).
func ensurePackages(ctx context.Context, install bool) error {
	var missing []string
	for _, b := range []string{"nginx", "haproxy", "wrk"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !install {
		return fmt.Errorf("missing %s (run with -install, or apt-get install nginx-light haproxy wrk)", strings.Join(missing, ", "))
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("missing %s and no apt-get to install them", strings.Join(missing, ", "))
	}
	fmt.Printf("installing %s with apt-get\n", strings.Join(missing, ", "))
	sh := func(args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if out, err := sh("apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("apt-get update: %w\n%s", err, out)
	}
	// nginx-light is enough (the upstream and proxy modules) where it exists.
	nginx := "nginx"
	if out, err := sh("apt-cache", "policy", "nginx-light"); err == nil && strings.Contains(string(out), "Candidate:") &&
		!strings.Contains(string(out), "Candidate: (none)") {
		nginx = "nginx-light"
	}
	pkgs := []string{"install", "-y", "-qq", "--no-install-recommends"}
	for _, m := range missing {
		if m == "nginx" {
			m = nginx
		}
		pkgs = append(pkgs, m)
	}
	if out, err := sh(append([]string{"apt-get"}, pkgs...)...); err != nil {
		return fmt.Errorf("apt-get install: %w\n%s", err, out)
	}
	return nil
}

func findBin(explicit, dir, name string) string {
	if explicit != "" {
		return explicit
	}
	if p := filepath.Join(dir, name); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func startConsul(ctx context.Context, ps *procs, bin string) (string, error) {
	pp, err := freePorts(7)
	if err != nil {
		return "", err
	}
	args := []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn",
		"-http-port", strconv.Itoa(pp[0]), "-server-port", strconv.Itoa(pp[1]),
		"-serf-lan-port", strconv.Itoa(pp[2]), "-serf-wan-port", strconv.Itoa(pp[3]),
		"-grpc-port", strconv.Itoa(pp[4]), "-grpc-tls-port", strconv.Itoa(pp[5]), "-dns-port", strconv.Itoa(pp[6])}
	p, err := ps.start("consul", cleanEnv(), bin, args...)
	if err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", pp[0])
	err = waitFor(ctx, p, "http://"+addr+"/v1/status/leader", 30*time.Second,
		func(b string) bool { return strings.Trim(strings.TrimSpace(b), `"`) != "" })
	return addr, err
}

// register adds an upstream to Consul with the route tag gateway.route=/.
// No check: Consul counts it passing.
func register(ctx context.Context, consulAddr, id string, port int) error {
	body, _ := json.Marshal(map[string]any{
		"ID": id, "Name": "bench-upstream", "Address": "127.0.0.1", "Port": port,
		"Tags": []string{"gateway.route=/"},
	})
	req, _ := http.NewRequestWithContext(ctx, "PUT", "http://"+consulAddr+"/v1/agent/service/register",
		strings.NewReader(string(body)))
	resp, err := probe.Do(req)
	if err != nil {
		return fmt.Errorf("registering %s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("registering %s: %s %s", id, resp.Status, b)
	}
	return nil
}

func startHopgate(ctx context.Context, ps *procs, bin, name, consulAddr, lb string, flags, env []string) (p *proc, url, admin string, err error) {
	pp, err := freePorts(2)
	if err != nil {
		return nil, "", "", err
	}
	args := []string{"-listen", fmt.Sprintf("127.0.0.1:%d", pp[0]), "-admin", fmt.Sprintf("127.0.0.1:%d", pp[1]),
		"-access-log=false", "-drain", "0s", "-shutdown-timeout", "2s"}
	if lb != "" {
		args = append(args, "-lb", lb)
	}
	args = append(args, flags...)
	p, err = ps.start(strings.ReplaceAll(name, " ", "-"), cleanEnv(append(env, "CONSUL_HTTP_ADDR="+consulAddr)...), bin, args...)
	if err != nil {
		return nil, "", "", err
	}
	// Ready once /routes shows the route to both instances.
	admin = fmt.Sprintf("127.0.0.1:%d", pp[1])
	err = waitFor(ctx, p, "http://"+admin+"/routes", 20*time.Second, func(b string) bool {
		var doc struct {
			Ready  bool `json:"ready"`
			Routes []struct {
				Instances []json.RawMessage `json:"instances"`
			} `json:"routes"`
		}
		return json.Unmarshal([]byte(b), &doc) == nil && doc.Ready && len(doc.Routes) == 1 && len(doc.Routes[0].Instances) == 2
	})
	if err != nil {
		return nil, "", "", err
	}
	url = fmt.Sprintf("http://127.0.0.1:%d/", pp[0])
	return p, url, admin, waitFor(ctx, p, url, 10*time.Second, func(b string) bool { return strings.HasPrefix(b, "Hello from ") })
}

// startJaeger starts the collector for the traced rows, with its own
// metrics on, and returns it and its OTLP/HTTP address.
func startJaeger(ctx context.Context, ps *procs, bin, config string) (*collector, string, error) {
	pp, err := freePorts(6)
	if err != nil {
		return nil, "", err
	}
	p, err := ps.start("jaeger", cleanEnv(
		"JAEGER_LOG_LEVEL=warn", "JAEGER_LISTEN_HOST=127.0.0.1",
		"JAEGER_QUERY_PORT="+strconv.Itoa(pp[0]), "JAEGER_OTLP_HTTP_PORT="+strconv.Itoa(pp[1]),
		"JAEGER_QUERY_GRPC_PORT="+strconv.Itoa(pp[2]), "JAEGER_OTLP_GRPC_PORT="+strconv.Itoa(pp[3]),
		"JAEGER_HEALTH_PORT="+strconv.Itoa(pp[4]),
		"JAEGER_METRICS_LEVEL=basic", "JAEGER_METRICS_PORT="+strconv.Itoa(pp[5])), bin, "--config", config)
	if err != nil {
		return nil, "", err
	}
	err = waitFor(ctx, p, fmt.Sprintf("http://127.0.0.1:%d/api/services", pp[0]), 30*time.Second,
		func(string) bool { return true })
	c := &collector{proc: p, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", pp[5])}
	return c, fmt.Sprintf("127.0.0.1:%d", pp[1]), err
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// clockTicks is sysconf(_SC_CLK_TCK), from getconf; 100 on every Linux
// port Go supports when getconf is missing.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}
