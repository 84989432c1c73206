package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// start serves h on a loopback port and returns the server and its
// address; the server is closed when the test ends.
func start(t *testing.T, h http.Handler, tune ...func(*Server)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, HeaderTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 8 << 10}
	for _, f := range tune {
		f(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

// rawConn is a client connection driven byte by byte.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

// answer reads one answer to a request with the given method, body
// included.
func (rc *rawConn) answer(method string) (*http.Response, string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("reading the answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading the answer's body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the server closed the connection (EOF with
// nothing more to read).
func (rc *rawConn) closed() bool {
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := rc.br.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello "+r.URL.Path) }

func TestKeepAliveAndFraming(t *testing.T) {
	long := strings.Repeat("x", 3*bufferBeforeChunking)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short":
			io.WriteString(w, "short")
		case "/long":
			io.WriteString(w, long)
		case "/known":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "known")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/flushed":
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		}
	}))
	rc := dial(t, addr)
	for _, tc := range []struct {
		path, body string
		clen       int64
		chunked    bool
	}{
		{"/short", "short", 5, false},
		{"/long", long, -1, true},
		{"/known", "known", 5, false},
		{"/empty", "", 0, false},
		{"/flushed", "ab", -1, true},
	} {
		rc.send("GET " + tc.path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := rc.answer("GET")
		if body != tc.body || resp.ContentLength != tc.clen || (len(resp.TransferEncoding) > 0) != tc.chunked || resp.Close {
			t.Errorf("%s: body %q, length %d, chunked %v, close %v; want %q, %d, %v, keep-alive",
				tc.path, body[:min(len(body), 20)], resp.ContentLength, resp.TransferEncoding, resp.Close, tc.body[:min(len(tc.body), 20)], tc.clen, tc.chunked)
		}
		if resp.Header.Get("Date") == "" {
			t.Errorf("%s: no Date header", tc.path)
		}
	}
	// A real client reuses the connection.
	var reused atomic.Int32
	client := &http.Client{}
	for range 3 {
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if i.Reused {
				reused.Add(1)
			}
		}})
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/short", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if reused.Load() != 2 {
		t.Errorf("the client reused its connection %d times of 2", reused.Load())
	}
}

func TestHeadAndPipelining(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "11")
		if r.Method != http.MethodHead {
			io.WriteString(w, "hello world")
		}
	}))
	rc := dial(t, addr)
	rc.send("HEAD /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.answer("HEAD"); resp.ContentLength != 11 || body != "" {
		t.Errorf("HEAD: length %d, body %q; want 11 and none", resp.ContentLength, body)
	}
	for range 2 {
		if _, body := rc.answer("GET"); body != "hello world" {
			t.Errorf("pipelined GET: %q", body)
		}
	}
}

func TestTrailers(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/undeclared" {
			// A short answer whose head goes out when the handler is done:
			// the trailer must make it chunked, not sized.
			io.WriteString(w, "body")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
			return
		}
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(200)
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	}))
	for path, want := range map[string]http.Header{
		"/":           {"X-Sum": {"42"}, "X-Late": {"yes"}},
		"/undeclared": {"X-Late": {"yes"}},
	} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for name := range want {
			if string(b) != "body" || resp.Trailer.Get(name) != want.Get(name) {
				t.Errorf("%s: body %q, trailers %v; want %v", path, b, resp.Trailer, want)
			}
		}
	}
}

func TestInformationalAnswers(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "done")
	}))
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	first, _ := rc.answer("GET")
	second, body := rc.answer("GET")
	if first.StatusCode != 103 || first.Header.Get("Link") == "" || second.StatusCode != 200 || second.Header.Get("Link") != "" || body != "done" {
		t.Errorf("answers %d (%v) then %d (%v) %q; want 103 with Link, then 200 without", first.StatusCode, first.Header, second.StatusCode, second.Header, body)
	}
}

