// Package discoverybench measures discovery at scale against a real Consul
// (`make bench-discovery`): many opted-in services, one instance flapping,
// and how fast, how cheaply and with how many Consul requests the gateway
// follows. It is a benchmark, not a test: nothing asserts a time, and `make
// test` does not run it.
//
// BenchmarkDiscoveryAtScale starts a Consul dev agent (discovery/consultest),
// registers -services services of -instances instances each with the route
// tag gateway.route=/svcN and a passing check (see register), starts the
// real discovery watcher and gateway.Gateway in this process, then flips
// one instance's TTL check between critical and passing every -every for
// -d, and prints:
//
//   - latency from the UpdateTTL call to the routing table with the change
//     in force (the agent's sync to the catalog included; with the default
//     20 flaps, p99 is the slowest), and the gateway's own part, as
//     hopgate_discovery_route_update_seconds measures it (from Consul's
//     answer reaching the watcher to the table in force);
//   - the HTTP requests and new connections the gateway made to Consul per
//     flap (a counting http.RoundTripper under the real client);
//   - the cost of one table build with one service changed against a build
//     of every service;
//   - the process's resident memory (VmRSS, VmHWM) and Go heap.
//
// Flags go after -args, e.g.
//
//	go test -run '^$' -bench DiscoveryAtScale -benchtime 1x ./deploy/bench/discovery -args -services 2000 -d 30s
package discoverybench

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/discovery"
	"github.com/hopgate/hopgate/discovery/consultest"
	"github.com/hopgate/hopgate/discovery/routetag"
	"github.com/hopgate/hopgate/gateway"
)

var (
	nServices  = flag.Int("services", 1000, "opted-in services")
	nInstances = flag.Int("instances", 5, "instances per service")
	flapFor    = flag.Duration("d", 20*time.Second, "how long one instance flaps")
	flapEvery  = flag.Duration("every", time.Second, "time between two flips of its check")
	connLimit  = flag.Int("conns-per-client", 4096, "the agent's limits.http_max_conns_per_client (0: Consul's default, 200)")
	smallPool  = flag.Bool("small-idle-pool", false, "give the gateway's Consul client consul/api's default idle pool (GOMAXPROCS+1 per host), to compare")
	hopgateBin = flag.String("hopgate", "", "then run this hopgate `binary` on the same Consul through as many flaps, and report its memory")
)

