package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// browserPath finds the browser the dashboard test drives: $CHROME_BIN, or
// Debian's chromium. Missing is a failure, never a skip: CI installs it.
func browserPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROME_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: the dashboard test drives a real headless browser. " +
		"Install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROME_BIN to a Chrome/Chromium binary.")
	return ""
}

// newBrowser starts a headless chromium for the test and returns a tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	out := &consultest.Buffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserPath(t)),
		chromedp.NoSandbox, // the tests may run as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1000),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		if t.Failed() {
			t.Logf("--- chromium output:\n%s", out.String())
		}
	})
	// Starting the browser is part of the first action: do it now, with a
	// clear message when it cannot start.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// within runs an action with a deadline, failing the test with what.
func within[T any](t *testing.T, ctx context.Context, d time.Duration, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// artifact writes a test artifact under .artifacts/ at the module root.
func artifact(t *testing.T, name string, data []byte) string {
	t.Helper()
	root, err := consultest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifact: %s", path)
	return path
}

func TestDashboardInBrowser(t *testing.T) {
	s := newStack(t, true)
	s.startGateway("-jaeger-query", "http://"+s.jaeger.query)
	a, b, c := s.startHello(), s.startHello(), s.startHello()
	s.waitInstances(30*time.Second, a, b, c)

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+s.admin+"/")); err != nil {
		t.Fatalf("loading the dashboard: %v", err)
	}

	// The routing table: route / and its three instances.
	within(t, ctx, 20*time.Second, "the dashboard shows route / with 3 instance rows",
		chromedp.Poll[bool](`document.querySelectorAll('section.route[data-route="/"] tr[data-instance]').length === 3`))
	ids := within(t, ctx, 5*time.Second, "reading instance rows",
		chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('tr[data-instance]')).map(e => e.dataset.instance)`))
	slices.Sort(ids)
	if want := sorted([]string{a, b, c}); !slices.Equal(ids, want) {
		t.Fatalf("instance rows %v, want %v", ids, want)
	}
	head := within(t, ctx, 5*time.Second, "reading the route header",
		chromedp.Evaluate[string](`document.querySelector('section.route[data-route="/"] .route-head').textContent`))
	if !strings.Contains(head, "hello") || !strings.Contains(head, "peak_ewma") {
		t.Errorf("route header %q lacks the service or the policy", head)
	}

	// Traffic, then its traces: a waterfall of the three hops (the
	// gateway's server span, its attempt, the hello's server span).
	if code, body, err := s.get("/"); err != nil || code != 200 {
		t.Fatalf("GET / = %d %q %v", code, body, err)
	}
	l := s.startLoad(2) // steady traffic, so rates and p99 show
	defer l.stop()
	within(t, ctx, 45*time.Second, "a trace waterfall with three hops renders",
		chromedp.Poll[bool](`(() => {
			const tr = document.querySelector('#trace-list li.trace');
			if (!tr) return false;
			const hops = tr.querySelectorAll('li.hop');
			return hops.length === 3 && hops[0].classList.contains('server') &&
				hops[1].classList.contains('client') && hops[2].classList.contains('backend');
		})()`, chromedp.WithPollingInterval(250*time.Millisecond)))
	link := within(t, ctx, 5*time.Second, "reading the Jaeger link",
		chromedp.Evaluate[string](`document.querySelector('#trace-list li.trace a').href`))
	if !strings.HasPrefix(link, "http://"+s.jaeger.query+"/trace/") {
		t.Errorf("trace link %q, want one into Jaeger's UI at %s/trace/", link, s.jaeger.query)
	}
	// The rates arrive within a poll or two.
	within(t, ctx, 15*time.Second, "the route shows a request rate and a p99",
		chromedp.Poll[bool](`(() => {
			const h = document.querySelector('section.route[data-route="/"] .route-head').textContent;
			return /[1-9][0-9.]* req\/s/.test(h) && /p99 [0-9.]+ ms/.test(h);
		})()`))
	l.stop()

	png := within(t, ctx, 10*time.Second, "desktop screenshot", chromedp.FullScreenshot(100))
	artifact(t, "dashboard.png", png)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
		t.Fatalf("phone viewport: %v", err)
	}
	png = within(t, ctx, 10*time.Second, "phone screenshot", chromedp.FullScreenshot(100))
	artifact(t, "dashboard-phone.png", png)
	// No horizontal scrolling of the page itself on a phone (tables may
	// scroll inside their own region).
	if wide := within(t, ctx, 5*time.Second, "page width on a phone",
		chromedp.Evaluate[bool](`document.documentElement.scrollWidth > 391`)); wide {
		t.Errorf("the dashboard scrolls sideways on a 390 px wide phone")
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 1000)); err != nil {
		t.Fatal(err)
	}

	// A hello stops: its row goes.
	s.hellos[b].signal(syscall.SIGTERM)
	within(t, ctx, 30*time.Second, b+"'s row disappears after SIGTERM",
		chromedp.Poll[bool](fmt.Sprintf(`document.querySelectorAll('tr[data-instance]').length === 2 &&
			!document.querySelector('tr[data-instance=%q]')`, b)))

	// /metrics on the same admin listener has the request series.
	resp, err := s.client.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`hopgate_requests_total{code="2xx",method="GET",route="/"}`,
		`hopgate_upstream_duration_seconds_bucket{instance="` + a} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
