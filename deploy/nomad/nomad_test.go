// Package nomad_test checks the Nomad job files of deploy/nomad. No Nomad
// binary can be had here, so the jobs are parsed (hcl/v2) and checked
// against a schema of the Nomad jobspec blocks they use, not run: unknown
// or missing blocks and attributes, undeclared variables and malformed
// runtime interpolations (${attr.*}, ${node.*}, ${NOMAD_*}) are errors.
package nomad_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

var ctyString = cty.String

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// block is the schema of one kind of block: its attributes (true when
// required), its nested blocks, and how many labels it takes.
type block struct {
	labels    int
	attrs     map[string]bool
	blocks    map[string]*block
	anyAttrs  bool              // env, meta: any attribute names
	byDriver  map[string]*block // config: the schema depends on the task's driver
	unique    bool              // at most one per parent
	mustExist bool              // at least one per parent
}

func attrs(required []string, optional ...string) map[string]bool {
	m := map[string]bool{}
	for _, a := range required {
		m[a] = true
	}
	for _, a := range optional {
		m[a] = false
	}
	return m
}

// The subset of Nomad's jobspec (HCL2) that hopgate's jobs may use, with
// every attribute Nomad accepts on those blocks.
var jobspec = func() *block {
	constraint := &block{attrs: attrs(nil, "attribute", "operator", "value")}
	restart := &block{unique: true, attrs: attrs(nil, "attempts", "delay", "interval", "mode", "render_templates")}
	update := &block{unique: true, attrs: attrs(nil, "max_parallel", "health_check", "min_healthy_time",
		"healthy_deadline", "progress_deadline", "auto_revert", "auto_promote", "canary", "stagger")}
	meta := &block{unique: true, anyAttrs: true}
	port := &block{labels: 1, attrs: attrs(nil, "static", "to", "host_network", "ignore_collision")}
	network := &block{attrs: attrs(nil, "mode", "hostname"), blocks: map[string]*block{
		"port": port,
		"dns":  {unique: true, attrs: attrs(nil, "servers", "searches", "options")},
	}}
	resources := &block{unique: true, attrs: attrs(nil, "cpu", "cores", "memory", "memory_max", "secrets"),
		blocks: map[string]*block{"device": {labels: 1, attrs: attrs(nil, "count")}}}
	template := &block{attrs: attrs([]string{"destination"}, "data", "source", "change_mode", "change_signal",
		"env", "perms", "uid", "gid", "splay", "left_delimiter", "right_delimiter", "error_on_missing_key"),
		blocks: map[string]*block{"wait": {unique: true, attrs: attrs(nil, "min", "max")}}}
	docker := &block{unique: true, mustExist: true, attrs: attrs([]string{"image"}, "args", "command", "entrypoint",
		"network_mode", "ports", "hostname", "dns_servers", "work_dir", "init", "privileged", "cap_add",
		"cap_drop", "force_pull", "volumes", "labels", "pids_limit", "readonly_rootfs", "security_opt",
		"ulimit", "sysctl", "extra_hosts", "userns_mode", "ipc_mode", "pid_mode", "shm_size", "tty",
		"interactive", "image_pull_timeout", "oom_score_adj", "runtime", "storage_opt"),
		blocks: map[string]*block{
			"auth":    {unique: true, attrs: attrs(nil, "username", "password", "email", "server_address", "helper")},
			"logging": {unique: true, attrs: attrs(nil, "type", "driver", "config")},
			"mount":   {attrs: attrs(nil, "type", "target", "source", "readonly")},
		}}
	rawExec := &block{unique: true, mustExist: true, attrs: attrs([]string{"command"}, "args", "pid_mode", "ipc_mode",
		"cap_add", "cap_drop", "work_dir", "oom_score_adj", "cgroup_v1_override", "cgroup_v2_override", "denied_envvars")}
	task := &block{labels: 1, mustExist: true,
		attrs: attrs([]string{"driver"}, "user", "kill_timeout", "kill_signal", "leader", "shutdown_delay", "kind"),
		blocks: map[string]*block{
			"config":     {byDriver: map[string]*block{"docker": docker, "raw_exec": rawExec}},
			"env":        {unique: true, anyAttrs: true},
			"meta":       meta,
			"resources":  resources,
			"template":   template,
			"constraint": constraint,
			"restart":    restart,
			"logs":       {unique: true, attrs: attrs(nil, "max_files", "max_file_size", "disabled")},
			"artifact": {attrs: attrs([]string{"source"}, "destination", "mode", "options", "headers", "chown"),
				blocks: map[string]*block{"options": {unique: true, anyAttrs: true}}},
		}}
	group := &block{labels: 1, mustExist: true, attrs: attrs(nil, "count", "shutdown_delay", "stop_after_client_disconnect", "max_client_disconnect"),
		blocks: map[string]*block{
			"task":           task,
			"network":        network,
			"constraint":     constraint,
			"restart":        restart,
			"update":         update,
			"meta":           meta,
			"ephemeral_disk": {unique: true, attrs: attrs(nil, "migrate", "size", "sticky")},
			"reschedule": {unique: true, attrs: attrs(nil, "attempts", "interval", "delay", "delay_function",
				"max_delay", "unlimited")},
		}}
	job := &block{labels: 1, unique: true, mustExist: true,
		attrs: attrs(nil, "datacenters", "type", "priority", "region", "namespace", "node_pool", "all_at_once"),
		blocks: map[string]*block{
			"group":      group,
			"update":     update,
			"constraint": constraint,
			"meta":       meta,
		}}
	variable := &block{labels: 1, attrs: attrs(nil, "type", "default", "description", "sensitive"),
		blocks: map[string]*block{"validation": {attrs: attrs([]string{"condition", "error_message"})}}}
	return &block{blocks: map[string]*block{"job": job, "variable": variable, "locals": {unique: true, anyAttrs: true}}}
}()

