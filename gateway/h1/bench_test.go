package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/hopgate/hopgate/gateway/internal/cputime"
)

// BenchmarkServer is a request and its answer on kept-alive loopback
// connections, 32 per CPU at once, served by this package and by
// net/http with the same handler: the server's own cost per request, side
// by side. The clients' work (writing requests, parsing answers) is the
// same in both; cpu-ns/op is the whole process's CPU time per request.
func BenchmarkServer(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		_, _ = io.WriteString(w, "hello")
	})
	for _, srv := range []struct {
		name  string
		serve func(net.Listener) (stop func())
	}{
		{"h1", func(ln net.Listener) func() {
			s := &Server{Handler: h}
			go s.Serve(ln)
			return func() { s.Close() }
		}},
		{"net-http", func(ln net.Listener) func() {
			s := &http.Server{Handler: h}
			go s.Serve(ln)
			return func() { s.Close() }
		}},
	} {
		b.Run(srv.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer srv.serve(ln)()
			req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
			b.ReportAllocs()
			b.SetParallelism(32)
			before := cputime.Process()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
						b.Errorf("status %d, %v", resp.StatusCode, err)
						return
					}
				}
			})
			b.ReportMetric(float64(cputime.Process()-before)/float64(b.N), "cpu-ns/op")
		})
	}
}
