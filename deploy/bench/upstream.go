package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

// upstreamMain is `bench upstream -listen ADDR -name NAME`: the minimal
// backend every proxy (and the direct row) talks to, so each pays the same
// upstream cost. No tracing, no logging, no metrics: net/http and one
// fixed answer.
func upstreamMain(args []string) int {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen `address`")
	name := fs.String("name", "upstream", "`name` in the answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	body := []byte("Hello from " + *name + "\n")
	srv := &http.Server{Addr: *listen, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		_, _ = w.Write(body)
	})}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, os.Interrupt)
		<-c
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		return 1
	}
	return 0
}
