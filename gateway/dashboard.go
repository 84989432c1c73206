package gateway

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hopgate/hopgate/discovery"
)

// The dashboard is plain HTML, CSS and JavaScript embedded in the binary:
// no build step, no external asset. It polls /api/dashboard (routes,
// instances, rates, discovery) and /api/traces (recent traces of a route,
// from Jaeger) on the admin listener.
//
//go:embed dashboard
var dashboardFiles embed.FS

// DashboardDoc is the JSON document served at /api/dashboard: /routes with
// recent rates and latencies, and what the page needs to know besides.
type DashboardDoc struct {
	Time      time.Time      `json:"time"`
	Ready     bool           `json:"ready"`
	Index     uint64         `json:"index"`
	Discovery *DashDiscovery `json:"discovery,omitempty"`
	Routes    []DashRoute    `json:"routes"`
	// Traces is true when the gateway knows where Jaeger is.
	Traces   bool   `json:"traces"`
	JaegerUI string `json:"jaeger_ui,omitempty"`
	// Metrics is false when the gateway runs without metrics (no rates).
	Metrics bool `json:"metrics"`
}

// DashDiscovery is /routes' discovery state plus the snapshot's age and
// the Consul error count.
type DashDiscovery struct {
	DiscoveryDoc
	// ConsulIndex is the index of the last snapshot discovery built; the
	// table's index (DashboardDoc.Index) is the last one that changed
	// something.
	ConsulIndex        uint64   `json:"consul_index"`
	Errors             uint64   `json:"errors"`
	SnapshotAgeSeconds *float64 `json:"snapshot_age_seconds,omitempty"`
	LastContactSeconds *float64 `json:"last_contact_seconds,omitempty"`
}

// DashRoute is a route with its recent rate and p99.
type DashRoute struct {
	RouteDoc
	Rate      Rate           `json:"rate"`
	Instances []DashInstance `json:"instances"`
}

// DashInstance is an instance with its recent rate and p99 on the route.
type DashInstance struct {
	InstanceDoc
	Ejected bool `json:"ejected"`
	Rate    Rate `json:"rate"`
}

func dashboardView(gw *Gateway, opts AdminOptions, now time.Time) DashboardDoc {
	var st *discovery.Status
	if opts.Discovery != nil {
		s := opts.Discovery()
		st = &s
	}
	rv := routesView(gw, st, now)
	doc := DashboardDoc{Time: now.UTC(), Ready: rv.Ready, Index: rv.Index, Routes: []DashRoute{},
		Traces: opts.JaegerQuery != "", Metrics: gw.metrics != nil}
	if doc.Traces {
		doc.JaegerUI = jaegerUI(opts)
	}
	if rv.Discovery != nil {
		d := &DashDiscovery{DiscoveryDoc: *rv.Discovery, ConsulIndex: st.Index, Errors: st.Errors}
		if !st.LastContact.IsZero() {
			s := now.Sub(st.LastContact).Seconds()
			d.LastContactSeconds = &s
		}
		doc.Discovery = d
	}
	if m := gw.metrics; m != nil {
		if b := m.built.Load(); b != 0 {
			s := now.Sub(time.Unix(0, b)).Seconds()
			if doc.Discovery == nil {
				doc.Discovery = &DashDiscovery{}
			}
			doc.Discovery.SnapshotAgeSeconds = &s
		}
	}

	// Rates come from the metrics' histograms: the routes in rv are those
	// of the table read here, in the same order.
	routes := gw.Table().Routes()
	if m := gw.metrics; m != nil {
		m.rateMu.Lock()
		defer m.rateMu.Unlock()
	}
	for i, rd := range rv.Routes {
		dr := DashRoute{RouteDoc: rd, Instances: make([]DashInstance, 0, len(rd.Instances))}
		var r *Route
		if i < len(routes) && routes[i].Name == rd.Route {
			r = routes[i]
		}
		if r != nil && r.state.metrics != nil {
			dr.Rate = sampleRate(&r.state.metrics.rate, r.state.metrics.duration, now)
		}
		for j, in := range rd.Instances {
			di := DashInstance{InstanceDoc: in, Ejected: in.EjectedUntil != nil}
			if r != nil && j < len(r.Endpoints) && r.Endpoints[j].Instance.ID == in.ID {
				if um := r.upstreams[r.Endpoints[j]]; um != nil {
					di.Rate = sampleRate(&um.rate, um.duration.load(), now)
				}
			}
			dr.Instances = append(dr.Instances, di)
		}
		doc.Routes = append(doc.Routes, dr)
	}
	return doc
}

func registerDashboard(mux *http.ServeMux, gw *Gateway, opts AdminOptions) {
	static, err := fs.Sub(dashboardFiles, "dashboard")
	if err != nil {
		panic(err) // the embedded directory is part of the build
	}
	page, err := fs.ReadFile(static, "index.html")
	if err != nil {
		panic(err)
	}
	secure := func(h http.Header) {
		// Everything is same-origin: the page may load nothing else.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(page)
	})
	files := http.StripPrefix("/dashboard/", http.FileServerFS(static))
	mux.HandleFunc("GET /dashboard/", func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /api/dashboard", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, dashboardView(gw, opts, time.Now()))
	})

	service := opts.JaegerService
	if service == "" {
		service = os.Getenv("OTEL_SERVICE_NAME") // what the spans were exported as
	}
	if service == "" {
		service = "hopgate"
	}
	jc := &jaegerClient{base: strings.TrimSuffix(opts.JaegerQuery, "/"), service: service,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}}
	mux.HandleFunc("GET /api/traces", func(w http.ResponseWriter, r *http.Request) {
		if jc.base == "" {
			writeJSON(w, http.StatusNotFound, TracesDoc{Traces: []TraceDoc{},
				Error: "no Jaeger query API configured: start the gateway with -jaeger-query http://HOST:16686"})
			return
		}
		limit := 5
		if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 {
			limit = min(n, maxTraces)
		}
		traces, err := jc.traces(r.Context(), r.URL.Query().Get("route"), limit, jaegerUI(opts))
		doc := TracesDoc{JaegerUI: jaegerUI(opts), Traces: traces}
		if err != nil {
			doc.Traces, doc.Error = []TraceDoc{}, err.Error()
			writeJSON(w, http.StatusBadGateway, doc)
			return
		}
		writeJSON(w, http.StatusOK, doc)
	})
}

// jaegerUI is where trace links point.
func jaegerUI(opts AdminOptions) string {
	if opts.JaegerUI != "" {
		return strings.TrimSuffix(opts.JaegerUI, "/")
	}
	return strings.TrimSuffix(opts.JaegerQuery, "/")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
