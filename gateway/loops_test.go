//go:build linux

package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
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