func BenchmarkDiscoveryAtScale(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x: one run is a whole scenario")
	}
	hcl := ""
	if *connLimit > 0 {
		// The gateway holds one blocking query, so one connection, per
		// watched service; Consul's default allows 200 per client address.
		hcl = fmt.Sprintf("limits {\n  http_max_conns_per_client = %d\n}\n", *connLimit)
	}
	agent := consultest.StartWith(b, consultest.Options{HCL: hcl})
	fmt.Printf("consul agent on %s; %d services x %d instances; %d CPUs\n",
		agent.HTTPAddr, *nServices, *nInstances, runtime.NumCPU())

	start := time.Now()
	register(b, agent, *nServices, *nInstances)
	fmt.Printf("registered %d instances in %v\n", *nServices**nInstances, time.Since(start).Round(time.Millisecond))

	rssBefore := readRSS(b)
	h := startGateway(b, agent)
	start = time.Now()
	h.waitReady(b, *nServices, 5*time.Minute)
	startup := h.counts.snapshot()
	fmt.Printf("gateway ready in %v: %d routes; %d requests to Consul, %d connections opened, %d closed\n",
		time.Since(start).Round(time.Millisecond), len(h.gw.Table().Routes()), startup.total(), startup.dials, startup.closes)

	// Let the watches settle into their blocking queries, then flap.
	time.Sleep(time.Second)
	before := h.counts.snapshot()
	flaps := h.flap(b, agent, *flapFor, *flapEvery)
	after := h.counts.snapshot()
	delta := after.minus(before)

	rss := readRSS(b)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	fmt.Println()
	fmt.Printf("%d flaps of one instance of %s, one every %v:\n", len(flaps.total), flaps.service, *flapEvery)
	printLatency("  UpdateTTL call -> route applied", flaps.total)
	printLatency("  Consul answer -> route applied (route_update metric)", flaps.gateway)
	n := float64(len(flaps.total))
	fmt.Printf("  Consul requests per flap: %.2f (health %.2f, catalog %.2f); connections opened per flap %.2f, closed %.2f\n",
		float64(delta.total())/n, float64(delta.health)/n, float64(delta.catalog)/n, float64(delta.dials)/n, float64(delta.closes)/n)
	fmt.Printf("  snapshots published: %d\n", flaps.published)

	one, full := buildCosts(h.last())
	fmt.Println()
	fmt.Printf("table build, %d services x %d instances:\n", *nServices, *nInstances)
	fmt.Printf("  one service changed: %10.0f ns %8.0f allocs %10.0f B\n", one.ns, one.allocs, one.bytes)
	fmt.Printf("  a new gateway's first build (every route, endpoint and metric series new): %10.0f ns %8.0f allocs %10.0f B\n",
		full.ns, full.allocs, full.bytes)
	fmt.Println()
	fmt.Printf("memory: VmRSS %.1f MB (%.1f MB before the gateway started), VmHWM %.1f MB; Go heap in use %.1f MB; %d goroutines\n",
		rss.rss/1e6, rssBefore.rss/1e6, rss.hwm/1e6, float64(ms.HeapInuse)/1e6, runtime.NumGoroutine())

	if *hopgateBin != "" {
		fmt.Println()
		runBinary(b, agent, *hopgateBin, *flapFor, *flapEvery)
	}

	b.ReportMetric(percentile(flaps.total, 0.50).Seconds()*1e3, "p50-ms")
	b.ReportMetric(percentile(flaps.total, 0.99).Seconds()*1e3, "p99-ms")
	b.ReportMetric(percentile(flaps.gateway, 0.99).Seconds()*1e3, "gateway-p99-ms")
	b.ReportMetric(float64(delta.total())/n, "requests/flap")
	b.ReportMetric(rss.rss/1e6, "rss-MB")
	b.ReportMetric(one.ns, "build-one-ns")
	b.ReportMetric(full.ns, "build-all-ns")
}