func (b *block) schema() *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for name, req := range b.attrs {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: name, Required: req})
	}
	for name, nb := range b.blocks {
		labels := make([]string, nb.labels)
		for i := range labels {
			labels[i] = "name"
		}
		s.Blocks = append(s.Blocks, hcl.BlockHeaderSchema{Type: name, LabelNames: labels})
	}
	return s
}

// check validates body against b and returns every problem found.
func check(body hcl.Body, b *block, where string, driver string) hcl.Diagnostics {
	if b.byDriver != nil {
		nb, ok := b.byDriver[driver]
		if !ok {
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Unchecked driver",
				Detail: fmt.Sprintf("%s: no schema for the config of driver %q", orTop(where), driver), Subject: body.MissingItemRange().Ptr()}}
		}
		b = nb
	}
	if b.anyAttrs {
		_, diags := body.JustAttributes()
		return diags
	}
	content, diags := body.Content(b.schema())
	counts := map[string]int{}
	for _, blk := range content.Blocks {
		if counts[blk.Type]++; counts[blk.Type] == 2 && b.blocks[blk.Type].unique {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate block",
				Detail:  fmt.Sprintf("%s: a second %q block, at most one allowed", orTop(where), blk.Type),
				Subject: blk.DefRange.Ptr()})
		}
	}
	for name, nb := range b.blocks {
		if nb.mustExist && counts[name] == 0 {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Missing block",
				Detail: fmt.Sprintf("%s: a %q block is required", orTop(where), name), Subject: body.MissingItemRange().Ptr()})
		}
	}
	// A task's config is checked against its driver's schema.
	if d, ok := content.Attributes["driver"]; ok {
		v, vd := d.Expr.Value(nil)
		if vd.HasErrors() || !v.Type().Equals(ctyString) {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Driver not a literal",
				Detail: orTop(where) + ": driver must be a literal string", Subject: d.Range.Ptr()})
		} else {
			driver = v.AsString()
		}
	}
	for _, blk := range content.Blocks {
		name := where + "." + blk.Type
		if len(blk.Labels) > 0 {
			name += fmt.Sprintf("[%q]", blk.Labels[0])
		}
		diags = append(diags, check(blk.Body, b.blocks[blk.Type], name, driver)...)
	}
	return diags
}

func orTop(where string) string {
	if where == "" {
		return "top level"
	}
	return strings.TrimPrefix(where, ".")
}

// nodeAttr matches the Nomad client attributes and node fields the jobs may
// interpolate at run time.
var (
	nodeAttr = regexp.MustCompile(`^attr\.(unique\.network\.ip-address|unique\.hostname|kernel\.name|kernel\.version|cpu\.arch|os\.name|os\.version|nomad\.version|consul\.version|driver\.[a-z_]+)$`)
	nodeVar  = regexp.MustCompile(`^node\.(unique\.id|unique\.name|datacenter|region|class|pool)$`)
	nomadEnv = regexp.MustCompile(`^NOMAD_(PORT|IP|ADDR|HOST_PORT|HOST_IP|HOST_ADDR)_([A-Za-z0-9_-]+)$|^NOMAD_(ALLOC_ID|ALLOC_INDEX|ALLOC_NAME|ALLOC_DIR|TASK_DIR|SECRETS_DIR|TASK_NAME|GROUP_NAME|JOB_NAME|JOB_ID|DC|REGION|NAMESPACE|CPU_LIMIT|MEMORY_LIMIT)$`)
)

