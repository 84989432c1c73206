package gateway

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/hopgate/hopgate/discovery"
)

// AdminOptions configure the admin handler.
type AdminOptions struct {
	// Discovery reports the watcher's state for /routes; may be nil.
	Discovery func() discovery.Status
	// JaegerQuery is the base URL of Jaeger's query API (e.g.
	// http://127.0.0.1:16686), from which the dashboard reads recent
	// traces; empty: no traces on the dashboard.
	JaegerQuery string
	// JaegerService is the service name the gateway's spans are exported
	// under; $OTEL_SERVICE_NAME, else "hopgate", when empty.
	JaegerService string
	// JaegerUI is the base URL of Jaeger's UI as the browser reaches it,
	// for "open in Jaeger" links; JaegerQuery when empty.
	JaegerUI string
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every admin endpoint but /healthz and /readyz (which reveal nothing
	// and must answer probes that cannot carry secrets).
	Token string
}

// NewAdmin returns the admin API handler: /healthz, /readyz, /routes,
// /metrics and the dashboard (/, /api/dashboard, /api/traces). It belongs
// on its own listener, never the public one.
func NewAdmin(gw *Gateway, opts AdminOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !gw.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("waiting for the first discovery snapshot\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, r *http.Request) {
		var st *discovery.Status
		if opts.Discovery != nil {
			s := opts.Discovery()
			st = &s
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(routesView(gw, st, time.Now()))
	})
	if m := gw.Metrics(); m != nil {
		m.SetDiscovery(opts.Discovery)
		mux.Handle("GET /metrics", m.Handler())
	}
	registerDashboard(mux, gw, opts)
	if opts.Token == "" {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && !adminAuthorized(r, opts.Token) {
			// Basic lets a browser ask a person for the token (any user
			// name) so the dashboard works; tools send a Bearer token.
			w.Header().Set("WWW-Authenticate", `Basic realm="hopgate admin", charset="UTF-8"`)
			http.Error(w, "hopgate: admin API needs its token", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// adminAuthorized accepts "Authorization: Bearer <token>", or Basic
// credentials whose password is the token.
func adminAuthorized(r *http.Request, token string) bool {
	given := ""
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		given = b
	} else if _, pw, ok := r.BasicAuth(); ok {
		given = pw
	}
	return subtle.ConstantTimeCompare([]byte(given), []byte(token)) == 1
}

// RoutesDoc is the JSON document served at /routes.
type RoutesDoc struct {
	Ready     bool          `json:"ready"`
	Index     uint64        `json:"index"`
	Discovery *DiscoveryDoc `json:"discovery,omitempty"`
	Routes    []RouteDoc    `json:"routes"`
}

// DiscoveryDoc reports how fresh the routing table is. While Consul is
// unreachable the last good routes keep serving (fail static) and Stale says
// so; StaleSeconds is how long Consul has not answered.
type DiscoveryDoc struct {
	LastContact  time.Time `json:"last_contact"`
	Stale        bool      `json:"stale"`
	StaleSeconds float64   `json:"stale_seconds"`
	LastError    string    `json:"last_error,omitempty"`
	Services     int       `json:"services"`
	Instances    int       `json:"instances"`
}

// RouteDoc is one route in /routes.
type RouteDoc struct {
	Route      string `json:"route"`
	Host       string `json:"host,omitempty"`
	PathPrefix string `json:"path_prefix"`
	Strip      string `json:"strip,omitempty"`
	Service    string `json:"service"`
	Policy     string `json:"policy"`
	// Panic is true while too few instances are healthy and ejections are
	// ignored.
	Panic    bool  `json:"panic"`
	Inflight int64 `json:"inflight"`
	// Critical counts the service's instances Consul reports critical.
	Critical int `json:"critical"`
	// Counts are totals since the route first appeared.
	Counts    CountsDoc     `json:"counts"`
	Instances []InstanceDoc `json:"instances"`
}

// CountsDoc is what resilience did on a route.
type CountsDoc struct {
	Retries         int64 `json:"retries"`
	Ejections       int64 `json:"ejections"`
	BudgetExhausted int64 `json:"retry_budget_exhausted"`
	Panics          int64 `json:"panics"`
}

// InstanceDoc is one upstream of a route.
type InstanceDoc struct {
	ID      string `json:"id"`
	Node    string `json:"node"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	Health  string `json:"health"`
	Weight  int    `json:"weight"`
	// Inflight is the number of requests open to the instance.
	Inflight int64 `json:"inflight"`
	// EjectedUntil is set while passive health keeps the instance out.
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
}

func routesView(gw *Gateway, st *discovery.Status, now time.Time) RoutesDoc {
	t := gw.Table()
	doc := RoutesDoc{Ready: gw.Ready(), Index: t.Index(), Routes: []RouteDoc{}}
	if st != nil {
		d := &DiscoveryDoc{
			LastContact: st.LastContact,
			LastError:   st.LastError,
			Services:    st.Services,
			Instances:   st.Instances,
		}
		// A quiet blocking query may go minutes without an answer, so
		// silence alone is not staleness: a failed query is.
		if st.LastError != "" {
			d.Stale = true
			if !st.LastContact.IsZero() {
				d.StaleSeconds = now.Sub(st.LastContact).Seconds()
			}
		}
		doc.Discovery = d
	}
	for _, r := range t.Routes() {
		rd := RouteDoc{Route: r.Name, Host: r.Host, PathPrefix: r.PathPrefix, Strip: r.Strip,
			Service: r.Service, Policy: r.policy.balance.Policy, Panic: r.state.panic.Load(),
			Inflight: r.state.inflight.Load(), Critical: r.Unroutable,
			Counts: CountsDoc{
				Retries:         r.state.counts.Retries.Load(),
				Ejections:       r.state.counts.Ejections.Load(),
				BudgetExhausted: r.state.counts.BudgetExhausted.Load(),
				Panics:          r.state.counts.Panics.Load(),
			},
			Instances: make([]InstanceDoc, 0, len(r.Endpoints))}
		for _, ep := range r.Endpoints {
			in := ep.Instance
			doc := InstanceDoc{ID: in.ID, Node: in.Node, Address: in.Address, Port: in.Port,
				Health: string(in.Health), Weight: ep.Weight, Inflight: ep.Stats.Inflight()}
			if ep.Stats.Ejected(now) {
				until := ep.Stats.EjectedUntil()
				doc.EjectedUntil = &until
			}
			rd.Instances = append(rd.Instances, doc)
		}
		doc.Routes = append(doc.Routes, rd)
	}
	return doc
}