func TestExpectContinue(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "got "+string(b))
	}))
	t.Run("body read", func(t *testing.T) {
		rc := dial(t, addr)
		rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
		if resp, _ := rc.answer("POST"); resp.StatusCode != http.StatusContinue {
			t.Fatalf("first answer %d, want 100", resp.StatusCode)
		}
		rc.send("data")
		if resp, body := rc.answer("POST"); resp.StatusCode != 200 || body != "got data" || resp.Close {
			t.Errorf("answer %d %q close=%v", resp.StatusCode, body, resp.Close)
		}
	})
	t.Run("answered without reading", func(t *testing.T) {
		rc := dial(t, addr)
		rc.send("POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
		resp, _ := rc.answer("POST")
		if resp.StatusCode != http.StatusForbidden || !resp.Close || !rc.closed() {
			t.Errorf("answer %d close=%v; want 403 and the connection closed (the body never came)", resp.StatusCode, resp.Close)
		}
	})
	t.Run("unknown expectation", func(t *testing.T) {
		rc := dial(t, addr)
		rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: teapot\r\n\r\ndata")
		if resp, _ := rc.answer("POST"); resp.StatusCode != http.StatusExpectationFailed {
			t.Errorf("answer %d, want 417", resp.StatusCode)
		}
	})
}

func TestBadRequests(t *testing.T) {
	var served atomic.Int32
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }),
		func(s *Server) { s.MaxHeaderBytes = 1024 })
	for _, tc := range []struct {
		name, payload string
		status        int
	}{
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"bad header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400},
		{"control byte in a value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400},
		{"garbage", "HELLO\r\n\r\n", 400},
		{"HTTP/2 request line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"head too large", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 8<<10) + "\r\n\r\n", 431},
		{"head too large, never ending", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 8<<10), 431},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"two lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dial(t, addr)
			rc.send(tc.payload)
			resp, _ := rc.answer("GET")
			if resp.StatusCode != tc.status || !resp.Close || !rc.closed() {
				t.Errorf("answer %d close=%v; want %d and the connection closed", resp.StatusCode, resp.Close, tc.status)
			}
		})
	}
	if n := served.Load(); n != 0 {
		t.Errorf("the handler saw %d bad requests", n)
	}
}

func TestLargeHeadWithinTheLimit(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Big")[:3])
	}), func(s *Server) { s.MaxHeaderBytes = 32 << 10 })
	rc := dial(t, addr)
	for range 2 {
		rc.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 20<<10) + "\r\n\r\n")
		if resp, body := rc.answer("GET"); resp.StatusCode != 200 || body != "bbb" {
			t.Errorf("answer %d %q", resp.StatusCode, body)
		}
	}
}

func TestUnreadBodies(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(hello))
	t.Run("small: read away, connection kept", func(t *testing.T) {
		rc := dial(t, addr)
		rc.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
		rc.send("POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
		rc.send("GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
		for _, want := range []string{"hello /a", "hello /b", "hello /c"} {
			if resp, body := rc.answer("GET"); body != want || resp.Close {
				t.Errorf("answer %q close=%v, want %q", body, resp.Close, want)
			}
		}
	})
	t.Run("large: connection closed", func(t *testing.T) {
		rc := dial(t, addr)
		size := 2 * maxPostHandlerRead
		rc.send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
		go io.WriteString(rc.c, strings.Repeat("z", size)) // may fail when the server closes
		resp, body := rc.answer("POST")
		if body != "hello /big" || !resp.Close {
			t.Errorf("answer %q close=%v, want the answer and the connection closed", body, resp.Close)
		}
	})
}

func TestHTTP10(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(hello))
	rc := dial(t, addr)
	rc.send("GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if resp, body := rc.answer("GET"); body != "hello /ka" || resp.Close || resp.Header.Get("Connection") != "keep-alive" {
		t.Errorf("HTTP/1.0 keep-alive: %q close=%v %v", body, resp.Close, resp.Header)
	}
	rc.send("GET /close HTTP/1.0\r\n\r\n")
	if resp, body := rc.answer("GET"); body != "hello /close" || !resp.Close || !rc.closed() {
		t.Errorf("HTTP/1.0: %q close=%v, want the connection closed", body, resp.Close)
	}
}

