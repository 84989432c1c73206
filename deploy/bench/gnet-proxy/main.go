// Command gnet-proxy is the bench's floor for a Go proxy built as haproxy
// is: a round robin over the upstreams on gnet's epoll event loops, one
// per CPU, with each client connection and the upstream connections it
// uses on the same loop. No goroutine per connection, no hand-off between
// goroutines, no blocking call: what it costs beside fasthttp's row is
// what Go's goroutine-per-connection networking costs.
//
// It is a measuring stick, not a proxy to deploy. It takes GET requests
// without a body, one at a time per connection, sends them on as they came
// and relays answers framed by Content-Length; anything else closes the
// connection. It routes nothing, retries nothing and checks nothing. It is
// its own module, as fasthttp-proxy is, so that no measuring stick is
// part of what hopgate builds.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/panjf2000/gnet/v2"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "`address` to serve on")
	upstreams := flag.String("upstreams", "", "comma-separated upstream `host:port` list")
	flag.Parse()
	if *upstreams == "" {
		fmt.Fprintln(os.Stderr, "gnet-proxy: -upstreams is required")
		os.Exit(2)
	}
	p, err := newProxy(strings.Split(*upstreams, ","))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gnet-proxy:", err)
		os.Exit(2)
	}
	err = gnet.Run(p, "tcp://"+*listen, gnet.WithMulticore(true), gnet.WithTCPNoDelay(gnet.TCPNoDelay))
	fmt.Fprintln(os.Stderr, "gnet-proxy:", err)
	os.Exit(1)
}

func newProxy(upstreams []string) (*proxy, error) {
	p := &proxy{}
	for _, a := range upstreams {
		addr, err := net.ResolveTCPAddr("tcp", a)
		if err != nil {
			return nil, err
		}
		p.addrs = append(p.addrs, addr)
	}
	return p, nil
}

type proxy struct {
	gnet.BuiltinEventEngine
	addrs  []net.Addr
	loops  sync.Map         // gnet.EventLoop to its *loop
	booted chan gnet.Engine // told the engine once it runs, when set (tests)
}

func (p *proxy) OnBoot(eng gnet.Engine) gnet.Action {
	if p.booted != nil {
		p.booted <- eng
	}
	return gnet.None
}

// loop is one event loop's state. Only that loop's goroutine touches it.
type loop struct {
	idle [][]gnet.Conn // kept-alive upstream connections, by upstream
	next int           // round robin
}

// client is a client connection's state.
type client struct {
	loop *loop
	busy bool // its request is at an upstream
	gone bool
}

// upstream is an upstream connection's state.
type upstream struct {
	loop    *loop // its client's, which it shares
	index   int
	client  gnet.Conn // the client waiting for the answer; nil when idle
	pending []byte    // the request to send once connected
}

// loopOf is c's loop state, looked up once per client connection.
func (p *proxy) loopOf(c gnet.Conn) *loop {
	if l, ok := p.loops.Load(c.EventLoop()); ok {
		return l.(*loop)
	}
	l := &loop{idle: make([][]gnet.Conn, len(p.addrs))}
	p.loops.Store(c.EventLoop(), l)
	return l
}

func (p *proxy) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if up, ok := c.Context().(*upstream); ok { // dialled for a request
		out := up.pending
		up.pending = nil
		return out, gnet.None
	}
	c.SetContext(&client{loop: p.loopOf(c)})
	return nil, gnet.None
}

func (p *proxy) OnClose(c gnet.Conn, _ error) gnet.Action {
	switch st := c.Context().(type) {
	case *client:
		st.gone = true
	case *upstream:
		if st.client != nil {
			_ = st.client.Close()
		}
		idle := st.loop.idle[st.index]
		for i, u := range idle {
			if u == c {
				st.loop.idle[st.index] = append(idle[:i], idle[i+1:]...)
				break
			}
		}
	}
	return gnet.None
}

func (p *proxy) OnTraffic(c gnet.Conn) gnet.Action {
	switch st := c.Context().(type) {
	case *client:
		return p.request(c, st)
	case *upstream:
		return p.answer(c, st)
	}
	return gnet.Close
}

var (
	headEnd       = []byte("\r\n\r\n")
	contentLength = []byte("\r\ncontent-length:")
)

// request sends the client's next whole request to the next upstream.
func (p *proxy) request(c gnet.Conn, st *client) gnet.Action {
	if st.busy {
		return gnet.None // the next request waits in the buffer
	}
	buf, _ := c.Peek(-1)
	end := bytes.Index(buf, headEnd)
	if end < 0 {
		return gnet.None
	}
	n := end + len(headEnd)
	l := st.loop
	i := l.next % len(p.addrs)
	l.next++
	st.busy = true
	if idle := l.idle[i]; len(idle) > 0 {
		u := idle[len(idle)-1]
		l.idle[i] = idle[:len(idle)-1]
		u.Context().(*upstream).client = c
		_, _ = u.Write(buf[:n])
		_, _ = c.Discard(n)
		return gnet.None
	}
	up := &upstream{loop: l, index: i, client: c, pending: bytes.Clone(buf[:n])}
	_, _ = c.Discard(n)
	done, err := c.EventLoop().Register(gnet.NewContext(context.Background(), up), p.addrs[i])
	if err != nil {
		return gnet.Close
	}
	go func() {
		if r := <-done; r.Err != nil {
			_ = c.Close() // the dial failed: the client is not left waiting
		}
	}()
	return gnet.None
}

// answer relays a whole answer to its client and keeps the connection.
func (p *proxy) answer(u gnet.Conn, up *upstream) gnet.Action {
	buf, _ := u.Peek(-1)
	end := bytes.Index(buf, headEnd)
	if end < 0 {
		return gnet.None
	}
	length, ok := contentLengthOf(buf[:end+2])
	if !ok {
		return gnet.Close
	}
	total := end + len(headEnd) + length
	if len(buf) < total {
		return gnet.None
	}
	c := up.client
	up.client = nil
	var st *client
	if c != nil {
		st, _ = c.Context().(*client)
	}
	if st != nil && !st.gone {
		_, _ = c.Write(buf[:total])
		st.busy = false
	}
	_, _ = u.Discard(total)
	up.loop.idle[up.index] = append(up.loop.idle[up.index], u)
	// A request that came while this one was out goes now; if it cannot,
	// the client's connection closes, not this one.
	if st != nil && !st.gone && c.InboundBuffered() > 0 && p.request(c, st) == gnet.Close {
		_ = c.Close()
	}
	return gnet.None
}

// contentLengthOf finds the Content-Length in an answer's head.
func contentLengthOf(head []byte) (int, bool) {
	for i := 0; i+len(contentLength) <= len(head); i++ {
		if !bytes.EqualFold(head[i:i+len(contentLength)], contentLength) {
			continue
		}
		rest := head[i+len(contentLength):]
		if eol := bytes.IndexByte(rest, '\r'); eol >= 0 {
			n, err := strconv.Atoi(string(bytes.TrimSpace(rest[:eol])))
			return n, err == nil && n >= 0
		}
	}
	return 0, false
}
