package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery"
)

// testBackend is a real HTTP server standing in for one service instance:
// it records what it receives (the request as soon as its head arrives,
// the body once read) and answers "Hello from <name>", with a status and a
// delay a test can script.
type testBackend struct {
	name   string
	srv    *httptest.Server
	status atomic.Int32 // answer with this status (200 when 0)
	delay  atomic.Int64 // nanoseconds to wait before answering
	hits   atomic.Int64

	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func newTestBackend(t *testing.T, name string) *testBackend {
	b := &testBackend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.mu.Lock()
		b.reqs = append(b.reqs, r)
		b.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.body = append(b.body, string(body))
		b.mu.Unlock()
		if d := time.Duration(b.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if code := int(b.status.Load()); code != 0 {
			w.WriteHeader(code)
		}
		_, _ = io.WriteString(w, "Hello from "+b.name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// instance is the backend as a passing Consul instance carrying routes.
func (b *testBackend) instance(routes ...string) discovery.Instance {
	u, _ := url.Parse(b.srv.URL)
	port, _ := strconv.Atoi(u.Port())
	return instance(b.name, port, routes...)
}

func (b *testBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reqs)
}

func (b *testBackend) last() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.reqs) == 0 {
		return nil
	}
	return b.reqs[len(b.reqs)-1]
}