func TestNoResponseSplitting(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", "a\r\nSet-Cookie: evil=1")
		w.Header()["Bad Name"] = []string{"v"}
	}))
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := rc.answer("GET")
	if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("X-Echo") != "a  Set-Cookie: evil=1" || len(resp.Header["Bad Name"]) != 0 {
		t.Errorf("headers %v", resp.Header)
	}
}

func TestClientLeavingCancelsTheRequest(t *testing.T) {
	canceled := make(chan error, 1)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			canceled <- nil
		case <-time.After(10 * time.Second):
			canceled <- errors.New("the request ran on after its client left")
		}
	}))
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.c.Close()
	if err := <-canceled; err != nil {
		t.Error(err)
	}
}

// watcherFunc is a Watcher of two functions, either nil.
type watcherFunc struct{ left, passed func() }

func (w watcherFunc) ClientLeft() {
	if w.left != nil {
		w.left()
	}
}

func (w watcherFunc) DeadlinePassed() {
	if w.passed != nil {
		w.passed()
	}
}

// A handler's watcher is told when its client leaves, with the request's
// context already ended, and never once it has returned.
func TestWatcherClientLeft(t *testing.T) {
	left := make(chan error, 1)
	var calls atomic.Int32
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := InfoOf(r)
		hooked := make(chan struct{})
		info.Watch(watcherFunc{left: func() {
			calls.Add(1)
			if r.Context().Err() == nil {
				left <- errors.New("watcher told before the request's context ended")
			}
			close(hooked)
		}})
		if r.URL.Path == "/quick" {
			return
		}
		select {
		case <-hooked:
			left <- nil
		case <-time.After(10 * time.Second):
			left <- errors.New("the watcher was not told when the client left")
		}
	}))
	rc := dial(t, addr)
	rc.send("GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.answer("GET")
	rc.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.c.Close()
	if err := <-left; err != nil {
		t.Error(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("watchers told %d times, want once: the quick request's must be forgotten", n)
	}
}

// A deadline set on the connection's timer is kept, moved earlier, moved
// later, cleared, and forgotten when its request ends, even by the next
// request's watcher.
func TestWatcherDeadline(t *testing.T) {
	type told struct {
		path string
		at   time.Duration // after the handler set the deadline
	}
	passed := make(chan told, 8)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := InfoOf(r)
		set := time.Now()
		now := make(chan struct{}, 1)
		info.Watch(watcherFunc{passed: func() {
			passed <- told{r.URL.Path, time.Since(set)}
			now <- struct{}{}
		}})
		switch r.URL.Path {
		case "/later": // a long deadline armed first, a short one after
			info.SetDeadline(set.Add(time.Hour))
			info.SetDeadline(set.Add(30 * time.Millisecond))
		case "/earlier": // past the watch's time: the timer is armed again
			info.SetDeadline(set.Add(20 * time.Millisecond))
			info.SetDeadline(set.Add(250 * time.Millisecond))
		case "/cleared":
			info.SetDeadline(set.Add(20 * time.Millisecond))
			info.SetDeadline(time.Time{})
			time.Sleep(300 * time.Millisecond) // well past what was cleared
			return
		case "/returns":
			info.SetDeadline(set.Add(50 * time.Millisecond))
			return
		case "/none": // within what /returns had set: not its deadline
			time.Sleep(300 * time.Millisecond)
			return
		}
		select {
		case <-now:
		case <-time.After(10 * time.Second):
		}
	}))
	rc := dial(t, addr)
	for _, tc := range []struct {
		path     string
		after    time.Duration // told no sooner
		notAtAll bool
	}{
		{"/later", 30 * time.Millisecond, false},
		{"/earlier", 250 * time.Millisecond, false},
		{"/cleared", 0, true},
		{"/returns", 0, true},
		{"/none", 0, true},
	} {
		rc.send("GET " + tc.path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		rc.answer("GET")
		select {
		case got := <-passed:
			switch {
			case tc.notAtAll:
				t.Errorf("%s: watcher told of a deadline it no longer had", tc.path)
			case got.path != tc.path:
				t.Errorf("%s: told of %s's deadline", tc.path, got.path)
			case got.at < tc.after:
				t.Errorf("%s: told after %v, before the deadline at %v", tc.path, got.at, tc.after)
			}
		default:
			if !tc.notAtAll {
				t.Errorf("%s: the deadline passed untold", tc.path)
			}
		}
	}
}

