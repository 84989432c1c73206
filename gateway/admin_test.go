package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery"
)

func adminGet(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec
}

func TestAdminReadyOnlyAfterFirstSnapshot(t *testing.T) {
	gw := New(Options{})
	admin := NewAdmin(gw, AdminOptions{})
	if rec := adminGet(t, admin, "/healthz"); rec.Code != 200 {
		t.Errorf("/healthz = %d", rec.Code)
	}
	if rec := adminGet(t, admin, "/readyz"); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before any snapshot = %d, want 503", rec.Code)
	}
	gw.Apply(snapshot()) // an empty catalog is a real, complete answer
	if rec := adminGet(t, admin, "/readyz"); rec.Code != 200 {
		t.Errorf("/readyz after a snapshot = %d, want 200", rec.Code)
	}
}

func TestAdminRoutesDocument(t *testing.T) {
	gw := New(Options{})
	gw.Apply(snapshot(&discovery.Service{Name: "api", Instances: []discovery.Instance{
		instance("api-1", 8001, "h.example/v1 strip=/v1"), instance("api-2", 8002, "h.example/v1 strip=/v1")}}))
	contact := time.Now().Add(-42 * time.Second)
	status := discovery.Status{Ready: true, Index: 7, LastContact: contact,
		LastError: errors.New("connection refused").Error(), Services: 1, Instances: 2}
	rec := adminGet(t, NewAdmin(gw, AdminOptions{Discovery: func() discovery.Status { return status }}), "/routes")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("/routes = %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var doc RoutesDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !doc.Ready || doc.Index != 7 || len(doc.Routes) != 1 {
		t.Fatalf("doc = %+v", doc)
	}
	r := doc.Routes[0]
	if r.Route != "h.example/v1" || r.Host != "h.example" || r.PathPrefix != "/v1" || r.Strip != "/v1" ||
		r.Service != "api" || len(r.Instances) != 2 || r.Instances[1].ID != "api-2" || r.Instances[1].Port != 8002 ||
		r.Instances[0].Health != "passing" {
		t.Errorf("route = %+v", r)
	}
	d := doc.Discovery
	if d == nil || !d.Stale || d.LastError != "connection refused" || d.StaleSeconds < 41 || d.StaleSeconds > 60 {
		t.Errorf("discovery = %+v, want stale for about 42s", d)
	}

	// A healthy watcher is not stale, however long the blocking query waits.
	status.LastError = ""
	rec = adminGet(t, NewAdmin(gw, AdminOptions{Discovery: func() discovery.Status { return status }}), "/routes")
	doc = RoutesDoc{}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Discovery.Stale || doc.Discovery.StaleSeconds != 0 {
		t.Errorf("healthy discovery reported stale: %+v", doc.Discovery)
	}
}
