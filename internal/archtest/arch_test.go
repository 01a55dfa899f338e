package archtest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/distributedratelimiter/ratelimiter"

// root is the module's root, from this package's directory.
var root = filepath.Join("..", "..")

// goList runs `go list` at the module root and returns its lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// edges is one package's direct imports: ours (relative to the module)
// and the third-party modules, each sorted.
type edges struct{ ours, third []string }

func (e edges) String() string {
	s := strings.Join(e.ours, ", ")
	if len(e.third) > 0 {
		s += " | " + strings.Join(e.third, ", ")
	}
	return s
}

// actual is the import graph of the module's packages, as go list sees it
// (test files excluded: they are not part of the layering).
func actual(t *testing.T) map[string]edges {
	modOf := map[string]string{}
	for _, l := range goList(t, "-deps", "-f", "{{.ImportPath}} {{with .Module}}{{.Path}}{{end}}", "./...") {
		if f := strings.Fields(l); len(f) == 2 {
			modOf[f[0]] = f[1]
		}
	}
	g := map[string]edges{}
	for _, l := range goList(t, "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", "./...") {
		f := strings.Fields(l)
		var e edges
		for _, imp := range f[1:] {
			switch m := modOf[imp]; {
			case strings.HasPrefix(imp, module+"/"):
				e.ours = append(e.ours, strings.TrimPrefix(imp, module+"/"))
			case m != "" && m != module && !slices.Contains(e.third, m):
				e.third = append(e.third, m)
			}
		}
		slices.Sort(e.ours)
		slices.Sort(e.third)
		g[strings.TrimPrefix(f[0], module+"/")] = e
	}
	return g
}

// documented reads the ```imports block of docs/ARCHITECTURE.md.
func documented(t *testing.T) map[string]edges {
	data, err := os.ReadFile(filepath.Join(root, "docs", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	g := map[string]edges{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "```imports":
			in = true
			continue
		case in && line == "```":
			return g
		case !in:
			continue
		}
		pkg, rest, ok := strings.Cut(line, "->")
		if !ok {
			t.Fatalf("ARCHITECTURE.md imports block: %q has no ->", line)
		}
		ours, third, _ := strings.Cut(rest, "|")
		split := func(s string) []string {
			var out []string
			for _, v := range strings.Split(s, ",") {
				if v = strings.TrimSpace(v); v != "" {
					out = append(out, v)
				}
			}
			slices.Sort(out)
			return out
		}
		g[strings.TrimSpace(pkg)] = edges{ours: split(ours), third: split(third)}
	}
	t.Fatal("docs/ARCHITECTURE.md has no closed ```imports block")
	return nil
}

// The package map in docs/ARCHITECTURE.md is the import graph, arrow for
// arrow: a new import is written down there, or this fails.
func TestArchitectureMapIsTheImportGraph(t *testing.T) {
	got, doc := actual(t), documented(t)
	if len(got) < 20 {
		t.Fatalf("go list found %d packages; the module has more than 20", len(got))
	}
	for pkg, e := range got {
		d, ok := doc[pkg]
		switch {
		case !ok:
			t.Errorf("package %s is missing from docs/ARCHITECTURE.md; its line: %s -> %v", pkg, pkg, e)
		case e.String() != d.String():
			t.Errorf("%s imports\n  %v\nbut docs/ARCHITECTURE.md says\n  %v", pkg, e, d)
		}
	}
	for pkg := range doc {
		if _, ok := got[pkg]; !ok {
			t.Errorf("docs/ARCHITECTURE.md names %s, which is not a package of the module", pkg)
		}
	}
}

// deps is everything pkg pulls in, itself excluded.
func deps(t *testing.T, pkg string) []string {
	all := goList(t, "-deps", "./"+pkg)
	return slices.DeleteFunc(all, func(p string) bool { return p == module+"/"+pkg })
}

// Imports point inward: what a package pulls in, transitively.
func TestImportsPointInward(t *testing.T) {
	redisFree := []string{"transport/httpapi", "transport/rls", "transport/headers", "middleware", "service",
		"reload", "overrides", "policy", "config", "limit", "store", "store/memstore", "store/pending", "metrics", "topk"}
	for _, pkg := range redisFree {
		for _, d := range deps(t, pkg) {
			if strings.Contains(d, "rueidis") || strings.Contains(d, "go-redis") {
				t.Errorf("%s depends on a Redis client (%s): only store/redisstore and cmd may", pkg, d)
			}
		}
	}
	for _, d := range deps(t, "service") {
		if strings.HasPrefix(d, module+"/store/") {
			t.Errorf("service depends on the store implementation %s: inject it (Guard.Fallback)", d)
		}
	}
	for _, d := range deps(t, "limit") {
		if strings.Contains(strings.SplitN(d, "/", 2)[0], ".") {
			t.Errorf("limit depends on %s: it is pure, the standard library only", d)
		}
	}
}
