package e2e

// The Docker images and deploy/compose.yaml, run on the real engine: images
// built FROM scratch, a compose project with Consul, Jaeger, the gateway and
// scaled hellos, and the things that happen to containers (scale, stop, kill,
// a network cut). The engine is required: if `docker info` fails, these tests
// fail, they never skip.
//
// No image can be pulled here, so Consul and Jaeger run from stand-in images
// built FROM scratch from bin/consul and bin/jaeger
// (deploy/docker/*-offline.Dockerfile); compose.yaml's image variables point
// at them. Images keep distinct e2e tags and stay cached between runs (a
// label records what they were built from); everything else a test creates
// is removed by `compose down` and checked gone.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopgate/hopgate/discovery/consultest"
)

// Test image tags: distinct from `make images` (…:dev) so a test never
// replaces a person's images.
const (
	gatewayImage = "hopgate/gateway:e2e"
	helloImage   = "hopgate/hello:e2e"
	consulImage  = "hopgate/consul-offline:e2e"
	jaegerImage  = "hopgate/jaeger-offline:e2e"
	maxImageSize = 30 << 20
	inputLabel   = "hopgate.e2e.input" // hash of what an image was built from
)

var (
	imagesOnce sync.Once
	imagesErr  error
)

// requireDocker fails the test when the engine does not answer.
func requireDocker(t *testing.T) {
	t.Helper()
	out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		t.Fatalf("the Docker engine is required for this test and did not answer (`docker info`: %v): %s\n"+
			"start dockerd (or set DOCKER_HOST); these tests never skip", err, strings.TrimSpace(string(out)))
	}
}

// composeCommand is `docker compose` where the plugin exists, else
// `docker-compose`.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if exec.Command("docker-compose", "version").Run() == nil {
		return []string{"docker-compose"}
	}
	t.Fatal("neither `docker compose` (the plugin) nor `docker-compose` works: install one of them")
	return nil
}

// buildImages builds the four test images once per test run.
func buildImages(t *testing.T) {
	t.Helper()
	requireDocker(t)
	imagesOnce.Do(func() { imagesErr = doBuildImages() })
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
}

func doBuildImages() error {
	root, err := consultest.ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "hopgate-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// Static binaries, as `make build` makes them.
	for name, pkg := range map[string]string{"hopgate": "./gateway/cmd/hopgate", "hello": "./backend/cmd/hello"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, name, name), pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
		if err := copyFile("/etc/ssl/certs/ca-certificates.crt", filepath.Join(dir, name, "ca-certificates.crt")); err != nil {
			return fmt.Errorf("CA bundle for the %s image: %w", name, err)
		}
	}
	tool := func(name string) string {
		if b := os.Getenv(strings.ToUpper(name) + "_BIN"); b != "" {
			return b
		}
		return filepath.Join(root, "bin", name)
	}
	for _, name := range []string{"consul", "jaeger"} {
		ctx := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(ctx, "tmp"), 0o755); err != nil {
			return err
		}
		if err := copyFile(tool(name), filepath.Join(ctx, name)); err != nil {
			return fmt.Errorf("%s for its stand-in image (run `make tools`): %w", name, err)
		}
	}
	if err := copyFile(filepath.Join(root, "deploy", "local", "jaeger.yaml"), filepath.Join(dir, "jaeger", "jaeger.yaml")); err != nil {
		return err
	}

	for _, img := range []struct{ tag, dockerfile, ctx string }{
		{gatewayImage, "hopgate.Dockerfile", "hopgate"},
		{helloImage, "hello.Dockerfile", "hello"},
		{consulImage, "consul-offline.Dockerfile", "consul"},
		{jaegerImage, "jaeger-offline.Dockerfile", "jaeger"},
	} {
		dockerfile := filepath.Join(root, "deploy", "docker", img.dockerfile)
		sum, err := hashInputs(dockerfile, filepath.Join(dir, img.ctx))
		if err != nil {
			return err
		}
		var oldID string
		if out, err := exec.Command("docker", "image", "inspect", "-f", "{{.Id}} {{index .Config.Labels \""+inputLabel+"\"}}", img.tag).Output(); err == nil {
			id, label, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
			if label == sum {
				continue // built from exactly these inputs before
			}
			oldID = id
		}
		cmd := exec.Command("docker", "build", "-q", "-t", img.tag, "-f", dockerfile,
			"--label", inputLabel+"="+sum, "--build-arg", "VERSION=e2e", "--build-arg", "REVISION="+sum[:12],
			filepath.Join(dir, img.ctx))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("docker build %s: %v\n%s", img.tag, err, out)
		}
		if oldID != "" {
			// The previous build of this tag is now untagged: remove it
			// rather than pile up images run after run (best effort).
			_ = exec.Command("docker", "image", "rm", oldID).Run()
		}
	}
	return nil
}

