package backend

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Probe is the `probe URL` subcommand of the hopgate and hello binaries: a
// health probe for images with no shell and no curl (Docker HEALTHCHECK,
// Nomad script checks). It GETs the URL and returns the exit code: 0 for a
// 2xx answer, 1 otherwise, 2 for bad usage; prog names the binary in its
// one-line messages.
func Probe(prog string, args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "usage: %s probe http://127.0.0.1:PORT/healthz\n", prog)
		return 2
	}
	u, err := url.Parse(args[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "%s probe: %q is not an http(s) URL\n", prog, args[0])
		return 2
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(u.String())
	if err != nil {
		fmt.Fprintf(stderr, "%s probe: %v\n", prog, err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "%s probe: %s answered %s\n", prog, u, resp.Status)
		return 1
	}
	return 0
}
