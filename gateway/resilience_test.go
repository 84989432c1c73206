package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery"
)

func do(t *testing.T, method, u string, body io.Reader, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, body)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1] // Go sends req.Host, never a Host header
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRetriesIdempotent503OnAnotherInstance(t *testing.T) {
	bad, good := newTestBackend(t, "a-bad"), newTestBackend(t, "b-good")
	bad.status.Store(503)
	settings := roundRobinSettings()
	settings.Outlier.Consecutive = 0 // retries alone: keep the bad instance in
	h := newHarnessWith(t, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{bad.instance("/"), good.instance("/")}}), settings)
	for range 4 {
		if code, body := do(t, "GET", h.proxy.URL+"/", nil); code != 200 || body != "Hello from b-good" {
			t.Fatalf("GET = %d %q, want the good instance's answer", code, body)
		}
	}
	if bad.hits.Load() == 0 {
		t.Fatal("the failing instance was never tried: the test proved nothing")
	}
	// A GET with a body: buffered and replayed.
	if code, _ := do(t, "GET", h.proxy.URL+"/", strings.NewReader("query body")); code != 200 {
		t.Errorf("GET with a body = %d, want 200 after a retry", code)
	}
	// A POST that reached an instance is never sent twice...
	before := bad.hits.Load() + good.hits.Load()
	codes := map[int]int{}
	for range 4 {
		code, _ := do(t, "POST", h.proxy.URL+"/", strings.NewReader("x"))
		codes[code]++
	}
	if after := bad.hits.Load() + good.hits.Load(); after-before != 4 {
		t.Errorf("4 POSTs reached instances %d times, want exactly 4", after-before)
	}
	if codes[503] == 0 {
		t.Errorf("POST answers %v: the 503 must reach the client unretried", codes)
	}
	// ...unless the client vouches for it with an Idempotency-Key.
	for range 4 {
		if code, _ := do(t, "POST", h.proxy.URL+"/", strings.NewReader("x"), "Idempotency-Key", "k1"); code != 200 {
			t.Errorf("POST with Idempotency-Key = %d, want 200", code)
		}
	}
}

func TestOutlierEjectsAFailingInstance(t *testing.T) {
	bad, good, good2 := newTestBackend(t, "a-bad"), newTestBackend(t, "b-good"), newTestBackend(t, "c-good")
	bad.status.Store(500) // not retried, but counted by passive health
	h := newHarness(t, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{
		bad.instance("/"), good.instance("/"), good2.instance("/")}}))
	for range 30 {
		do(t, "GET", h.proxy.URL+"/", nil)
	}
	if got := bad.hits.Load(); got != 5 {
		t.Errorf("the failing instance got %d requests, want exactly 5 before ejection", got)
	}
	doc := routesView(h.gw, nil, time.Now())
	var ejected []string
	for _, in := range doc.Routes[0].Instances {
		if in.EjectedUntil != nil {
			ejected = append(ejected, in.ID)
		}
	}
	if fmt.Sprint(ejected) != "[a-bad]" {
		t.Errorf("ejected = %v, want [a-bad]", ejected)
	}
	if c := doc.Routes[0].Counts; c.Ejections != 1 {
		t.Errorf("counts = %+v, want 1 ejection", c)
	}
	var events []string
	for _, s := range h.spans.Ended() {
		for _, e := range s.Events() {
			events = append(events, e.Name)
		}
	}
	if !strings.Contains(strings.Join(events, ","), "instance ejected") {
		t.Errorf("span events %v, want an ejection", events)
	}
}

func TestOutlierNeverEjectsMoreThanTheCap(t *testing.T) {
	a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
	a.status.Store(500)
	b.status.Store(500)
	h := newHarness(t, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{a.instance("/"), b.instance("/")}}))
	for range 40 {
		do(t, "GET", h.proxy.URL+"/", nil)
	}
	ejected := 0
	for _, in := range routesView(h.gw, nil, time.Now()).Routes[0].Instances {
		if in.EjectedUntil != nil {
			ejected++
		}
	}
	if ejected != 1 {
		t.Errorf("%d of 2 instances ejected, want 1 (max share 50%%)", ejected)
	}
}