// hashInputs hashes a Dockerfile and every file of its build context.
func hashInputs(dockerfile, ctx string) (string, error) {
	h := sha256.New()
	files := []string{dockerfile}
	err := filepath.WalkDir(ctx, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	for _, f := range files {
		rel, err := filepath.Rel(ctx, f)
		if err != nil || f == dockerfile {
			rel = "Dockerfile"
		}
		fmt.Fprintf(h, "%s\x00", rel)
		if st, err := os.Stat(f); err != nil || st.IsDir() {
			continue
		}
		r, err := os.Open(f)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// docker runs a docker command and returns its trimmed output.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestDockerImages(t *testing.T) {
	buildImages(t)
	for _, tc := range []struct{ image, probe string }{
		{gatewayImage, "/hopgate"},
		{helloImage, "/hello"},
	} {
		t.Run(strings.ReplaceAll(tc.image, "/", "_"), func(t *testing.T) {
			var info []struct {
				Size   int64
				Config struct {
					User        string
					Entrypoint  []string
					Labels      map[string]string
					Healthcheck struct{ Test []string }
				}
				RootFS struct{ Layers []string }
			}
			if err := json.Unmarshal([]byte(docker(t, "image", "inspect", tc.image)), &info); err != nil || len(info) != 1 {
				t.Fatalf("image inspect %s: %v", tc.image, err)
			}
			img := info[0]
			t.Logf("%s: %d bytes (%.1f MB), %d layers", tc.image, img.Size, float64(img.Size)/(1<<20), len(img.RootFS.Layers))
			if img.Size >= maxImageSize {
				t.Errorf("%s is %d bytes, want under %d", tc.image, img.Size, maxImageSize)
			}
			uid, _, _ := strings.Cut(img.Config.User, ":")
			if n, err := strconv.Atoi(uid); err != nil || n == 0 {
				t.Errorf("USER = %q, want a numeric non-root uid", img.Config.User)
			}
			for _, k := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source"} {
				if img.Config.Labels[k] == "" {
					t.Errorf("label %s missing: %v", k, img.Config.Labels)
				}
			}
			if len(img.Config.Healthcheck.Test) < 3 || img.Config.Healthcheck.Test[0] != "CMD" || img.Config.Healthcheck.Test[1] != tc.probe {
				t.Errorf("HEALTHCHECK = %q, want the binary's own probe", img.Config.Healthcheck.Test)
			}
			// The probe fails on nothing listening, and says why.
			out, err := exec.Command("docker", "run", "--rm", "--network", "none", "--entrypoint", tc.probe, tc.image,
				"probe", "http://127.0.0.1:1/").CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "probe") {
				t.Errorf("probe of a closed port: %v %q, want exit status 1 and a message", err, out)
			}
			// The CA bundle is there, for TLS to Consul or an OTLP collector.
			c := docker(t, "create", tc.image)
			defer docker(t, "rm", c)
			if out, err := exec.Command("docker", "cp", c+":/etc/ssl/certs/ca-certificates.crt", "-").Output(); err != nil || len(out) < 10000 {
				t.Errorf("CA bundle in the image: %v, %d bytes", err, len(out))
			}
		})
	}
}

