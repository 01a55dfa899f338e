// Package kubernetes holds the manifests of deploy/kubernetes and their
// test: every manifest decoded strictly into the Kubernetes API types (an
// unknown or misspelled field fails), the objects' references to each
// other checked (labels, ports, the ConfigMap, the Secret, Redis), the
// container's arguments parsed by the binary's own flag parser
// (serve --dry-run) and its policy by `ratelimiter config validate`, and
// the Dockerfile's build producing a static binary. It is a module of its
// own, so the product's go.mod does not carry the Kubernetes API.
package kubernetes

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// root is the repository's root, from this directory.
const root = "../.."

// objects are the manifests' objects, decoded.
type objects struct {
	deployments     map[string]*appsv1.Deployment
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	pdbs            map[string]*policyv1.PodDisruptionBudget
	serviceMonitors map[string]*monitoringv1.ServiceMonitor
}

// kustomization is the part of kustomize's Kustomization these manifests
// use, decoded strictly like the rest.
type kustomization struct {
	v1.TypeMeta `json:",inline"`
	Resources   []string `json:"resources"`
}

// load decodes every resource the kustomization lists, strictly.
func load(t *testing.T) *objects {
	t.Helper()
	var k kustomization
	strict(t, "kustomization.yaml", read(t, "kustomization.yaml"), &k)
	if k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: kind %q", k.Kind)
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	if got, want := slices.Sorted(slices.Values(k.Resources)), files; !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, files %v: every manifest listed, no other", got, want)
	}
	o := &objects{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, serviceMonitors: map[string]*monitoringv1.ServiceMonitor{}}
	for _, f := range k.Resources {
		for i, doc := range bytes.Split(read(t, f), []byte("\n---\n")) {
			where := fmt.Sprintf("%s (document %d)", f, i+1)
			var tm v1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var name string
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				name = decode(t, where, doc, o.deployments)
			case "v1 Service":
				name = decode(t, where, doc, o.services)
			case "v1 ConfigMap":
				name = decode(t, where, doc, o.configMaps)
			case "v1 Secret":
				name = decode(t, where, doc, o.secrets)
			case "policy/v1 PodDisruptionBudget":
				name = decode(t, where, doc, o.pdbs)
			case "monitoring.coreos.com/v1 ServiceMonitor":
				name = decode(t, where, doc, o.serviceMonitors)
			default:
				t.Fatalf("%s: %s %s: no type for it in this test", where, tm.APIVersion, tm.Kind)
			}
			if name == "" {
				t.Errorf("%s: no metadata.name", where)
			}
		}
	}
	return o
}

// object is a Kubernetes API object type whose pointer has a name.
type object[T any] interface {
	*T
	GetName() string
}

// decode decodes doc strictly into a new T, files it in m by name, and
// returns the name.
func decode[T any, P object[T]](t *testing.T, where string, doc []byte, m map[string]*T) string {
	t.Helper()
	v := new(T)
	strict(t, where, doc, v)
	name := P(v).GetName()
	m[name] = v
	return name
}

