package main

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
)

// observeFlags are the access log and the dashboard's trace source.
type observeFlags struct {
	accessLog   bool
	jaegerQuery string
	jaegerUI    string
}

func registerObserve(fs *flag.FlagSet) *observeFlags {
	f := &observeFlags{}
	fs.BoolVar(&f.accessLog, "access-log", true, "log one info line per request (route, upstream, status, duration, attempts, trace_id); false: only at -log-level debug")
	fs.StringVar(&f.jaegerQuery, "jaeger-query", "", "base `URL` of Jaeger's query API (e.g. http://127.0.0.1:16686), read by the dashboard for recent traces; empty: no traces on the dashboard")
	fs.StringVar(&f.jaegerUI, "jaeger-ui", "", "base `URL` of Jaeger's UI as browsers reach it, for the dashboard's trace links (default: the -jaeger-query URL)")
	return f
}

func (f *observeFlags) validate() error {
	for name, v := range map[string]*string{"jaeger-query": &f.jaegerQuery, "jaeger-ui": &f.jaegerUI} {
		if *v == "" {
			continue
		}
		u, err := url.Parse(*v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			return fmt.Errorf("invalid value %q for flag -%s: want http://host:port", *v, name)
		}
		*v = strings.TrimSuffix(*v, "/")
	}
	return nil
}