// composeProject is one `compose up` of deploy/compose.yaml plus the test
// additions, under a project name of its own.
type composeProject struct {
	t       *testing.T
	cmd     []string
	files   []string
	env     []string
	name    string
	public  string // gateway, host:port on loopback
	admin   string
	consul  string
	jaegerQ string
}

func startCompose(t *testing.T) *composeProject {
	t.Helper()
	buildImages(t)
	root, err := consultest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	ports := consultest.FreePorts(t, 4)
	p := &composeProject{
		t:   t,
		cmd: composeCommand(t),
		files: []string{
			filepath.Join(root, "deploy", "compose.yaml"),
			filepath.Join(root, "deploy", "e2e", "testdata", "compose.test.yaml"),
		},
		name:    "hopgate-e2e-" + hex.EncodeToString(b[:]),
		public:  "127.0.0.1:" + strconv.Itoa(ports[0]),
		admin:   "127.0.0.1:" + strconv.Itoa(ports[1]),
		consul:  "127.0.0.1:" + strconv.Itoa(ports[2]),
		jaegerQ: "127.0.0.1:" + strconv.Itoa(ports[3]),
	}
	p.env = []string{
		"HOPGATE_IMAGE=" + gatewayImage, "HELLO_IMAGE=" + helloImage,
		"CONSUL_IMAGE=" + consulImage, "JAEGER_IMAGE=" + jaegerImage,
		"HOPGATE_PORT=" + strconv.Itoa(ports[0]), "HOPGATE_ADMIN_PORT=" + strconv.Itoa(ports[1]),
		"CONSUL_PORT=" + strconv.Itoa(ports[2]), "JAEGER_UI_PORT=" + strconv.Itoa(ports[3]),
		"HOPGATE_LOG_LEVEL=info", "HOPGATE_ADMIN_TOKEN=" + composeAdminToken,
	}
	t.Cleanup(p.down)
	p.compose("up", "-d", "--scale", "hello=3", "consul", "jaeger", "gateway", "hello")
	return p
}

// compose runs a compose command for the project.
func (p *composeProject) compose(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("%s %s: %v\n%s", strings.Join(p.cmd, " "), strings.Join(args, " "), err, out)
	}
	return out
}

