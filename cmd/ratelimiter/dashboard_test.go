package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
)

// dashboardConfig has a namespace that denies and one with a leased limit,
// so that every family the dashboard and the alerts read has samples.
const dashboardConfig = `namespaces:
  - name: orders
    limits:
      - name: per-second
        algorithm: token_bucket
        limit: 5
        period: 1s
  - name: global
    limits:
      - name: all
        algorithm: token_bucket
        limit: 1000
        period: 1s
        lease: true
`

// metricName is a metric in a PromQL expression or a rule file.
var metricName = regexp.MustCompile(`\bratelimiter_[a-z0-9_]+\b`)

// The Grafana dashboard (deploy/grafana) and the alert rules
// (deploy/prometheus) name only metrics that a live instance exports: an
// instance on Redis with the audit on, after allowed, denied and leased
// checks, scraped over HTTP. A renamed metric fails here, not on an operator's screen.
func TestDashboardAndAlertsNameExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server on Redis")
	}
	bin := buildBinary(t)
	cfg := writeConfig(t, dashboardConfig)
	srv := redistest.Standalone(t)
	s := startServer(t, bin, "--config", cfg, "--store", "redis", "--redis-addrs", srv.Addr(), "--audit-rate", "1", "--top-k-metrics", "10")
	client := &http.Client{}
	for range 20 {
		for _, body := range []string{`{"namespace":"orders","subject":"u1"}`, `{"namespace":"global","subject":"all"}`} {
			resp, err := client.Post("http://"+s.addr+"/v1/check", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	resp, err := client.Post("http://"+s.addr+"/v1/check", "application/json", strings.NewReader(`{"namespace":"nope","subject":"u1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The audit's series appear with its first replay, 250ms on.
	var exported map[string]bool
	within(t, 10*time.Second, "the audit's first replay", func() bool {
		exported = scrapeFamilies(t, client, s.addr)
		return exported["ratelimiter_audit_over_admissions_total"] && exported["ratelimiter_top_denied"]
	})

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct{ Definition string }
		}
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "ratelimiter.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("deploy/grafana/ratelimiter.json: %v", err)
	}
	queries := 0
	check := func(where, expr string) {
		for _, name := range metricName.FindAllString(expr, -1) {
			if !exported[name] {
				t.Errorf("%s names %s, which the instance does not export", where, name)
			}
		}
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			if !metricName.MatchString(tg.Expr) && !strings.Contains(tg.Expr, "up{") {
				t.Errorf("panel %q: query %q names no metric", p.Title, tg.Expr)
			}
			check(fmt.Sprintf("panel %q", p.Title), tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		check("a dashboard variable", v.Definition)
	}
	if queries < 20 {
		t.Errorf("the dashboard has %d queries, want at least 20", queries)
	}
	rules, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(rules), "\n") {
		if l := strings.TrimSpace(line); !strings.HasPrefix(l, "#") {
			check("alerts.yaml", l)
		}
	}
	t.Logf("%d dashboard queries checked against %d exported names", queries, len(exported))
}

// scrapeFamilies returns the metric names a /metrics scrape holds: every
// family, and a histogram's _bucket, _sum and _count series.
func scrapeFamilies(t *testing.T, client *http.Client, addr string) map[string]bool {
	t.Helper()
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		names[name] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				names[base] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}
