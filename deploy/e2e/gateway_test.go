package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery/consultest"
)

func TestGatewayDrainsOnSIGTERM(t *testing.T) {
	s := newStack(t, false)
	ports := consultest.FreePorts(t, 2)
	s.public = "127.0.0.1:" + strconv.Itoa(ports[0])
	s.admin = "127.0.0.1:" + strconv.Itoa(ports[1])
	s.gateway = startProc(t, "gateway", filepath.Join(binDir, "hopgate"), s.env("hopgate"),
		"-listen", s.public, "-admin", s.admin, "-drain", "2s")
	slow := s.startHello("-latency", "1500ms")
	s.waitInstances(30*time.Second, slow)

	// A request in flight when the signal arrives must finish.
	inflight := make(chan error, 1)
	go func() {
		code, _, err := s.get("/")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		inflight <- err
	}()
	consultest.Eventually(t, 10*time.Second, "request in flight at the hello", func() error {
		doc, err := s.routes()
		if err != nil {
			return err
		}
		if doc.Routes[0].Inflight != 1 {
			return fmt.Errorf("inflight %d", doc.Routes[0].Inflight)
		}
		return nil
	})
	s.gateway.signal(syscall.SIGTERM)

	// While draining: not ready, still serving, and asking keep-alive
	// clients to go.
	consultest.Eventually(t, 5*time.Second, "readyz fails while draining", func() error {
		resp, err := s.client.Get("http://" + s.admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	resp, err := s.client.Get("http://" + s.public + "/")
	if err != nil {
		t.Fatalf("request during the drain: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("during the drain: status %d, Connection: close %v; want 200 and close", resp.StatusCode, resp.Close)
	}
	if err := <-inflight; err != nil {
		t.Errorf("the request in flight at SIGTERM failed: %v", err)
	}
	if code := s.gateway.wait(20 * time.Second); code != 0 {
		t.Errorf("gateway exited %d after SIGTERM, want 0", code)
	}
}

func TestGatewayServesHTTP2OverTLSAndH2C(t *testing.T) {
	s := newStack(t, false)
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	ports := consultest.FreePorts(t, 3)
	tlsAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	s.public = "127.0.0.1:" + strconv.Itoa(ports[1])
	s.admin = "127.0.0.1:" + strconv.Itoa(ports[2])
	s.gateway = startProc(t, "gateway-h2c", filepath.Join(binDir, "hopgate"), s.env("hopgate"),
		"-listen", s.public, "-admin", s.admin, "-h2c")
	tlsAdmin := freeAddr(t)
	startProc(t, "gateway-tls", filepath.Join(binDir, "hopgate"), s.env("hopgate"),
		"-listen", tlsAddr, "-admin", tlsAdmin, "-tls-cert", cert, "-tls-key", key)
	a := s.startHello()
	s.waitInstances(30*time.Second, a)

	h2 := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	consultest.Eventually(t, 30*time.Second, "HTTP/2 over TLS through the gateway", func() error {
		return expectProto(&http.Client{Transport: h2}, "https://"+tlsAddr+"/", "HTTP/2.0")
	})
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	if err := expectProto(&http.Client{Transport: h2c}, "http://"+s.public+"/", "HTTP/2.0"); err != nil {
		t.Error(err)
	}
}

func expectProto(c *http.Client, url, proto string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != proto {
		return fmt.Errorf("%s: %s %d %q, want %s 200", url, resp.Proto, resp.StatusCode, body, proto)
	}
	return nil
}

// selfSigned writes a throwaway certificate for 127.0.0.1.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "hopgate test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestAdminTokenOffLoopback(t *testing.T) {
	s := newStack(t, false)
	ports := consultest.FreePorts(t, 2)
	s.public = "127.0.0.1:" + strconv.Itoa(ports[0])
	s.admin = "127.0.0.1:" + strconv.Itoa(ports[1])
	// Bound to every interface, the admin API demands its token.
	s.gateway = startProc(t, "gateway", filepath.Join(binDir, "hopgate"),
		append(s.env("hopgate"), "HOPGATE_ADMIN_TOKEN=sesame"),
		"-listen", s.public, "-admin", "0.0.0.0:"+strconv.Itoa(ports[1]))
	consultest.Eventually(t, 20*time.Second, "admin /readyz answers without a token", func() error {
		resp, err := http.Get("http://" + s.admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", 200},
		{"/routes", "", 401},
		{"/routes", "Bearer wrong", 401},
		{"/routes", "Bearer sesame", 200},
		{"/metrics", "", 401},
		{"/", "", 401},
		{"/routes", "Basic " + base64.StdEncoding.EncodeToString([]byte("me:sesame")), 200},
		{"/routes", "Basic " + base64.StdEncoding.EncodeToString([]byte("me:wrong")), 401},
	} {
		req, _ := http.NewRequest("GET", "http://"+s.admin+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.auth, resp.StatusCode, tc.want)
		}
	}
	// And the public listener never serves the admin API.
	if resp, err := http.Get("http://" + s.public + "/routes"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("public /routes = %d, want 404 (no route)", resp.StatusCode)
		}
	}
}
