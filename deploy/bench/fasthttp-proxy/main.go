// Command fasthttp-proxy is the bench's floor for a Go proxy: a round
// robin over the upstreams built on fasthttp, whose server and client
// parse into reused byte buffers and allocate next to nothing per request.
// It routes nothing, retries nothing, adds no forwarding headers, keeps no
// metrics and checks nothing but what fasthttp checks: it measures what
// Go's runtime and the kernel cost on this machine, for hopgate's rows to
// be read against. It is its own module so that hopgate does not depend on
// fasthttp.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "`address` to serve on")
	upstreams := flag.String("upstreams", "", "comma-separated upstream `host:port` list")
	flag.Parse()
	if *upstreams == "" {
		fmt.Fprintln(os.Stderr, "fasthttp-proxy: -upstreams is required")
		os.Exit(2)
	}
	var clients []*fasthttp.HostClient
	for _, addr := range strings.Split(*upstreams, ",") {
		clients = append(clients, &fasthttp.HostClient{Addr: addr, MaxConns: 1024})
	}
	var next atomic.Uint64
	handler := func(ctx *fasthttp.RequestCtx) {
		c := clients[next.Add(1)%uint64(len(clients))]
		if err := c.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}
	if err := fasthttp.ListenAndServe(*listen, handler); err != nil {
		fmt.Fprintln(os.Stderr, "fasthttp-proxy:", err)
		os.Exit(1)
	}
}
