//go:build unix

package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// socketPair is a real TCP connection on loopback, the near end wrapped as
// the transport wraps what it dials.
func socketPair(t *testing.T) (*upstreamConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	near, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	far, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { near.Close(); far.Close() })
	c := &upstreamConn{conn: near}
	c.offerSocket()
	if c.raw == nil {
		t.Fatal("a TCP connection offers no socket")
	}
	return c, far
}

func TestSendThenAwaitWaitsForTheAnswer(t *testing.T) {
	c, far := socketPair(t)
	var answeredAt atomic.Int64
	go func() {
		buf := make([]byte, len("request"))
		if _, err := io.ReadFull(far, buf); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond) // a slow instance
		answeredAt.Store(time.Now().UnixNano())
		io.WriteString(far, "answer")
	}()
	if n := c.sendThenAwait([]byte("request")); n != len("request") {
		t.Fatalf("sent %d bytes, want all %d", n, len("request"))
	}
	if answeredAt.Load() == 0 {
		t.Fatal("returned before the instance answered")
	}
	got := make([]byte, len("answer"))
	if _, err := io.ReadFull(c.conn, got); err != nil || string(got) != "answer" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestSendThenAwaitEndsWhenCut(t *testing.T) {
	c, far := socketPair(t)
	got := make(chan struct{})
	go func() {
		buf := make([]byte, len("request"))
		if _, err := io.ReadFull(far, buf); err == nil {
			close(got) // and never answer
		}
	}()
	go func() {
		<-got
		c.conn.SetDeadline(aLongTimeAgo) // as the watch of the request's end does
	}()
	if n := c.sendThenAwait([]byte("request")); n != len("request") {
		t.Fatalf("sent %d bytes, want all %d", n, len("request"))
	}
	if _, err := c.conn.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("read after the cut: %v, want a timeout", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// An instance that closed an idle connection before the request: its
// close was seen (and the poller's readiness spent) before the wait, and
// the reset the request draws ends it.
func TestSendThenAwaitEndsOnAClosedConnection(t *testing.T) {
	c, far := socketPair(t)
	far.Close()
	consultest.Eventually(t, 10*time.Second, "the instance's close seen", func() error {
		if connAlive(c.conn) {
			return errors.New("connection still open")
		}
		return nil
	})
	done := make(chan int, 1)
	go func() { done <- c.sendThenAwait([]byte("request")) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting for an answer from a closed connection")
	}
	if _, err := c.conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read an answer from a closed connection")
	}
}

// A request larger than the socket takes at once goes partly by the wait's
// write and the rest by the usual one, in order.
func TestSendThenAwaitShortWrite(t *testing.T) {
	c, far := socketPair(t)
	c.conn.(*net.TCPConn).SetWriteBuffer(4 << 10)
	request := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	received := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(request))
		n, _ := io.ReadFull(far, buf)
		received <- buf[:n]
		io.WriteString(far, "answer")
	}()
	c.awaiting = true
	n, err := writer{c}.Write(request)
	c.awaiting = false
	if err != nil || n != len(request) || c.written != int64(len(request)) {
		t.Fatalf("wrote %d (counted %d) of %d: %v", n, c.written, len(request), err)
	}
	if c.sent == 0 || c.sent == len(request) {
		t.Fatalf("the wait's write sent %d of %d bytes: not the short write this test is for", c.sent, len(request))
	}
	if got := <-received; !bytes.Equal(got, request) {
		t.Fatalf("the instance got %d bytes, not the request's %d in order", len(got), len(request))
	}
	got := make([]byte, len("answer"))
	if _, err := io.ReadFull(c.conn, got); err != nil || !strings.HasPrefix(string(got), "answer") {
		t.Fatalf("read %q, %v", got, err)
	}
}