func read(t *testing.T, f string) []byte {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// strict decodes doc into v, failing on an unknown or duplicate field.
func strict(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

// Every manifest decodes strictly, and what refers to what exists: the
// Service, the PodDisruptionBudget and the ServiceMonitor select the
// pods or the Service; their ports are the container's; the probes are
// /readyz and /healthz; the policy is the ConfigMap mounted as a directory
// (so its updates reach the files and hot reload follows them); the admin
// token comes from the Secret; the container runs as the image's non-root
// user, within a grace period longer than its shutdown timeout.
func TestManifests(t *testing.T) {
	var probe appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replcas: 3\n"), &probe); err == nil {
		t.Fatal("strict decoding accepted a misspelled field")
	}
	o := load(t)
	d := o.deployments["ratelimiter"]
	if d == nil {
		t.Fatal("no Deployment ratelimiter")
	}
	pod := labels.Set(d.Spec.Template.Labels)
	sel, err := v1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(pod) {
		t.Errorf("the Deployment's selector %v does not select its pods %v (%v)", d.Spec.Selector, pod, err)
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(d.Spec.Template.Spec.Containers))
	}
	c := d.Spec.Template.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	flags := flagValues(c.Args)
	for name, flag := range map[string]string{"http": "--listen", "grpc": "--grpc-listen", "rls": "--rls-listen", "admin": "--admin-listen"} {
		if want := ":" + strconv.Itoa(int(ports[name])); flags[flag] != want {
			t.Errorf("container port %s is %d, but %s=%q", name, ports[name], flag, flags[flag])
		}
	}
	for probe, want := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || ports[probe.HTTPGet.Port.String()] == 0 {
			t.Errorf("probe %+v, want an HTTP GET of %s on a named container port", probe, want)
		}
	}
	// The policy: a ConfigMap mounted as a directory, --config inside it.
	var mount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if strings.HasPrefix(flags["--config"], m.MountPath+"/") {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || mount.SubPath != "" {
		t.Fatalf("--config=%s is not in a volume mounted as a directory (%+v): a subPath mount never sees the ConfigMap's updates", flags["--config"], c.VolumeMounts)
	}
	var cm *corev1.ConfigMap
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == mount.Name && v.ConfigMap != nil {
			cm = o.configMaps[v.ConfigMap.Name]
		}
	}
	file := strings.TrimPrefix(flags["--config"], mount.MountPath+"/")
	if cm == nil || cm.Data[file] == "" {
		t.Fatalf("--config=%s: no ConfigMap in the manifests has %s", flags["--config"], file)
	}
	// The admin token: from the Secret's key.
	var token string
	for _, e := range c.Env {
		if e.Name == "RATELIMITER_ADMIN_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			if s := o.secrets[ref.Name]; s != nil {
				token = s.StringData[ref.Key]
			}
		}
	}
	if len(token) < 16 {
		t.Errorf("RATELIMITER_ADMIN_TOKEN is not a Secret's key of at least 16 bytes (%q)", token)
	}
	// Non-root, as the image's USER; a grace period past --shutdown-timeout.
	sc := d.Spec.Template.Spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || strconv.FormatInt(*sc.RunAsUser, 10) != dockerUser(t) {
		t.Errorf("pod security context %+v, want runAsNonRoot and the image's user %s", sc, dockerUser(t))
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("the container's root filesystem is writable")
	}
	shutdown, err := time.ParseDuration(flags["--shutdown-timeout"])
	if err != nil || d.Spec.Template.Spec.TerminationGracePeriodSeconds == nil ||
		time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds)*time.Second <= shutdown {
		t.Errorf("terminationGracePeriodSeconds must exceed --shutdown-timeout %q", flags["--shutdown-timeout"])
	}

	// The Service, the PDB and the ServiceMonitor.
	svc := o.services["ratelimiter"]
	if svc == nil || !labels.SelectorFromSet(svc.Spec.Selector).Matches(pod) {
		t.Fatalf("Service ratelimiter does not select the pods")
	}
	svcPorts := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = true
		if ports[p.TargetPort.String()] == 0 {
			t.Errorf("Service port %s targets %q, not a container port", p.Name, p.TargetPort.String())
		}
		if p.Name == "admin" {
			t.Error("the Service exposes the admin port")
		}
	}
	pdb := o.pdbs["ratelimiter"]
	if pdb == nil {
		t.Fatal("no PodDisruptionBudget")
	}
	if s, err := v1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !s.Matches(pod) {
		t.Errorf("the PodDisruptionBudget does not select the pods")
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() >= int(*d.Spec.Replicas) {
		t.Errorf("the PodDisruptionBudget allows all %d replicas down", *d.Spec.Replicas)
	}
	sm := o.serviceMonitors["ratelimiter"]
	if sm == nil {
		t.Fatal("no ServiceMonitor")
	}
	if s, err := v1.LabelSelectorAsSelector(&sm.Spec.Selector); err != nil || !s.Matches(labels.Set(svc.Labels)) {
		t.Errorf("the ServiceMonitor does not select Service ratelimiter")
	}
	for _, e := range sm.Spec.Endpoints {
		if !svcPorts[e.Port] || e.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %s%s: want a Service port and /metrics", e.Port, e.Path)
		}
	}

	// Redis: --redis-addrs names the example's Service and port.
	host, port, _ := strings.Cut(flags["--redis-addrs"], ":")
	rs := o.services[host]
	if rs == nil || len(rs.Spec.Ports) != 1 || strconv.Itoa(int(rs.Spec.Ports[0].Port)) != port {
		t.Errorf("--redis-addrs=%s is not the Redis Service of the manifests", flags["--redis-addrs"])
	} else if rd := o.deployments[host]; rd == nil || !labels.SelectorFromSet(rs.Spec.Selector).Matches(labels.Set(rd.Spec.Template.Labels)) {
		t.Errorf("Service %s selects no Redis pod", host)
	} else if !slices.Contains(rd.Spec.Template.Spec.Containers[0].Args, "noeviction") {
		t.Errorf("the example Redis may evict the limiter's keys: want --maxmemory-policy noeviction")
	}
}

