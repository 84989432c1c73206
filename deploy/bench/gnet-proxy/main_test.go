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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
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

// get sends GET path on c and returns the answer's body.
func get(t *testing.T, c net.Conn, r *bufio.Reader, path string) string {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
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
	addr := serve(t, helloServer(t, "a"), helloServer(t, "b"))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	var got []string
	for i := range 6 {
		got = append(got, get(t, c, r, fmt.Sprintf("/%d", i)))
	}
	want := "a /0,b /1,a /2,b /3,a /4,b /5"
	if strings.Join(got, ",") != want {
		t.Errorf("answers %q, want %q", strings.Join(got, ","), want)
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	addr := serve(t, helloServer(t, "a"))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []string{"a /1", "a /2"} {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Errorf("answer %q, want %q", body, want)
		}
	}
}

func TestClientClosedWhenUpstreamRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	addr := serve(t, dead)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read %d bytes, %v: want the connection closed", n, err)
	}
}