func TestPipelinedRequestDuringALongOne(t *testing.T) {
	release := make(chan struct{})
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}))
	rc := dial(t, addr)
	rc.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	// Past watchDelay, the watch reads the connection: the next request's
	// first byte must reach the parser all the same.
	time.Sleep(3 * watchDelay)
	rc.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(watchDelay)
	close(release)
	for _, want := range []string{"GET /slow", "GET /next"} {
		if _, body := rc.answer("GET"); body != want {
			t.Errorf("answer %q, want %q", body, want)
		}
	}
}

func TestHijack(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	}))
	rc := dial(t, addr)
	// The first line after the head arrives with it: it is in the
	// server's buffer when the handler takes the connection.
	rc.send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nping\n")
	if resp, _ := rc.answer("GET"); resp.StatusCode != 101 {
		t.Fatalf("answer %d, want 101", resp.StatusCode)
	}
	if line, _ := rc.br.ReadString('\n'); line != "echo ping\n" {
		t.Errorf("after the upgrade: %q", line)
	}
}

func TestPanicsCloseOnlyTheirConnection(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/abort":
			w.WriteHeader(200)
			io.WriteString(w, strings.Repeat("x", 3*bufferBeforeChunking))
			panic(http.ErrAbortHandler)
		}
		hello(w, r)
	}))
	rc := dial(t, addr)
	rc.send("GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	if !rc.closed() {
		t.Error("a panicking handler's connection stayed open")
	}
	rc = dial(t, addr)
	rc.send("GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("an aborted chunked answer read as complete")
	}
	rc = dial(t, addr)
	rc.send("GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := rc.answer("GET"); body != "hello /fine" {
		t.Errorf("after the panics: %q", body)
	}
}

func TestTimeouts(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(hello), func(s *Server) {
		s.HeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = 400 * time.Millisecond
	})
	for _, tc := range []struct {
		name    string
		run     func(rc *rawConn)
		atLeast time.Duration
	}{
		{"silent connection: header timeout", func(rc *rawConn) {}, 200 * time.Millisecond},
		{"partial head: header timeout", func(rc *rawConn) { rc.send("GET / HTTP/1.1\r\n") }, 200 * time.Millisecond},
		{"idle after a request: idle timeout", func(rc *rawConn) {
			rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			rc.answer("GET")
		}, 400 * time.Millisecond},
		{"idle after a later request: idle timeout from that one", func(rc *rawConn) {
			rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			rc.answer("GET")
			time.Sleep(300 * time.Millisecond) // idle, but less than the timeout
			rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			rc.answer("GET")
		}, 700 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dial(t, addr)
			begin := time.Now()
			tc.run(rc)
			if !rc.closed() {
				t.Fatal("connection not closed")
			}
			if d := time.Since(begin); d < tc.atLeast || d > 3*time.Second {
				t.Errorf("closed after %v, want from %v to a few seconds", d, tc.atLeast)
			}
		})
	}
}

func TestShutdownFinishesRequestsAndClosesIdleConnections(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	s, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		hello(w, r)
	}))
	idle := dial(t, addr)
	idle.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	idle.answer("GET")
	busy := dial(t, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started

	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	if !idle.closed() {
		t.Error("the idle connection stayed open")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	resp, body := busy.answer("GET")
	if body != "hello /slow" || !resp.Close {
		t.Errorf("in-flight answer %q close=%v, want it whole and closing", body, resp.Close)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

func TestShutdownGivesUpAtItsDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	s, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}))
	dial(t, addr).send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want the context's deadline", err)
	}
}