// register adds every instance, concurrently. The flapping service's
// instances go through the agent API with TTL checks, so that a flap takes
// the path a real one takes (UpdateTTL, the agent's sync to the catalog).
// The others go straight into the catalog, on five nodes of their own, each
// with a passing check: the agent syncs its registrations one at a time and
// would take minutes for thousands, while catalog writes are batched.
func register(b *testing.B, agent *consultest.Agent, services, instances int) {
	cfg := agent.Config()
	cfg.Transport.MaxIdleConnsPerHost = 64
	client, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range 32 {
		wg.Go(func() {
			for k := range jobs {
				if err := registerInstance(client, k/instances, k%instances, k); err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	for k := range services * instances {
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("registering: %v", *err)
	}
	// The agent syncs its own registrations to the catalog in the
	// background.
	consultest.Eventually(b, 5*time.Minute, "every instance in the catalog", func() error {
		entries, _, err := client.Health().Service(serviceName(flapping()), "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) < instances {
			return fmt.Errorf("%d passing instances of %s in the catalog", len(entries), serviceName(flapping()))
		}
		return nil
	})
}

func registerInstance(client *api.Client, svc, inst, k int) error {
	id, name := instanceID(svc, inst), serviceName(svc)
	tags := []string{routetag.Prefix + "/svc" + strconv.Itoa(svc)}
	port := 20000 + k%40000
	if svc == flapping() {
		return client.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: id, Name: name, Address: "127.0.0.1", Port: port, Tags: tags,
			Check: &api.AgentServiceCheck{CheckID: checkID(svc, inst), TTL: "1h", Status: api.HealthPassing},
		})
	}
	node := fmt.Sprintf("bench-node-%d", inst)
	_, err := client.Catalog().Register(&api.CatalogRegistration{
		Node: node, Address: "127.0.0.1", SkipNodeUpdate: true,
		Service: &api.AgentService{ID: id, Service: name, Address: "127.0.0.1", Port: port, Tags: tags},
		Check: &api.AgentCheck{Node: node, CheckID: checkID(svc, inst), Name: "bench", Status: api.HealthPassing,
			ServiceID: id, ServiceName: name},
	}, nil)
	return err
}

// flapping is the service whose first instance flaps: the middle one.
func flapping() int { return *nServices / 2 }

func serviceName(svc int) string      { return fmt.Sprintf("svc%04d", svc) }
func instanceID(svc, inst int) string { return fmt.Sprintf("svc%04d-%d", svc, inst) }
func checkID(svc, inst int) string    { return "ttl:" + instanceID(svc, inst) }

// counts are the gateway's requests to Consul, by kind, and the
// connections it opened and closed.
type counts struct{ catalog, health, other, dials, closes int64 }

func (c counts) total() int64 { return c.catalog + c.health + c.other }

func (c counts) minus(o counts) counts {
	return counts{c.catalog - o.catalog, c.health - o.health, c.other - o.other, c.dials - o.dials, c.closes - o.closes}
}

type counters struct{ catalog, health, other, dials, closes atomic.Int64 }

func (c *counters) snapshot() counts {
	return counts{c.catalog.Load(), c.health.Load(), c.other.Load(), c.dials.Load(), c.closes.Load()}
}

// countedConn counts its Close.
type countedConn struct {
	net.Conn
	closes *atomic.Int64
	once   sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.closes.Add(1) })
	return c.Conn.Close()
}

// countingTransport counts every request the Consul client sends.
type countingTransport struct {
	next http.RoundTripper
	c    *counters
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case r.URL.Path == "/v1/catalog/services":
		t.c.catalog.Add(1)
	case strings.HasPrefix(r.URL.Path, "/v1/health/service/"):
		t.c.health.Add(1)
	default:
		t.c.other.Add(1)
	}
	return t.next.RoundTrip(r)
}

// harness is the gateway under measurement: the real watcher and gateway,
// with a publish hook that notes when a flap's change is in force.
type harness struct {
	gw     *gateway.Gateway
	w      *discovery.Watcher
	counts *counters

	mu        sync.Mutex
	snap      *discovery.Snapshot
	published int
	watch     *expectation // the change the flapper waits for; nil when none
}

// expectation is a flap in flight: route is in force once it has want
// endpoints.
type expectation struct {
	route   string
	want    int
	sent    time.Time
	applied chan [2]time.Duration // since sent; since Consul's answer
}

func startGateway(b *testing.B, agent *consultest.Agent) *harness {
	b.Setenv(api.HTTPAddrEnvName, agent.HTTPAddr)
	cfg, err := discovery.ConsulConfig() // the gateway's own client setup
	if err != nil {
		b.Fatal(err)
	}
	h := &harness{counts: &counters{}}
	if *smallPool {
		def := api.DefaultConfig().Transport
		cfg.Transport.MaxIdleConns, cfg.Transport.MaxIdleConnsPerHost = def.MaxIdleConns, def.MaxIdleConnsPerHost
	}
	dial := cfg.Transport.DialContext
	cfg.Transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.counts.dials.Add(1)
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countedConn{Conn: c, closes: &h.counts.closes}, nil
	}
	cfg.HttpClient = &http.Client{Transport: countingTransport{cfg.Transport, h.counts}}
	client, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "hopgate", Level: hclog.Warn, Output: os.Stderr})
	h.gw = gateway.New(gateway.Options{Logger: log})
	h.w = discovery.NewWatcher(discovery.Config{
		Consul:  discovery.NewConsul(client),
		Logger:  log.Named("discovery"),
		Publish: h.publish,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := h.w.Run(ctx); err != nil {
			b.Error(err)
		}
	}()
	b.Cleanup(func() { cancel(); <-done })
	return h
}

