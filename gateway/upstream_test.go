package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// countingServer is a real HTTP server that counts the connections made
// to it.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// scriptedUpstream accepts connections and hands each to script, for
// answers no well-behaved server gives. It counts connections.
func scriptedUpstream(t testing.TB, script func(c net.Conn, r *bufio.Reader)) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				script(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String(), &conns
}

// readHead reads one request head and returns it.
func readHead(r *bufio.Reader) (string, error) {
	var head strings.Builder
	for {
		line, err := r.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			return head.String(), err
		}
		if line == "\r\n" {
			return head.String(), nil
		}
	}
}

func get(t *testing.T, tr http.RoundTripper, url string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s body: %v", url, err)
	}
	return resp, string(body)
}

func TestTransportReusesConnections(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part two")
			w.Header().Set("X-Sum", "42")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.WriteString(w, "hello "+r.Method)
		}
	})
	tr := NewTransport()
	defer tr.CloseIdleConnections()

	for range 3 {
		if _, body := get(t, tr, srv.URL+"/"); body != "hello GET" {
			t.Fatalf("body = %q", body)
		}
	}
	resp, body := get(t, tr, srv.URL+"/chunked")
	if body != "part one, part two" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("chunked: body %q trailer %v", body, resp.Trailer)
	}
	if resp, _ := get(t, tr, srv.URL+"/empty"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d", resp.StatusCode)
	}
	head, _ := http.NewRequest("HEAD", srv.URL+"/", nil)
	resp, err := tr.RoundTrip(head)
	if err != nil || resp.Body != http.NoBody {
		t.Fatalf("HEAD: %v, body %T", err, resp.Body)
	}
	if _, body := get(t, tr, srv.URL+"/"); body != "hello GET" {
		t.Fatalf("after HEAD: body = %q", body)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for sequential requests, want 1 kept alive", n)
	}
}

func TestTransportSendsBufferedBody(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.Header.Get("Content-Length")+" "+string(b))
	})
	tr := NewTransport()
	payload := []byte("name=hopgate")
	req, _ := http.NewRequest("PUT", srv.URL+"/", bytes.NewReader(payload))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil }
	req.Header.Set("Idempotency-Key", "k1")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := string(b); got != "PUT 12 name=hopgate" {
		t.Errorf("upstream saw %q", got)
	}
	// An empty POST says so, as some servers require.
	req, _ = http.NewRequest("POST", srv.URL+"/", nil)
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := string(b); got != "POST 0 " {
		t.Errorf("empty POST: upstream saw %q", got)
	}
	// A body without GetBody streams: the standard transport carries it.
	req, _ = http.NewRequest("POST", srv.URL+"/", io.NopCloser(strings.NewReader("streamed")))
	req.ContentLength = -1
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := string(b); got != "POST  streamed" {
		t.Errorf("streamed body: upstream saw %q", got)
	}
}

// An instance may close a keep-alive connection while it idles in the
// pool; the next request must not fail for it.
func TestTransportStaleConnection(t *testing.T) {
	// The first connection answers once and then closes without saying so
	// (a restart, or the instance's own idle timeout).
	var first atomic.Bool
	first.Store(true)
	addr, conns := scriptedUpstream(t, func(c net.Conn, r *bufio.Reader) {
		closeAfterOne := first.Swap(false)
		for {
			if _, err := readHead(r); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if closeAfterOne {
				return
			}
		}
	})
	t.Run("retried when safe", func(t *testing.T) {
		tr := NewTransport()
		tr.StaleCheckAfter = time.Hour // no peek: the retry is what is tested
		get(t, tr, "http://"+addr+"/")
		if _, body := get(t, tr, "http://"+addr+"/"); body != "ok" {
			t.Fatalf("body = %q", body)
		}
		if n := conns.Load(); n != 2 {
			t.Fatalf("%d connections, want 2 (the stale one, then a fresh one)", n)
		}
	})
	first.Store(true)
	t.Run("seen before use", func(t *testing.T) {
		tr := NewTransport()
		tr.StaleCheckAfter = 0 // always peek
		get(t, tr, "http://"+addr+"/")
		// Wait for the instance's close to reach this side.
		tr.mu.Lock()
		idle := tr.idle[addr][0]
		tr.mu.Unlock()
		consultest.Eventually(t, 10*time.Second, "the instance's close seen", func() error {
			if connAlive(idle.conn) {
				return errors.New("connection still open")
			}
			return nil
		})
		// Not idempotent, so not retried: it works only because the stale
		// connection is never written to.
		req, _ := http.NewRequest("POST", "http://"+addr+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("POST after the instance closed the idle connection: %v", err)
		}
		resp.Body.Close()
	})
}