// checkReferences reports variables used but not declared, runtime
// interpolations that are not well-formed, and ${NOMAD_PORT_x} of ports no
// group declares.
func checkReferences(f *hcl.File) hcl.Diagnostics {
	body := f.Body.(*hclsyntax.Body)
	declared := map[string]bool{}
	ports := map[string]bool{}
	var typeExprs []hcl.Range // a variable's type = string is no reference
	var walk func(b *hclsyntax.Body)
	walk = func(b *hclsyntax.Body) {
		for _, blk := range b.Blocks {
			if blk.Type == "variable" && len(blk.Labels) == 1 {
				declared[blk.Labels[0]] = true
				if a := blk.Body.Attributes["type"]; a != nil {
					typeExprs = append(typeExprs, a.Expr.Range())
				}
			}
			if blk.Type == "port" && len(blk.Labels) == 1 {
				ports[blk.Labels[0]] = true
			}
			walk(blk.Body)
		}
	}
	walk(body)

	var diags hcl.Diagnostics
	_ = hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
		tr, ok := n.(*hclsyntax.ScopeTraversalExpr)
		if !ok || slices.ContainsFunc(typeExprs, func(r hcl.Range) bool { return r.Overlaps(tr.SrcRange) }) {
			return nil
		}
		path, ok := traversalPath(tr.Traversal)
		rng := tr.SrcRange
		bad := func(summary, detail string) {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &rng})
		}
		if !ok {
			bad("Malformed reference", fmt.Sprintf("%q: only name.name... references are allowed", path))
			return nil
		}
		root, rest, _ := strings.Cut(path, ".")
		switch {
		case root == "var":
			name, _, _ := strings.Cut(rest, ".")
			if !declared[name] {
				bad("Undeclared variable", fmt.Sprintf("var.%s is used but no variable %q block declares it", name, name))
			}
		case root == "local":
		case root == "attr":
			if !nodeAttr.MatchString(path) {
				bad("Malformed node attribute", fmt.Sprintf("${%s} is not a Nomad client attribute this check knows (e.g. ${attr.unique.network.ip-address})", path))
			}
		case root == "node":
			if !nodeVar.MatchString(path) {
				bad("Malformed node variable", fmt.Sprintf("${%s} is not a Nomad node variable (node.unique.id, node.datacenter...)", path))
			}
		case root == "meta":
			if rest == "" {
				bad("Malformed meta reference", "${meta} needs a key: ${meta.key}")
			}
		case strings.HasPrefix(root, "NOMAD_"):
			m := nomadEnv.FindStringSubmatch(path)
			if m == nil {
				bad("Unknown runtime variable", fmt.Sprintf("${%s} is not a Nomad runtime variable", path))
			} else if m[2] != "" && !ports[m[2]] {
				bad("Undeclared port", fmt.Sprintf("${%s} names port %q, which no network block declares", path, m[2]))
			}
		default:
			bad("Unknown reference", fmt.Sprintf("${%s}: neither var.*, local.*, attr.*, node.*, meta.* nor NOMAD_*", path))
		}
		return nil
	})
	return diags
}

// traversalPath renders a traversal of names as a.b.c; ok is false when it
// has index steps or splats.
func traversalPath(tr hcl.Traversal) (string, bool) {
	parts := []string{tr.RootName()}
	for _, step := range tr[1:] {
		a, ok := step.(hcl.TraverseAttr)
		if !ok {
			return strings.Join(parts, ".") + "[...]", false
		}
		parts = append(parts, a.Name)
	}
	return strings.Join(parts, "."), true
}

// checkJob parses and checks one job file's source.
func checkJob(name string, src []byte) (*hcl.File, hcl.Diagnostics) {
	p := hclparse.NewParser()
	f, diags := p.ParseHCL(src, name)
	if diags.HasErrors() {
		return nil, diags
	}
	diags = append(diags, check(f.Body, jobspec, "", "")...)
	diags = append(diags, checkReferences(f)...)
	return f, diags
}