func TestPanicModeIgnoresEjections(t *testing.T) {
	a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
	settings := roundRobinSettings()
	settings.Outlier.MaxEjectedShare = 1
	h := newHarnessWith(t, snapshot(&discovery.Service{Name: "s", Unroutable: 1,
		Instances: []discovery.Instance{a.instance("/"), b.instance("/")}}), settings)
	a.status.Store(500)
	for range 12 {
		do(t, "GET", h.proxy.URL+"/", nil)
	}
	// a is ejected: 1 healthy of 3 (one is critical in Consul) is below
	// half, so the route panics and spreads over both again.
	route := h.gw.Table().Routes()[0]
	if !route.state.panic.Load() {
		t.Fatal("route not in panic mode with 1 of 3 instances healthy")
	}
	a.status.Store(0)
	before := a.hits.Load()
	for range 10 {
		do(t, "GET", h.proxy.URL+"/", nil)
	}
	if a.hits.Load() == before {
		t.Error("in panic mode the ejected instance got no traffic")
	}
}

func TestRetryBudgetBoundsAttempts(t *testing.T) {
	var ss []*testBackend
	var insts []discovery.Instance
	for i := range 3 {
		s := newTestBackend(t, fmt.Sprint("i", i))
		s.status.Store(503)
		ss = append(ss, s)
		insts = append(insts, s.instance("/"))
	}
	settings := roundRobinSettings()
	settings.Outlier.Consecutive = 0 // keep every instance in, to stress the budget alone
	settings.RetryFloor = 1          // 10 retries per 10 s window, plus 20% of requests
	h := newHarnessWith(t, snapshot(&discovery.Service{Name: "s", Instances: insts}), settings)
	const requests = 100
	for range requests {
		if code, _ := do(t, "GET", h.proxy.URL+"/", nil); code != 503 {
			t.Fatalf("status %d, want the instances' 503", code)
		}
	}
	var attempts int64
	for _, s := range ss {
		attempts += s.hits.Load()
	}
	counts := routesView(h.gw, nil, time.Now()).Routes[0].Counts
	if counts.BudgetExhausted == 0 || counts.Retries != attempts-requests {
		t.Errorf("counts = %+v, want budget exhaustion and %d retries", counts, attempts-requests)
	}
	// 100 first attempts + at most 10 (floor) + 20% of 100 retries.
	if retries := attempts - requests; retries > 30 || retries < 10 {
		t.Errorf("%d retries for %d requests, want between 10 and 30 (budget 20%% + floor)", retries, requests)
	}
}

func TestTimeouts(t *testing.T) {
	slow, fast := newTestBackend(t, "a-slow"), newTestBackend(t, "b-fast")
	slow.delay.Store(int64(2 * time.Second))
	h := newHarness(t, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{
		slow.instance("/try try_timeout=100ms", "/all timeout=150ms"), fast.instance("/try try_timeout=100ms"),
	}}))
	// A try that times out is retried elsewhere.
	for range 3 {
		if code, body := do(t, "GET", h.proxy.URL+"/try", nil); code != 200 || body != "Hello from b-fast" {
			t.Fatalf("GET /try = %d %q", code, body)
		}
	}
	// The route timeout answers 504.
	start := time.Now()
	if code, body := do(t, "GET", h.proxy.URL+"/all", nil); code != 504 || !strings.Contains(body, "timed out") {
		t.Errorf("GET /all = %d %q, want 504", code, body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("504 took %v, want about the 150ms timeout", d)
	}
}

func TestRouteConcurrencyLimit(t *testing.T) {
	block := make(chan struct{})
	var entered sync.WaitGroup
	entered.Add(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Done()
		<-block
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	h := newHarness(t, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("x", port, "/ max_inflight=2")}}))
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { do(t, "GET", h.proxy.URL+"/", nil) })
	}
	entered.Wait() // both requests are at the instance
	req, _ := http.NewRequest("GET", h.proxy.URL+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third request = %d (Retry-After %q), want an immediate 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(block)
	wg.Wait()
}

func TestInstanceConcurrencyLimit(t *testing.T) {
	block := make(chan struct{})
	entered := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-block
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	settings := roundRobinSettings()
	settings.MaxInflightPerInstance = 1
	h := newHarnessWith(t, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("x", port, "/")}}), settings)
	done := make(chan struct{})
	go func() { do(t, "GET", h.proxy.URL+"/", nil); close(done) }()
	<-entered
	if code, _ := do(t, "GET", h.proxy.URL+"/", nil); code != 503 {
		t.Errorf("second request to a busy instance = %d, want 503", code)
	}
	close(block)
	<-done
}