func TestKeepAlivesOff(t *testing.T) {
	s, addr := start(t, http.HandlerFunc(hello))
	rc := dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := rc.answer("GET"); resp.Close {
		t.Fatal("closing before keep-alives were turned off")
	}
	s.SetKeepAlivesEnabled(false)
	if !rc.closed() {
		t.Error("an idle connection stayed open when keep-alives were turned off")
	}
	rc = dial(t, addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := rc.answer("GET"); !resp.Close || !rc.closed() {
		t.Error("an answer kept its connection with keep-alives off")
	}
}

func TestInfo(t *testing.T) {
	type seen struct {
		requests     int64
		bothFramings bool
		ok           bool
		cancelEnds   bool // Cancel ended the request's context, and only that
	}
	got := make(chan seen, 4)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, ok := InfoOf(r)
		live := r.Context().Err() == nil
		if ok {
			info.Cancel()
		}
		got <- seen{info.Requests, info.BothFramings, ok, live && r.Context().Err() == context.Canceled}
		io.Copy(io.Discard, r.Body)
	}))
	rc := dial(t, addr)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na" +
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
		"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	// Each request has a live context of its own: the previous one's
	// Cancel did not end it.
	for i, want := range []seen{{1, false, true, true}, {2, false, true, true}, {3, true, true, true}} {
		var s seen
		select {
		case s = <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("request %d never reached the handler", i+1)
		}
		if s != want {
			t.Errorf("request %d: %+v, want %+v", i+1, s, want)
		}
	}
	if _, ok := InfoOf(httpRequest()); ok {
		t.Error("InfoOf of a request from elsewhere")
	}
}

func httpRequest() *http.Request {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	return r
}

var anyDate = regexp.MustCompile("Date: [^\r]*\r\n")

// TestRelayHead: an answer head kept by SimpleAnswerHead goes out as it
// came, but for its length, which the server writes once, and its
// hop-by-hop fields; what the handler set goes beside it, and the server
// adds a Date only when the head has none. An HTTP/1.0 client gets the
// same lines under its own version.
func TestRelayHead(t *testing.T) {
	answers := map[string]string{
		"/dated": "HTTP/1.1 201 Created\r\nx-odd:  v \r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n" +
			"Date: Sat, 28 Nov 2026 03:00:00 GMT\r\nConnection: keep-alive\r\n\r\nok",
		"/undated": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok",
	}
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var head AnswerHead
		resp := SimpleAnswerHead(bufio.NewReader(strings.NewReader(answers[r.URL.Path])), r, &head)
		if resp == nil || resp.Header != nil {
			t.Errorf("%s: not taken for relaying (%v)", r.URL.Path, resp)
			return
		}
		w.Header().Set("X-Handler", "set")
		w.(interface{ RelayHead(*AnswerHead) }).RelayHead(&head)
		w.WriteHeader(http.StatusTeapot) // too late: the first counts
		_, _ = io.Copy(w, resp.Body)
	}))
	for _, tc := range []struct{ request, want string }{
		{"GET /dated HTTP/1.1\r\nHost: x\r\n\r\n",
			"HTTP/1.1 201 Created\r\nx-odd:  v \r\nDate: Sat, 28 Nov 2026 03:00:00 GMT\r\nX-Handler: set\r\nContent-Length: 2\r\n\r\nok"},
		{"GET /undated HTTP/1.1\r\nHost: x\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Handler: set\r\nDate: \r\nContent-Length: 2\r\n\r\nok"},
		{"GET /undated HTTP/1.0\r\nHost: x\r\n\r\n",
			"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Handler: set\r\nDate: \r\nContent-Length: 2\r\n\r\nok"},
	} {
		c := dial(t, addr)
		c.send(tc.request)
		_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got []byte
		for !strings.HasSuffix(string(got), "\r\n\r\nok") {
			b, err := c.br.ReadByte()
			if err != nil {
				t.Fatalf("%q: after %q: %v", tc.request, got, err)
			}
			got = append(got, b)
		}
		// The server's own Date is today's: where it is wanted ("Date: "),
		// its value is not compared.
		text := string(got)
		if strings.Contains(tc.want, "Date: \r\n") {
			text = anyDate.ReplaceAllString(text, "Date: \r\n")
		}
		if text != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.request, text, tc.want)
		}
	}
}
