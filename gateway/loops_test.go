//go:build linux

package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hopgate/hopgate/discovery"
)

// The event-loop data path's own promises. Its HTTP behaviour is the
// edge tests' (forEachServer runs them on the loops too) and, with
// -event-loops, the whole package's.

// newLoopHarness serves snap on event loops as newEdgeHarness does; it
// returns the server, its address and its spans.
func newLoopHarness(t *testing.T, snap *discovery.Snapshot) (*PublicServer, string, *tracetest.SpanRecorder) {
	t.Helper()
	h := newEdgeHarness(t, snap, roundRobinSettings(), DefaultServerSettings, PublicOptions{EventLoops: true})
	if !h.srv.EventLoops() {
		t.Fatal("the public server is not on event loops")
	}
	return h.srv, h.addr, h.spans
}

// Requests the loops serve, requests they hand over before they start
// (a body) and requests they hand over at their answer (chunked, or
// longer than a loop relays) go on one connection, pipelined, and are
// answered in order, each whole, each with one trace.
func TestLoopsHandOverInOrder(t *testing.T) {
	long := strings.Repeat("x", loopMaxAnswer+1)
	snap := scriptedAnswersKeepAlive(t, map[string]string{
		"/a":       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nc\r\n0\r\n\r\n",
		"/long":    "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(long)) + "\r\n\r\n" + long,
		"/post":    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\np",
	})
	_, addr, spans := newLoopHarness(t, snap)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	send := func(s string) {
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(c)
	read := func(want string) {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer for %q: %v", want, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != want {
			t.Fatalf("answer %q (%v), want %q", trim(string(body)), err, trim(want))
		}
	}
	// Pipelined: the second waits for the first's answer, on the loop.
	send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
	read("a")
	read("c")
	// The chunked answer moved the connection off the loop; it stays
	// served there, long answers and bodies included.
	send("GET /long HTTP/1.1\r\nHost: x\r\n\r\nPOST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	read(long)
	read("p")
	read("a")
	// A new connection starts on the loop; a long answer hands it over.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c, br = c2, bufio.NewReader(c2)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	send("GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
	read(long)

	servers := 0
	for _, s := range spans.Ended() {
		if s.SpanKind().String() == "server" {
			servers++
		}
	}
	if servers != 6 {
		t.Errorf("%d server spans for 6 requests, want one each", servers)
	}
}

// The loops reuse a connection's request state from one request to the
// next: nothing of one request's head reaches the next one's.
func TestLoopsKeepRequestsApart(t *testing.T) {
	rec := newTestBackend(t, "app-1")
	_, addr, _ := newLoopHarness(t, edgeSnapshot(rec, "/"))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i, head := range []string{
		"GET /one HTTP/1.1\r\nHost: x\r\nX-First: 1\r\nAccept: a/one\r\n\r\n",
		"GET /two HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if rec.count() != 2 {
		t.Fatalf("the backend saw %d requests, want 2", rec.count())
	}
	second := rec.last()
	if second.URL.Path != "/two" {
		t.Fatalf("the last request the backend saw was %s", second.URL.Path)
	}
	for _, name := range []string{"X-First", "Accept"} {
		if v, ok := second.Header[name]; ok {
			t.Errorf("the second request carried the first one's %s: %q", name, v)
		}
	}
}

func trim(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

// scriptedAnswersKeepAlive is scriptedAnswers over kept-alive
// connections: each request on a connection is answered in turn.
func scriptedAnswersKeepAlive(t *testing.T, answers map[string]string) *discovery.Snapshot {
	addr, _ := scriptedUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			a, ok := answers[req.URL.Path]
			if !ok {
				a = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
			}
			if _, err := io.WriteString(c, a); err != nil {
				return
			}
		}
	})
	return snapshot(&discovery.Service{Name: "app", Instances: []discovery.Instance{instance("app-1", portOf(t, addr), "/")}})
}

// Shutdown on the loops lets the request in flight finish, even one that
// moves to h1 on the way, then closes the connections; Drain before it
// has answers close their connection.
func TestLoopsDrainAndShutdown(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	addr, _ := scriptedUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			answer := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
			if req.URL.Path == "/slow" {
				close(arrived)
				<-release
				// Not the loops' to relay: the request moves to h1
				// after Shutdown began, and is still served.
				answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
			}
			if _, err := io.WriteString(c, answer); err != nil {
				return
			}
		}
	})
	snap := snapshot(&discovery.Service{Name: "app", Instances: []discovery.Instance{instance("app-1", portOf(t, addr), "/")}})
	srv, gwAddr, _ := newLoopHarness(t, snap)

	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Get("http://" + gwAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Close {
		t.Fatal("an answer before Drain closes its connection")
	}
	srv.Drain()
	resp, err = client.Get("http://" + gwAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !resp.Close {
		t.Error("an answer after Drain keeps its connection, want Connection: close")
	}

	slow := make(chan error, 1)
	go func() {
		resp, err := client.Get("http://" + gwAddr + "/slow")
		if err == nil {
			var body []byte
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && string(body) != "ok" {
				err = io.ErrUnexpectedEOF
			}
		}
		slow <- err
	}()
	// Shutdown waits for the slow request, which ends once released.
	select {
	case <-arrived:
	case err := <-slow:
		t.Fatalf("the slow request ended before it reached the instance: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("the request in flight at Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", gwAddr, time.Second); err == nil {
		t.Error("the listener still accepts after Shutdown")
	}
}

// Many clients at once, each on its own connection, mixing what the
// loops serve with what they hand over at every point (before the
// request, at the answer, on an instance's failure), some leaving mid-
// request and instances closing their connections: every answer read is
// whole and right, and the server serves on after.
func TestLoopsUnderChurn(t *testing.T) {
	upstream := func(name string, resets bool) discovery.Instance {
		addr, _ := scriptedUpstream(t, func(c net.Conn, br *bufio.Reader) {
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				var answer string
				switch req.URL.Path {
				case "/chunked":
					answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
				case "/close":
					answer = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
				case "/reset":
					if resets {
						return // no answer: the connection closes
					}
					answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
				case "/slow":
					time.Sleep(20 * time.Millisecond)
					answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
				default:
					answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
				}
				if _, err := io.WriteString(c, answer); err != nil || req.URL.Path == "/close" {
					return
				}
			}
		})
		return instance(name, portOf(t, addr), "/")
	}
	snap := snapshot(&discovery.Service{Name: "app", Instances: []discovery.Instance{upstream("a", true), upstream("b", false)}})
	_, addr, _ := newLoopHarness(t, snap)

	requests := []string{
		"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /close HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
	}
	deadline := time.Now().Add(2 * time.Second)
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		go func() {
			var err error
			for i := w; time.Now().Before(deadline) && err == nil; i++ {
				err = churn(addr, requests, i)
			}
			errs <- err
		}()
	}
	for w := 0; w < 16; w++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	resp, err := http.Get("http://" + addr + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after the churn: %s", resp.Status)
	}
}