func (h *harness) publish(snap *discovery.Snapshot) {
	h.gw.Apply(snap)
	applied := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.snap = snap
	h.published++
	if x := h.watch; x != nil {
		if r := h.gw.Table().Match("bench", x.route); r != nil && len(r.Endpoints) == x.want {
			x.applied <- [2]time.Duration{applied.Sub(x.sent), applied.Sub(snap.Changed)}
			h.watch = nil
		}
	}
}

func (h *harness) last() *discovery.Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.snap
}

func (h *harness) waitReady(b *testing.B, routes int, within time.Duration) {
	consultest.Eventually(b, within, "the gateway routing every service", func() error {
		if st := h.w.Status(); !st.Ready {
			return fmt.Errorf("not ready: %+v", st)
		}
		if n := len(h.gw.Table().Routes()); n != routes {
			return fmt.Errorf("%d routes", n)
		}
		return nil
	})
}

type flapResults struct {
	service        string
	total, gateway []time.Duration
	published      int
}

// flap flips the check of the first instance of the middle service between
// critical and passing every interval for d, and collects, for each flip,
// how long the gateway took to route accordingly.
func (h *harness) flap(b *testing.B, agent *consultest.Agent, d, every time.Duration) flapResults {
	client := agent.Client()
	svc := flapping()
	res := flapResults{service: serviceName(svc)}
	h.mu.Lock()
	published := h.published
	h.mu.Unlock()
	status := api.HealthCritical
	end := time.Now().Add(d)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for time.Now().Before(end) {
		want := *nInstances
		if status == api.HealthCritical {
			want--
		}
		x := &expectation{route: "/svc" + strconv.Itoa(svc), want: want, applied: make(chan [2]time.Duration, 1)}
		h.mu.Lock()
		x.sent = time.Now()
		h.watch = x
		h.mu.Unlock()
		if err := client.Agent().UpdateTTL(checkID(svc, 0), "", status); err != nil {
			b.Fatalf("UpdateTTL: %v", err)
		}
		select {
		case got := <-x.applied:
			res.total = append(res.total, got[0])
			res.gateway = append(res.gateway, got[1])
		case <-time.After(30 * time.Second):
			b.Fatalf("the gateway did not follow %s going %s within 30s", res.service, status)
		}
		if status == api.HealthCritical {
			status = api.HealthPassing
		} else {
			status = api.HealthCritical
		}
		<-tick.C
	}
	h.mu.Lock()
	res.published = h.published - published
	h.mu.Unlock()
	return res
}

// buildCosts measures one table build on the last snapshot with one
// service changed, and a new gateway's first build of it, where every
// route, endpoint and metric series is new.
func buildCosts(snap *discovery.Snapshot) (one, full cost) {
	mid := len(snap.Services) / 2
	changed := *snap.Services[mid]
	changed.Instances = changed.Instances[1:] // one instance went critical
	changed.Unroutable++
	other := &discovery.Snapshot{Services: slices.Clone(snap.Services), Index: snap.Index + 1}
	other.Services[mid] = &changed

	gw := gateway.New(gateway.Options{})
	gw.Apply(snap)
	snaps := [2]*discovery.Snapshot{other, snap}
	i := 0
	one = measure(func() {
		i++
		gw.Apply(snaps[i%2])
	})
	full = measure(func() { gateway.New(gateway.Options{}).Apply(snap) })
	return one, full
}

// cost is the average time and allocations of one call.
type cost struct {
	ns, allocs, bytes float64
}

