package backend

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbeExitCodes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			return
		}
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{srv.URL + "/ok"}, 0, ""},
		{[]string{srv.URL + "/readyz"}, 1, "503"},
		{[]string{closed.URL + "/ok"}, 1, "refused"},
		{[]string{"127.0.0.1:9901/readyz"}, 2, "not an http(s) URL"},
		{nil, 2, "usage"},
		{[]string{"a", "b"}, 2, "usage"},
	} {
		var stderr bytes.Buffer
		if code := Probe("hopgate", tc.args, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("probe %q = %d %q, want %d and a message containing %q", tc.args, code, stderr.String(), tc.code, tc.msg)
		}
		if tc.code != 0 && strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("probe %q: want one line, got %q", tc.args, stderr.String())
		}
	}
}