func jobFiles(t *testing.T) []string {
	files, err := filepath.Glob("*.nomad.hcl")
	if err != nil || len(files) < 4 {
		t.Fatalf("job files: %v %v, want hello and hopgate, docker and raw_exec", files, err)
	}
	return files
}

func TestNomadJobsMatchJobspec(t *testing.T) {
	p := hclparse.NewParser()
	for _, file := range jobFiles(t) {
		t.Run(file, func(t *testing.T) {
			f, diags := p.ParseHCLFile(file)
			if !diags.HasErrors() {
				diags = append(diags, check(f.Body, jobspec, "", "")...)
				diags = append(diags, checkReferences(f)...)
			}
			for _, d := range diags {
				t.Errorf("%s", d)
			}
		})
	}
}

// The deployment properties the README promises, read from the jobs.
func TestNomadJobsDeployProperly(t *testing.T) {
	p := hclparse.NewParser()
	for _, file := range jobFiles(t) {
		t.Run(file, func(t *testing.T) {
			f, diags := p.ParseHCLFile(file)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			body := f.Body.(*hclsyntax.Body)
			job := only(t, body, "job")
			group := only(t, job.Body, "group")
			taskBlk := only(t, group.Body, "task")
			cfg := only(t, taskBlk.Body, "config")
			if only(t, job.Body, "update").Body.Attributes["max_parallel"] == nil {
				t.Error("update block without max_parallel")
			}
			if slices.ContainsFunc(group.Body.Blocks, func(b *hclsyntax.Block) bool { return b.Type == "service" }) {
				t.Error("a Nomad service block: backends register themselves")
			}
			env := only(t, taskBlk.Body, "env")
			consul := env.Body.Attributes["CONSUL_HTTP_ADDR"]
			if consul == nil || !strings.Contains(string(consul.SrcRange.SliceBytes(mustRead(t, file))), "${attr.unique.network.ip-address}:8500") {
				t.Error("CONSUL_HTTP_ADDR must point at the node's own agent, ${attr.unique.network.ip-address}:8500")
			}
			killTimeout := literalString(t, taskBlk.Body.Attributes["kill_timeout"])
			kill, err := time.ParseDuration(killTimeout)
			if err != nil {
				t.Fatalf("kill_timeout %q: %v", killTimeout, err)
			}
			args := stringList(cfg.Body.Attributes["args"])
			switch job.Labels[0] {
			case "hello":
				if n := varDefault(t, body, "count"); n != "3" || literalOrVar(group.Body.Attributes["count"]) != "var.count" {
					t.Errorf("hello count: default %s, want 3 through var.count", n)
				}
				i := slices.Index(args, "-drain")
				if i < 0 || i+1 >= len(args) {
					t.Fatalf("hello args %q without -drain", args)
				}
				drain, err := time.ParseDuration(args[i+1])
				if err != nil || kill <= drain+5*time.Second {
					t.Errorf("kill_timeout %v must exceed the drain %v plus time to finish requests", kill, drain)
				}
			case "hopgate":
				if v := literalString(t, job.Body.Attributes["type"]); v != "system" {
					t.Errorf("gateway job type %q, want system", v)
				}
				if kill <= 15*time.Second {
					t.Errorf("kill_timeout %v must exceed the gateway's -shutdown-timeout (15s)", kill)
				}
				for _, port := range []string{"http", "admin"} {
					found := false
					for _, nb := range group.Body.Blocks {
						for _, pb := range nb.Body.Blocks {
							if nb.Type == "network" && pb.Type == "port" && pb.Labels[0] == port && pb.Body.Attributes["static"] != nil {
								found = true
							}
						}
					}
					if !found {
						t.Errorf("gateway port %q is not static", port)
					}
				}
			default:
				t.Errorf("unexpected job %q", job.Labels[0])
			}
		})
	}
}

func only(t *testing.T, body *hclsyntax.Body, typ string) *hclsyntax.Block {
	t.Helper()
	var found []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %q blocks, want 1", len(found), typ)
	}
	return found[0]
}