func (p *composeProject) run(args ...string) (string, error) {
	full := append([]string{}, p.cmd[1:]...)
	full = append(full, "-p", p.name)
	for _, f := range p.files {
		full = append(full, "-f", f)
	}
	cmd := exec.Command(p.cmd[0], append(full, args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// down removes the project whatever happened, then checks that no
// container, network or volume of it is left.
func (p *composeProject) down() {
	t := p.t
	if t.Failed() {
		if out, err := p.run("logs", "--no-color", "--tail", "60"); err == nil {
			t.Logf("--- compose logs (last lines per container):\n%s", out)
		}
	}
	if out, err := p.run("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		t.Errorf("compose down: %v\n%s", err, out)
	}
	label := "label=com.docker.compose.project=" + p.name
	for _, what := range [][]string{
		{"ps", "-a", "-q", "--filter", label},
		{"network", "ls", "-q", "--filter", label},
		{"volume", "ls", "-q", "--filter", label},
	} {
		out, err := exec.Command("docker", what...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("after compose down, docker %s: %v %q, want nothing left", strings.Join(what, " "), err, out)
		}
	}
}

// containers returns the ids of the running containers of a service.
func (p *composeProject) containers(service string) []string {
	p.t.Helper()
	out := docker(p.t, "ps", "-q", "--no-trunc",
		"--filter", "label=com.docker.compose.project="+p.name,
		"--filter", "label=com.docker.compose.service="+service)
	return strings.Fields(out)
}

// network is the docker name of a compose network of the project.
func (p *composeProject) network(name string) string {
	// Compose v1 and v2 both name it <project>_<network>.
	return p.name + "_" + name
}

type containerInfo struct {
	State struct {
		Status    string
		StartedAt string
		ExitCode  int
		Pid       int
		Health    *struct{ Status string }
	}
	RestartCount    int
	NetworkSettings struct {
		Networks map[string]struct {
			IPAddress string
			Gateway   string
		}
	}
}

func (p *composeProject) inspect(t *testing.T, id string) containerInfo {
	t.Helper()
	var info []containerInfo
	if err := json.Unmarshal([]byte(docker(t, "inspect", id)), &info); err != nil || len(info) != 1 {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return info[0]
}

// gw is a view of the gateway for the helpers of stack_test.go.
func (p *composeProject) gw(t *testing.T) *stack {
	return &stack{t: t, public: p.public, admin: p.admin, hellos: map[string]*proc{},
		client: &http.Client{Timeout: 10 * time.Second}, adminToken: composeAdminToken}
}

// composeRoutes is /routes with instance addresses.
type composeRoutes struct {
	Discovery struct {
		Stale     bool   `json:"stale"`
		LastError string `json:"last_error"`
	} `json:"discovery"`
	Routes []struct {
		Route     string `json:"route"`
		Instances []struct {
			ID      string `json:"id"`
			Address string `json:"address"`
			Port    int    `json:"port"`
		} `json:"instances"`
	} `json:"routes"`
}

// composeAdminToken guards the gateway's admin API, which listens beyond
// loopback inside its container.
const composeAdminToken = "e2e-admin-token"

func (p *composeProject) routes() (composeRoutes, error) {
	var doc composeRoutes
	req, err := http.NewRequest("GET", "http://"+p.admin+"/routes", nil)
	if err != nil {
		return doc, err
	}
	req.Header.Set("Authorization", "Bearer "+composeAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return doc, err
	}
	defer resp.Body.Close()
	return doc, json.NewDecoder(resp.Body).Decode(&doc)
}

// instances maps instance id to registered address on route "/".
func (d composeRoutes) instances() map[string]string {
	m := map[string]string{}
	for _, r := range d.Routes {
		if r.Route == "/" {
			for _, in := range r.Instances {
				m[in.ID] = in.Address
			}
		}
	}
	return m
}

// helloIDs waits until the gateway routes "/" to exactly one instance per
// running hello container (plus extra ids), and returns container id ->
// instance id. A hello's default instance id holds its host name, which is
// the container's short id.
func (p *composeProject) helloIDs(t *testing.T, extra ...string) map[string]string {
	t.Helper()
	var byContainer map[string]string
	consultest.Eventually(t, 60*time.Second, "gateway routes to every running hello", func() error {
		doc, err := p.routes()
		if err != nil {
			return err
		}
		inst := doc.instances()
		byContainer = map[string]string{}
		for _, c := range p.containers("hello") {
			for id := range inst {
				if strings.HasPrefix(id, "hello-"+c[:12]+"-") {
					byContainer[c] = id
				}
			}
			if byContainer[c] == "" {
				return fmt.Errorf("container %s not routed; routes: %v", c[:12], inst)
			}
		}
		for _, id := range extra {
			if _, ok := inst[id]; !ok {
				return fmt.Errorf("%s not routed; routes: %v", id, inst)
			}
		}
		if len(inst) != len(byContainer)+len(extra) {
			return fmt.Errorf("routes %v, want the %d hello containers and %v", inst, len(byContainer), extra)
		}
		time.Sleep(200 * time.Millisecond)
		return nil
	})
	return byContainer
}

// reachAll sends requests through the published gateway port, from several
// clients at once, until every id has answered: whatever the balancing
// policy, every routed instance takes part.
func (p *composeProject) reachAll(t *testing.T, ids []string) {
	t.Helper()
	s := p.gw(t)
	var mu sync.Mutex
	seen := map[string]int{}
	var failure string
	all := func() bool {
		for _, id := range ids {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				code, body, err := s.get("/")
				mu.Lock()
				if err != nil || code != 200 {
					failure = fmt.Sprintf("GET / through the gateway = %d %q %v", code, body, err)
				} else {
					seen[lastWord(body)]++
				}
				done := failure != "" || all()
				mu.Unlock()
				if done {
					return
				}
			}
		})
	}
	wg.Wait()
	if failure != "" {
		t.Fatal(failure)
	}
	if !all() {
		t.Fatalf("answers came from %v, want all of %v", seen, ids)
	}
	t.Logf("answers from all %d instances: %v", len(ids), seen)
}

// busiest is the hello container that answered most of the load so far.
func busiest(l *load, hellos map[string]string) string {
	var best string
	for _, c := range slices.Sorted(maps.Keys(hellos)) {
		if best == "" || l.count(hellos[c]) > l.count(hellos[best]) {
			best = c
		}
	}
	return best
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

func TestCompose(t *testing.T) {
	p := startCompose(t)
	var hellos map[string]string // container -> instance id

	ok := t.Run("ThreeHellosJoinWithTheirContainerAddress", func(t *testing.T) {
		hellos = p.helloIDs(t)
		if len(hellos) != 3 {
			t.Fatalf("%d hellos routed, want 3", len(hellos))
		}
		doc, err := p.routes()
		if err != nil {
			t.Fatal(err)
		}
		inst := doc.instances()
		for c, id := range hellos {
			ip := p.inspect(t, c).NetworkSettings.Networks[p.network("edge")].IPAddress
			if inst[id] != ip || ip == "" {
				t.Errorf("%s registered address %q, want its container IP on edge %q", id, inst[id], ip)
			}
		}
		p.reachAll(t, values(hellos))
		// The images' HEALTHCHECKs (the binaries' own probe) pass.
		for _, c := range append(p.containers("gateway"), p.containers("hello")...) {
			consultest.Eventually(t, 45*time.Second, "container "+c[:12]+" healthy", func() error {
				if h := p.inspect(t, c).State.Health; h == nil || h.Status != "healthy" {
					time.Sleep(500 * time.Millisecond)
					return fmt.Errorf("health %+v", h)
				}
				return nil
			})
		}
	})
	if !ok {
		return
	}

	ok = t.Run("ScaleToFiveWithoutGatewayRestart", func(t *testing.T) {
		gw := p.containers("gateway")[0]
		before := p.inspect(t, gw)
		p.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "hello=5", "hello")
		hellos = p.helloIDs(t)
		if len(hellos) != 5 {
			t.Fatalf("%d hellos routed, want 5", len(hellos))
		}
		p.reachAll(t, values(hellos))
		after := p.inspect(t, gw)
		if after.State.StartedAt != before.State.StartedAt || after.RestartCount != 0 || after.State.Status != "running" {
			t.Errorf("gateway restarted: started %s -> %s, restarts %d", before.State.StartedAt, after.State.StartedAt, after.RestartCount)
		}
	})
	if !ok {
		return
	}

	t.Run("TraceHasGatewayAndHelloSpans", func(t *testing.T) {
		code, body, err := p.gw(t).get("/", "Accept", "application/json")
		var answer struct {
			TraceID string `json:"trace_id"`
		}
		if err != nil || code != 200 || json.Unmarshal([]byte(body), &answer) != nil || answer.TraceID == "" {
			t.Fatalf("GET / (JSON) = %d %q %v", code, body, err)
		}
		consultest.Eventually(t, 30*time.Second, "trace "+answer.TraceID+" in Jaeger with hopgate and hello spans", func() error {
			resp, err := http.Get("http://" + p.jaegerQ + "/api/traces/" + answer.TraceID)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var doc struct {
				Data []struct {
					Spans []struct {
						ProcessID string `json:"processID"`
					} `json:"spans"`
					Processes map[string]struct {
						ServiceName string `json:"serviceName"`
					} `json:"processes"`
				} `json:"data"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
				return fmt.Errorf("status %d: %v", resp.StatusCode, err)
			}
			if len(doc.Data) != 1 {
				time.Sleep(250 * time.Millisecond)
				return fmt.Errorf("%d traces", len(doc.Data))
			}
			perService := map[string]int{}
			for _, sp := range doc.Data[0].Spans {
				perService[doc.Data[0].Processes[sp.ProcessID].ServiceName]++
			}
			if perService["hopgate"] < 2 || perService["hello"] < 1 {
				time.Sleep(250 * time.Millisecond)
				return fmt.Errorf("spans per service %v, want 2 from hopgate and 1 from hello", perService)
			}
			return nil
		})
	})

	ok = t.Run("StopUnderLoadLosesNoRequest", func(t *testing.T) {
		s := p.gw(t)
		l := s.startLoad(4)
		defer l.stop()
		l.waitAnswers(t, 200)
		victim := busiest(l, hellos) // one that surely had traffic
		id := hellos[victim]
		start := time.Now()
		docker(t, "stop", victim) // SIGTERM: deregister, drain 2s, exit
		t.Logf("docker stop took %v", time.Since(start).Round(time.Millisecond))
		if st := p.inspect(t, victim).State; st.ExitCode != 0 {
			t.Errorf("hello exited %d after SIGTERM, want 0", st.ExitCode)
		}
		delete(hellos, victim)
		p.helloIDs(t)
		before := l.count(id)
		l.waitAnswers(t, 300)
		l.stop()
		if f := l.fail.Load(); f != 0 {
			t.Errorf("%d of %d requests failed while %s stopped: %v", f, f+l.ok.Load(), id, l.failures)
		}
		if after := l.count(id); after != before {
			t.Errorf("%s answered %d requests after it left the rotation", id, after-before)
		}
		if before == 0 {
			t.Errorf("%s never answered before it stopped: the test proved nothing", id)
		}
		t.Logf("%d requests, 0 failed", l.ok.Load())
	})
	if !ok {
		return
	}

	ok = t.Run("KillLeavesRotation", func(t *testing.T) {
		s := p.gw(t)
		l := s.startLoad(2)
		defer l.stop()
		l.waitAnswers(t, 100)
		victim := busiest(l, hellos)
		start := time.Now()
		docker(t, "kill", victim) // SIGKILL: no deregistration, the check must fail
		delete(hellos, victim)
		p.helloIDs(t)
		t.Logf("killed instance left the rotation after %v", time.Since(start).Round(100*time.Millisecond))
		l.waitAnswers(t, 200)
		l.stop()
		// Every request is an idempotent GET: one cut by the kill is
		// retried on another hello, one sent to the dead address (refused,
		// or blackholed until the 2 s connect timeout) too.
		t.Logf("%d of %d requests failed around the kill: %v", l.fail.Load(), l.fail.Load()+l.ok.Load(), l.failures)
		if f := l.fail.Load(); f != 0 {
			t.Errorf("%d idempotent requests failed around docker kill, want 0: %v", f, l.failures)
		}
	})
	if !ok {
		return
	}

	ok = t.Run("RemoteHostRegistersSharedNetworkAddress", func(t *testing.T) {
		p.compose("up", "-d", "--no-deps", "hello-remote")
		c := p.containers("hello-remote")[0]
		p.helloIDs(t, "hello-remote")
		nets := p.inspect(t, c).NetworkSettings.Networks
		wan, lan := nets[p.network("wan")], nets[p.network("remote")]
		if wan.IPAddress == "" || lan.IPAddress == "" {
			t.Fatalf("hello-remote networks: %+v", nets)
		}
		// Its default route is its own LAN (wan is internal: no route out),
		// so "the default interface" would be the wrong answer.
		pid := strconv.Itoa(p.inspect(t, c).State.Pid)
		out, err := exec.Command("nsenter", "-t", pid, "-n", "ip", "-4", "route", "show", "default").CombinedOutput()
		if err != nil {
			t.Fatalf("nsenter ip route (needs root, iproute2 and util-linux): %v\n%s", err, out)
		}
		if f := strings.Fields(string(out)); len(f) < 3 || f[2] != lan.Gateway {
			t.Fatalf("hello-remote's default route %q, want via its LAN's gateway %s", out, lan.Gateway)
		}
		doc, err := p.routes()
		if err != nil {
			t.Fatal(err)
		}
		got := doc.instances()["hello-remote"]
		t.Logf("hello-remote: remote (default route) %s, wan %s; registered %s", lan.IPAddress, wan.IPAddress, got)
		if got != wan.IPAddress {
			t.Fatalf("hello-remote registered %q, want its address toward the agent, %s on wan (not %s on its LAN)", got, wan.IPAddress, lan.IPAddress)
		}
		p.reachAll(t, append(values(hellos), "hello-remote"))
	})
	if !ok {
		return
	}

	t.Run("GatewayCutOffFromConsulServesLastRoutes", func(t *testing.T) {
		gw := p.containers("gateway")[0]
		doc, err := p.routes()
		if err != nil {
			t.Fatal(err)
		}
		known := doc.instances()
		docker(t, "network", "disconnect", p.network("control"), gw)
		// The gateway's blocking queries ride on quiet TCP connections whose
		// path just vanished: nothing tells the process but its TCP
		// keepalive probes (5 s idle, 3 probes 5 s apart), so stale shows
		// within about 20 s.
		consultest.Eventually(t, 60*time.Second, "gateway reports stale routes", func() error {
			doc, err := p.routes()
			if err != nil {
				return err
			}
			if !doc.Discovery.Stale || doc.Discovery.LastError == "" {
				return fmt.Errorf("discovery %+v", doc.Discovery)
			}
			return nil
		})
		doc, _ = p.routes()
		t.Logf("cut off: stale, last_error %q", doc.Discovery.LastError)

		// A hello joins meanwhile: Consul has it, the cut-off gateway cannot.
		p.compose("up", "-d", "--no-deps", "hello-late")
		consultest.Eventually(t, 30*time.Second, "hello-late passing in Consul", func() error {
			resp, err := http.Get("http://" + p.consul + "/v1/health/service/hello?passing=1")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var entries []struct{ Service struct{ ID string } }
			if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
				return err
			}
			for _, e := range entries {
				if e.Service.ID == "hello-late" {
					return nil
				}
			}
			return fmt.Errorf("not yet among %d passing", len(entries))
		})
		s := p.gw(t)
		seen := map[string]int{}
		for range 60 {
			code, body, err := s.get("/")
			if err != nil || code != 200 {
				t.Fatalf("cut off from Consul: GET / = %d %q %v", code, body, err)
			}
			seen[lastWord(body)]++
		}
		for id := range seen {
			if _, ok := known[id]; !ok {
				t.Errorf("cut off from Consul, an answer came from %s, not one of the last known %v", id, known)
			}
		}
		if doc, _ := p.routes(); !slices.Equal(values(doc.instances()), values(known)) {
			t.Errorf("cut off, routes changed: %v, want the last known %v", doc.instances(), known)
		}

		docker(t, "network", "connect", p.network("control"), gw)
		start := time.Now()
		consultest.Eventually(t, 45*time.Second, "gateway fresh again and routing hello-late", func() error {
			doc, err := p.routes()
			if err != nil {
				return err
			}
			if doc.Discovery.Stale {
				return fmt.Errorf("still stale: %+v", doc.Discovery)
			}
			if _, ok := doc.instances()["hello-late"]; !ok {
				return fmt.Errorf("hello-late not routed: %v", doc.instances())
			}
			return nil
		})
		t.Logf("recovered %v after reconnecting", time.Since(start).Round(100*time.Millisecond))
		p.reachAll(t, append(values(hellos), "hello-remote", "hello-late"))
	})
}