// The container's arguments, as the Deployment gives them to the image's
// entrypoint, parse with the binary's own flags and pass its checks
// (serve --dry-run, with the ConfigMap's policy at the --config path and
// the Secret's token in the environment), and the policy validates.
func TestContainerArgsAndPolicy(t *testing.T) {
	o := load(t)
	bin := build(t)
	d := o.deployments["ratelimiter"]
	c := d.Spec.Template.Spec.Containers[0]
	if len(c.Command) != 0 {
		t.Errorf("command %q replaces the image's entrypoint: give args only", c.Command)
	}
	flags := flagValues(c.Args)
	cm := o.configMaps["ratelimiter-config"]
	policy := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(policy, []byte(cm.Data[filepath.Base(flags["--config"])]), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "config", "validate", policy).CombinedOutput(); err != nil {
		t.Fatalf("ratelimiter config validate of the ConfigMap's policy: %v\n%s", err, out)
	}
	args := slices.Clone(c.Args)
	for i, a := range args {
		if strings.HasPrefix(a, "--config=") {
			args[i] = "--config=" + policy
		}
	}
	cmd := exec.Command(bin, append(args, "--dry-run")...)
	cmd.Env = []string{"RATELIMITER_ADMIN_TOKEN=" + o.secrets["ratelimiter-admin"].StringData["token"]}
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "dry run: flags and configuration are valid") {
		t.Fatalf("the container's arguments %q: %v\n%s", args, err, out)
	}
	// And a misspelled flag would have been caught.
	cmd = exec.Command(bin, "serve", "--dry-run", "--redis-adrs=x:1")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("a misspelled flag passed: %s", out)
	}
}

// The Dockerfile: two stages; the binary built static (its build command
// run here: no dynamic loader, no shared library); the final stage a
// distroless base with no RUN (no shell needed), a numeric non-root USER,
// an exec-form ENTRYPOINT.
func TestDockerfile(t *testing.T) {
	bin := build(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%v)", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v", libs)
	}
	stages := dockerStages(t)
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2 (build, run)", len(stages))
	}
	final := stages[1]
	if !strings.HasPrefix(final[0], "FROM gcr.io/distroless/static") {
		t.Errorf("final stage %q: want a distroless static base", final[0])
	}
	var entry string
	for _, l := range final {
		switch {
		case strings.HasPrefix(l, "RUN "):
			t.Errorf("the final stage runs %q: it has no shell", l)
		case strings.HasPrefix(l, "ENTRYPOINT "):
			entry = strings.TrimPrefix(l, "ENTRYPOINT ")
		}
	}
	if u := dockerUser(t); u == "" || u == "0" {
		t.Errorf("USER %q: want a numeric non-root user", u)
	}
	if entry != `["/ratelimiter"]` {
		t.Errorf("ENTRYPOINT %s, want the exec form [\"/ratelimiter\"]", entry)
	}
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// build runs the Dockerfile's build command once, with the output path
// changed, and returns the binary.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() { built, buildErr = buildBinary(t) })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func buildBinary(t *testing.T) (string, error) {
	var cmdline string
	for _, l := range dockerStages(t)[0] {
		if strings.HasPrefix(l, "RUN ") && strings.Contains(l, "go build") {
			cmdline = strings.TrimPrefix(l, "RUN ")
		}
	}
	fields := shellFields(cmdline)
	if len(fields) < 3 || fields[0] != "CGO_ENABLED=0" || fields[1] != "go" || fields[2] != "build" {
		return "", fmt.Errorf("Dockerfile build %q: want CGO_ENABLED=0 go build ...", cmdline)
	}
	dir, err := os.MkdirTemp("", "ratelimiter-image-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "ratelimiter")
	args := slices.Clone(fields[2:])
	for i := range args {
		if args[i] == "-o" && i+1 < len(args) {
			args[i+1] = bin
		}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built != "" {
		os.RemoveAll(filepath.Dir(built))
	}
	os.Exit(code)
}

// shellFields splits a command line as a shell does for the Dockerfile's
// simple commands: at spaces outside double quotes, quotes removed.
func shellFields(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, any := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, any = !quoted, true
		case r == ' ' && !quoted:
			if any {
				out = append(out, cur.String())
			}
			cur.Reset()
			any = false
		default:
			cur.WriteRune(r)
			any = true
		}
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}

// dockerStages are the Dockerfile's instructions, comments dropped and
// continuation lines joined, split at each FROM.
func dockerStages(t *testing.T) [][]string {
	t.Helper()
	var stages [][]string
	sc := bufio.NewScanner(bytes.NewReader(read(t, filepath.Join(root, "Dockerfile"))))
	var cur string
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			cur += strings.TrimSuffix(l, `\`) + " "
			continue
		}
		l, cur = cur+l, ""
		if strings.HasPrefix(l, "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], l)
		}
	}
	return stages
}

// dockerUser is the final stage's USER, without a group.
func dockerUser(t *testing.T) string {
	t.Helper()
	stages := dockerStages(t)
	var user string
	for _, l := range stages[len(stages)-1] {
		if u, ok := strings.CutPrefix(l, "USER "); ok {
			user, _, _ = strings.Cut(u, ":")
		}
	}
	if !regexp.MustCompile(`^[0-9]+$`).MatchString(user) {
		t.Errorf("USER %q is not numeric: Kubernetes cannot check runAsNonRoot against a name", user)
	}
	return user
}

// flagValues maps each --flag=value of args to its value.
func flagValues(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			m[k] = v
		}
	}
	return m
}