func literalString(t *testing.T, a *hclsyntax.Attribute) string {
	t.Helper()
	if a == nil {
		t.Fatal("attribute missing")
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() || !v.Type().Equals(ctyString) {
		t.Fatalf("%s: want a literal string", a.Name)
	}
	return v.AsString()
}

func literalOrVar(a *hclsyntax.Attribute) string {
	if a == nil {
		return ""
	}
	if tr, ok := a.Expr.(*hclsyntax.ScopeTraversalExpr); ok {
		s, _ := traversalPath(tr.Traversal)
		return s
	}
	return ""
}

// stringList returns the literal elements of a list (interpolated ones as
// their source text).
func stringList(a *hclsyntax.Attribute) []string {
	if a == nil {
		return nil
	}
	tuple, ok := a.Expr.(*hclsyntax.TupleConsExpr)
	if !ok {
		return nil
	}
	var out []string
	for _, e := range tuple.Exprs {
		if v, diags := e.Value(nil); !diags.HasErrors() && v.Type().Equals(ctyString) {
			out = append(out, v.AsString())
		} else {
			out = append(out, "<interpolated>")
		}
	}
	return out
}

func varDefault(t *testing.T, body *hclsyntax.Body, name string) string {
	t.Helper()
	for _, b := range body.Blocks {
		if b.Type == "variable" && b.Labels[0] == name {
			if d := b.Body.Attributes["default"]; d != nil {
				v, diags := d.Expr.Value(nil)
				if !diags.HasErrors() {
					return v.AsBigFloat().String()
				}
			}
		}
	}
	t.Fatalf("no default for variable %q", name)
	return ""
}

// The checker fails broken jobs, each with a message that says what and where.
func TestNomadCheckerRejectsBrokenJobs(t *testing.T) {
	valid := `
variable "image" {
  type    = string
  default = "hopgate/hello:dev"
}
job "hello" {
  group "hello" {
    network {
      port "http" {}
    }
    task "hello" {
      driver = "docker"
      config {
        image = var.image
        args  = ["-listen", ":${NOMAD_PORT_http}"]
      }
      env {
        CONSUL_HTTP_ADDR = "${attr.unique.network.ip-address}:8500"
      }
    }
  }
}
`
	if _, diags := checkJob("valid.nomad.hcl", []byte(valid)); len(diags) != 0 {
		t.Fatalf("the valid job is rejected: %v", diags)
	}
	cases := []struct{ name, from, to, want string }{
		{"unknown attribute", `driver = "docker"`, "driver = \"docker\"\n      kill_timeot = \"10s\"", `Unsupported argument; An argument named "kill_timeot" is not expected here. Did you mean "kill_timeout"?`},
		{"unknown block", `network {`, `netwrk {`, `Blocks of type "netwrk" are not expected here`},
		{"missing driver", `driver = "docker"`, ``, `The argument "driver" is required`},
		{"docker option under raw_exec", `driver = "docker"`, `driver = "raw_exec"`, `An argument named "image" is not expected here`},
		{"missing image", `image = var.image`, ``, `The argument "image" is required`},
		{"undeclared variable", `image = var.image`, `image = var.hello_image`, `var.hello_image is used but no variable "hello_image" block declares it`},
		{"malformed node attribute", `${attr.unique.network.ip-address}`, `${attr.unique.network.ip_address}`, `${attr.unique.network.ip_address} is not a Nomad client attribute`},
		{"node variable", `${attr.unique.network.ip-address}`, `${node.addr}`, `${node.addr} is not a Nomad node variable`},
		{"undeclared port", `${NOMAD_PORT_http}`, `${NOMAD_PORT_web}`, `names port "web", which no network block declares`},
		{"unknown root", `${attr.unique.network.ip-address}`, `${atr.unique.network.ip-address}`, `Unknown reference`},
		{"unclosed interpolation", `${attr.unique.network.ip-address}:8500"`, `${attr.unique.network.ip-address:8500"`, `valid.nomad.hcl:`},
		{"two jobs", `job "hello" {`, "job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      driver = \"raw_exec\"\n      config {\n        command = \"/x\"\n      }\n    }\n  }\n}\njob \"hello\" {", `at most one allowed`},
		{"no task", `task "hello" {`, `tsk "hello" {`, `a "task" block is required`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(valid, tc.from, tc.to, 1)
			if src == valid {
				t.Fatalf("case does not change the job: %q", tc.from)
			}
			_, diags := checkJob("valid.nomad.hcl", []byte(src))
			if !diags.HasErrors() {
				t.Fatalf("broken job accepted:\n%s", src)
			}
			msg := diags.Error()
			for _, d := range diags {
				msg += "\n" + d.Error()
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("diagnostics %q\nwant one containing %q", diags.Error(), tc.want)
			}
			t.Logf("%s", diags[0])
		})
	}
}
