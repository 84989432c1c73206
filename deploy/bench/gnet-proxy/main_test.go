package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// serve runs the proxy over upstreams on a free loopback port until the
// test ends, and returns its address.
func serve(t *testing.T, upstreams ...string) string {
	t.Helper()
	addr := freeAddr(t)
	p, err := newProxy(upstreams)
	if err != nil {
		t.Fatal(err)
	}
	p.booted = make(chan gnet.Engine, 1)
	go func() { _ = gnet.Run(p, "tcp://"+addr, gnet.WithMulticore(true)) }()
	var eng gnet.Engine
	select {
	case eng = <-p.booted:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not start")
	}
	t.Cleanup(func() { _ = eng.Stop(context.Background()) })
	return addr
}

func helloServer(t *testing.T, name string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// dial connects to addr, with a deadline for the test's reads, until the
// test ends.
func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return c, bufio.NewReader(c)
}

func send(t *testing.T, c net.Conn, requests string) {
	t.Helper()
	if _, err := io.WriteString(c, requests); err != nil {
		t.Fatal(err)
	}
}

// readBody reads the next answer from r and returns its body.
func readBody(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func TestRoundRobinOverKeptAliveConnections(t *testing.T) {
	c, r := dial(t, serve(t, helloServer(t, "a"), helloServer(t, "b")))
	var got []string
	for i := range 6 {
		send(t, c, fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
		got = append(got, readBody(t, r))
	}
	want := "a /0,b /1,a /2,b /3,a /4,b /5"
	if strings.Join(got, ",") != want {
		t.Errorf("answers %q, want %q", strings.Join(got, ","), want)
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	c, r := dial(t, serve(t, helloServer(t, "a")))
	send(t, c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"a /1", "a /2"} {
		if body := readBody(t, r); body != want {
			t.Errorf("answer %q, want %q", body, want)
		}
	}
}

func TestClientClosedWhenUpstreamRefuses(t *testing.T) {
	c, _ := dial(t, serve(t, freeAddr(t)))
	send(t, c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read %d bytes, %v: want the connection closed", n, err)
	}
}