func TestWebSocketUpgradeOutlivesTheTimeout(t *testing.T) {
	// An echo server speaking just enough of the upgrade handshake.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = rw.WriteString("echo " + line)
			_ = rw.Flush()
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	h := newHarness(t, snapshot(&discovery.Service{Name: "ws", Instances: []discovery.Instance{instance("w", port, "/ timeout=100ms websocket=on")}}))

	conn, err := net.Dial("tcp", strings.TrimPrefix(h.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	for i := range 3 {
		if i == 2 {
			time.Sleep(300 * time.Millisecond) // outlive the 100ms route timeout on purpose
		}
		fmt.Fprintf(conn, "ping %d\n", i)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("echo ping %d\n", i) {
			t.Fatalf("message %d: %q %v", i, line, err)
		}
	}
}

func TestServerSentEventsStreamAsTheyArrive(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "data: second\n\n")
	}))
	defer srv.Close()
	defer close(release)
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	h := newHarness(t, snapshot(&discovery.Service{Name: "sse", Instances: []discovery.Instance{instance("e", port, "/ timeout=100ms")}}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.proxy.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event = %q %v: it must arrive while the stream is still open", line, err)
	}
}

func TestGRPCStyleH2CBackend(t *testing.T) {
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		_, _ = io.WriteString(w, r.Proto)
		w.Header().Set("Grpc-Status", "0")
	})}
	backend.Protocols = new(http.Protocols)
	backend.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	defer backend.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	h := newHarness(t, snapshot(&discovery.Service{Name: "grpc", Instances: []discovery.Instance{instance("g", port, "/ proto=h2c")}}))

	// The client speaks h2c to the gateway as well, as gRPC clients do.
	front := httptest.NewUnstartedServer(h.proxy.Handler)
	front.Config.Protocols = new(http.Protocols)
	front.Config.Protocols.SetHTTP1(true)
	front.Config.Protocols.SetUnencryptedHTTP2(true)
	front.Start()
	defer front.Close()
	client := &http.Client{Transport: NewH2CTransport()}
	resp, err := client.Post(front.URL+"/pkg.Service/Method", "application/grpc", strings.NewReader("msg"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || string(body) != "HTTP/2.0" {
		t.Errorf("client saw %s, backend saw %q: want HTTP/2 on both hops", resp.Proto, body)
	}
	if resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("trailers = %v, want Grpc-Status passed through", resp.Trailer)
	}
}

func TestRoutesDocumentShowsPolicyAndLoad(t *testing.T) {
	a := newTestBackend(t, "a")
	h := newHarness(t, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{a.instance("/ lb=least_request")}}))
	rec := httptest.NewRecorder()
	NewAdmin(h.gw, AdminOptions{}).ServeHTTP(rec, httptest.NewRequest("GET", "/routes", nil))
	var doc RoutesDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Routes[0].Policy != "least_request" {
		t.Errorf("policy = %q, want least_request from the tag", doc.Routes[0].Policy)
	}
}

func TestIdleTimeoutCutsAStalledResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "partial")
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // stall: never send the rest
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	h := newHarness(t, snapshot(&discovery.Service{Name: "s", Instances: []discovery.Instance{instance("x", port, "/ idle_timeout=100ms")}}))
	start := time.Now()
	// The client sees the connection cut: before or after the headers,
	// depending on what was flushed when the idle timeout fired.
	resp, err := http.Get(h.proxy.URL + "/")
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("body %q read in full: want the stalled response cut short", body)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the stalled response lasted %v, want about the 100ms idle timeout", d)
	}
}

func TestRouteOptionsParse(t *testing.T) {
	p, err := DefaultSettings.policyFor(map[string]string{
		"lb": "hash:header:X-User", "timeout": "5s", "try_timeout": "1s", "connect_timeout": "300ms",
		"idle_timeout": "0s", "attempts": "2", "max_inflight": "10", "slow_start": "30s", "proto": "h2c"})
	if err != nil {
		t.Fatal(err)
	}
	if p.balance.Policy != "hash" || p.balance.HashOn != "header:X-User" || p.balance.SlowStart != 30*time.Second ||
		p.timeout != 5*time.Second || p.tryTimeout != time.Second || p.connect != 300*time.Millisecond ||
		p.idle != 0 || p.attempts != 2 || p.maxInflight != 10 || !p.h2c {
		t.Errorf("policy = %+v", p)
	}
	for k, v := range map[string]string{"lb": "fastest", "timeout": "0s", "attempts": "11", "max_inflight": "x",
		"proto": "h3", "connect_timeout": "-1s", "try_timeout": "soon"} {
		if _, err := DefaultSettings.policyFor(map[string]string{k: v}); err == nil || !strings.Contains(err.Error(), k+"="+v) {
			t.Errorf("%s=%s: err = %v, want one naming the option", k, v, err)
		}
	}
}