// churn sends a few requests on one connection, pipelining some and
// leaving early on some, and checks every answer it reads.
func churn(addr string, requests []string, seed int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		req := requests[(seed*7+i*3)%len(requests)]
		if _, err := io.WriteString(c, req); err != nil {
			return err
		}
		if (seed+i)%11 == 0 {
			return nil // leave with the request in flight
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("%q: %w", strings.Fields(req)[1], err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
			return fmt.Errorf("%q: %s %q (%v)", strings.Fields(req)[1], resp.Status, body, err)
		}
		if resp.Close {
			return nil
		}
	}
	return nil
}

// A client whose connection fails while its answer is written, inside
// the instance connection's callback, ends its request there: gnet then
// closes the client at once, and its OnClose closes the instance's
// connection. That close must wait for the callback's own Close action:
// gnet closes by fd, and a second close could take a newer connection on
// the same fd. The order only happens inside one epoll batch, so this
// drives the callbacks by hand, with gnet's part scripted.
func TestLoopsNeverCloseUnderACallback(t *testing.T) {
	snap := snapshot(&discovery.Service{Name: "app", Instances: []discovery.Instance{instance("app-1", 1, "/")}})
	h := newEdgeHarness(t, snap, roundRobinSettings(), DefaultServerSettings, PublicOptions{EventLoops: true})
	s := h.srv.srv.(*loopServer)
	el := &scriptedLoop{}
	client := &scriptedConn{loop: el, in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")}
	s.OnOpen(client)
	l := client.ctx.(*loopClient).loop
	// A kept-alive connection to the instance, so nothing is dialled.
	addr := h.gw.Table().Match("x", "/").Endpoints[0].Addr
	up := &scriptedConn{loop: el}
	up.ctx = &loopUpstream{loop: l, addr: addr, conn: up}
	l.idle[addr] = []gnet.Conn{up}

	if a := s.OnTraffic(client); a != gnet.None {
		t.Fatalf("the request's callback returned %v", a)
	}
	if !strings.HasPrefix(string(up.out), "GET / HTTP/1.1\r\n") {
		t.Fatalf("sent to the instance: %q", up.out)
	}
	up.in = []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	client.write = func([]byte) (int, error) {
		err := errors.New("connection reset by peer")
		s.OnClose(client, err) // as gnet does when a write fails
		return 0, err
	}
	if a := s.OnTraffic(up); a != gnet.Close {
		t.Errorf("the answer's callback returned %v, want Close", a)
	}
	for _, c := range el.closed {
		if c == up {
			t.Error("the instance's connection was closed under its own callback")
		}
	}
	if n := len(h.spans.Ended()); n != 2 {
		t.Errorf("%d spans ended, want the request's two, once", n)
	}
}

// scriptedLoop is a gnet.EventLoop that records what it is asked to
// close; a scriptedConn, a gnet.Conn over byte slices.
type scriptedLoop struct {
	gnet.EventLoop
	closed []gnet.Conn
}

func (l *scriptedLoop) Close(c gnet.Conn) error {
	l.closed = append(l.closed, c)
	return nil
}

type scriptedConn struct {
	gnet.Conn
	loop    *scriptedLoop
	ctx     any
	in, out []byte
	write   func([]byte) (int, error) // when set, in place of appending to out
}

func (c *scriptedConn) EventLoop() gnet.EventLoop { return c.loop }
func (c *scriptedConn) Context() any              { return c.ctx }
func (c *scriptedConn) SetContext(ctx any)        { c.ctx = ctx }
func (c *scriptedConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
}
func (c *scriptedConn) Peek(int) ([]byte, error) { return c.in, nil }
func (c *scriptedConn) InboundBuffered() int     { return len(c.in) }
func (c *scriptedConn) OutboundBuffered() int    { return 0 }

func (c *scriptedConn) Discard(n int) (int, error) {
	c.in = c.in[n:]
	return n, nil
}

func (c *scriptedConn) Write(p []byte) (int, error) {
	if c.write != nil {
		return c.write(p)
	}
	c.out = append(c.out, p...)
	return len(p), nil
}