// measure runs f for about a second and returns its average cost.
// (testing.Benchmark cannot run inside a benchmark: they share a lock.)
func measure(f func()) cost {
	f() // warm up
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	n := 0
	for time.Since(start) < time.Second {
		f()
		n++
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	return cost{
		ns:     float64(elapsed.Nanoseconds()) / float64(n),
		allocs: float64(after.Mallocs-before.Mallocs) / float64(n),
		bytes:  float64(after.TotalAlloc-before.TotalAlloc) / float64(n),
	}
}

// runBinary runs the hopgate binary on the agent until it is ready, flips
// the same check every interval for d, and prints the binary's memory (with
// its own GOGC and settings, not this process's) and the mean of its
// route-update metric over the flips.
func runBinary(b *testing.B, agent *consultest.Agent, bin string, d, every time.Duration) {
	ports := consultest.FreePorts(b, 2)
	admin := fmt.Sprintf("127.0.0.1:%d", ports[1])
	logPath := filepath.Join(b.TempDir(), "hopgate.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "-admin", admin,
		"-access-log=false", "-drain", "0s", "-shutdown-timeout", "2s", "-log-level", "warn")
	cmd.Env = append(os.Environ(), agent.Env()...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting %s: %v", bin, err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	consultest.Eventually(b, 5*time.Minute, "hopgate ready", func() error {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/readyz %s", resp.Status)
		}
		return nil
	})
	fmt.Printf("%s ready in %v\n", bin, time.Since(start).Round(time.Millisecond))
	ready := scrape(b, "http://"+admin+"/metrics")

	client := agent.Client()
	status := api.HealthCritical
	tick := time.NewTicker(every)
	defer tick.Stop()
	flips := 0
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		if err := client.Agent().UpdateTTL(checkID(flapping(), 0), "", status); err != nil {
			b.Fatalf("UpdateTTL: %v", err)
		}
		flips++
		if status == api.HealthCritical {
			status = api.HealthPassing
		} else {
			status = api.HealthCritical
		}
	}
	time.Sleep(time.Second) // the last flip applied

	m := readRSSOf(b, fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	metrics := scrape(b, "http://"+admin+"/metrics")
	// The route updates since it was ready: the flips, not the first table.
	count := metrics["hopgate_discovery_route_update_seconds_count"] - ready["hopgate_discovery_route_update_seconds_count"]
	sum := metrics["hopgate_discovery_route_update_seconds_sum"] - ready["hopgate_discovery_route_update_seconds_sum"]
	fmt.Printf("  after %d flips: VmRSS %.1f MB, VmHWM %.1f MB; Go heap in use %.1f MB; %.0f route updates, mean %.2f ms\n",
		flips, m.rss/1e6, m.hwm/1e6, metrics["go_memstats_heap_inuse_bytes"]/1e6, count, sum/max(count, 1)*1e3)
	b.ReportMetric(m.rss/1e6, "hopgate-rss-MB")
}

// scrape reads the unlabelled samples of a Prometheus text page.
func scrape(b *testing.B, url string) map[string]float64 {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

type memory struct{ rss, hwm float64 } // bytes

// readRSS reads this process's resident set and its peak from /proc.
func readRSS(b *testing.B) memory { return readRSSOf(b, "/proc/self/status") }

func readRSSOf(b *testing.B, status string) memory {
	data, err := os.ReadFile(status)
	if err != nil {
		b.Fatalf("reading memory use: %v", err)
	}
	var m memory
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.rss = kb * 1024
		case "VmHWM":
			m.hwm = kb * 1024
		}
	}
	return m
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func printLatency(what string, d []time.Duration) {
	r := func(x time.Duration) string { return x.Round(10 * time.Microsecond).String() }
	fmt.Printf("%s: p50 %s, p99 %s, max %s\n", what, r(percentile(d, 0.5)), r(percentile(d, 0.99)), r(slices.Max(d)))
}