func TestTransportUnusualAnswers(t *testing.T) {
	cases := []struct {
		name, answer string
		wantBody     string
		wantErr      string
		reused       bool
	}{
		{name: "length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", wantBody: "hello", reused: true},
		{name: "ends at close", answer: "HTTP/1.1 200 OK\r\n\r\nuntil the end", wantBody: "until the end"},
		{name: "connection close", answer: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", wantBody: "ok"},
		{name: "HTTP/1.0", answer: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", wantBody: "ok"},
		{name: "bytes after the answer", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", wantBody: "ok"},
		{name: "early hints", answer: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", wantBody: "ok", reused: true},
		{name: "unasked upgrade", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", wantErr: "101"},
		{name: "head too large", answer: "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", maxResponseHead) + "\r\n\r\n", wantErr: errResponseHeadTooLarge.Error()},
		{name: "garbage", answer: "SMTP ready\r\n\r\n", wantErr: "malformed HTTP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, conns := scriptedUpstream(t, func(c net.Conn, r *bufio.Reader) {
				for {
					if _, err := readHead(r); err != nil {
						return
					}
					io.WriteString(c, tc.answer)
					if !strings.Contains(tc.answer, "Content-Length") {
						return // the body ends with the connection
					}
				}
			})
			tr := NewTransport()
			for range 2 {
				req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
				resp, err := tr.RoundTrip(req)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("err = %v, want %q", err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(b) != tc.wantBody {
					t.Fatalf("body %q, %v; want %q", b, err, tc.wantBody)
				}
			}
			want := int64(2)
			if tc.reused {
				want = 1
			}
			if n := conns.Load(); n != want {
				t.Errorf("%d connections for two requests, want %d", n, want)
			}
		})
	}
}

func TestTransportPassesEarlyHints(t *testing.T) {
	addr, _ := scriptedUpstream(t, func(c net.Conn, r *bufio.Reader) {
		readHead(r)
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+addr+"/", nil)
	resp, err := NewTransport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(hints) != 1 || hints[0] != "</a.css>" {
		t.Errorf("1xx seen: %v", hints)
	}
}

func TestTransportRefusesHeaderInjection(t *testing.T) {
	addr, conns := scriptedUpstream(t, func(c net.Conn, r *bufio.Reader) { readHead(r) })
	for name, set := range map[string]func(*http.Request){
		"value":  func(r *http.Request) { r.Header["X-A"] = []string{"1\r\nX-Injected: 1"} },
		"name":   func(r *http.Request) { r.Header["X A"] = []string{"1"} },
		"host":   func(r *http.Request) { r.Host = "a\r\nX-Injected: 1" },
		"method": func(r *http.Request) { r.Method = "GET / HTTP/1.1\r\nX: y\r\n\r\nGET" },
	} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		set(req)
		if _, err := NewTransport().RoundTrip(req); err == nil {
			t.Errorf("%s: a header that splits the request was sent", name)
		}
	}
	if n := conns.Load(); n > 4 {
		t.Errorf("%d connections", n)
	}
}

func TestTransportCancelClosesConnection(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr, conns := scriptedUpstream(t, func(c net.Conn, r *bufio.Reader) {
		for {
			if _, err := readHead(r); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf ")
			select {
			case <-release:
				return
			case <-time.After(time.Minute):
			}
		}
	})
	tr := NewTransport()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := resp.Body.Read(buf); done <- err }()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read went on after the request was cancelled")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled request kept waiting for its body")
	}
	resp.Body.Close()
	tr.mu.Lock()
	idle := len(tr.idle[addr])
	tr.mu.Unlock()
	if idle != 0 || conns.Load() != 1 {
		t.Errorf("a connection cut mid-body went back to the pool (%d idle)", idle)
	}

	// An answer that failed before its headers says why.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// An instance that leaves is never asked for a connection again: its idle
// connections must still close once they have idled IdleTimeout.
func TestTransportClosesIdleConnectionsOfGoneInstances(t *testing.T) {
	var closed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	tr := NewTransport()
	tr.IdleTimeout = 100 * time.Millisecond
	get(t, tr, srv.URL+"/")
	consultest.Eventually(t, 10*time.Second, "the idle connection closed", func() error {
		tr.mu.Lock()
		n := len(tr.idle)
		tr.mu.Unlock()
		if closed.Load() != 1 || n != 0 {
			return fmt.Errorf("%d connections closed, %d instances in the pool", closed.Load(), n)
		}
		return nil
	})
}

// Connections that idled past IdleTimeout before the sweep came are closed
// when next taken, and the pool goes on: a gateway quiet for a while then
// busy again.
func TestTransportExpiredIdleConnections(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	addr := strings.TrimPrefix(srv.URL, "http://")
	tr := NewTransport()
	var pooled []*upstreamConn
	for range 2 {
		c, err := tr.conn(context.Background(), addr, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		pooled = append(pooled, c)
	}
	for _, c := range pooled {
		tr.put(c)
	}
	tr.mu.Lock()
	for _, c := range tr.idle[addr] {
		c.idleSince = c.idleSince.Add(-2 * tr.IdleTimeout)
	}
	tr.mu.Unlock()

	for i := range 3 {
		if _, body := get(t, tr, srv.URL+"/"); body != "ok" {
			t.Fatalf("request %d: body %q", i, body)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3: the 2 expired ones, then 1 fresh one reused", n)
	}
	tr.mu.Lock()
	idle := slices.Clone(tr.idle[addr])
	tr.mu.Unlock()
	if len(idle) != 1 || idle[0] == nil {
		t.Fatalf("the pool holds %v, want the 1 fresh connection", idle)
	}
	// Not deferred: a panic under the pool's lock must fail the test, not
	// hang it.
	tr.CloseIdleConnections()
}

// Many requests at once share the pool: each connection serves one request
// at a time, and no more connections are made than requests in flight.
func TestTransportConcurrentRequests(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Query().Get("n"))
	})
	tr := NewTransport()
	const workers, each = 16, 50
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				n := fmt.Sprint(w*each + i)
				req, _ := http.NewRequest("GET", srv.URL+"/?n="+n, nil)
				resp, err := tr.RoundTrip(req)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(b) != n {
					errs <- fmt.Errorf("asked for %s, got %q (%v): answers crossed", n, b, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n > workers {
		t.Errorf("%d connections for %d requests in flight at most", n, workers)
	}
}

// portOf is the port of a loopback host:port.
func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
