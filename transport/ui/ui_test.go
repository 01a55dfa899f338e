package ui_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/topk"
	"github.com/distributedratelimiter/ratelimiter/transport/ui"
)

type fakeTop struct{}

func (fakeTop) Top(ns string, n int) []topk.Entry {
	if ns != "orders" {
		return []topk.Entry{}
	}
	return []topk.Entry{{Subject: "bad-client", Denied: 42}}
}
func (fakeTop) Window() time.Duration { return time.Minute }

// registry holds what an instance on Redis exports, with known values.
func registry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ratelimiter_decisions_total"}, []string{"namespace", "limit", "outcome"})
	decisions.WithLabelValues("orders", "per-minute", "allowed").Add(90)
	decisions.WithLabelValues("orders", "per-hour", "allowed").Add(5)
	decisions.WithLabelValues("orders", "per-minute", "denied").Add(10)
	decisions.WithLabelValues("_unknown", "", "denied").Add(0)
	by := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ratelimiter_decided_by_total"}, []string{"namespace", "decided_by", "outcome"})
	by.WithLabelValues("orders", "store", "allowed").Add(95)
	by.WithLabelValues("orders", "deny-cache", "denied").Add(10)
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ratelimiter_check_duration_seconds", Buckets: []float64{0.001, 0.01}}, []string{"namespace"})
	for range 3 {
		dur.WithLabelValues("orders").Observe(0.0005)
	}
	dur.WithLabelValues("orders").Observe(0.5)
	connected := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ratelimiter_store_connected"})
	connected.Set(1)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ratelimiter_config_info"}, []string{"version"})
	info.WithLabelValues("3f2a").Set(1)
	audited := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ratelimiter_audit_checks_total"}, []string{"namespace"})
	audited.WithLabelValues("orders").Add(100)
	overs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ratelimiter_audit_over_admissions_total"}, []string{"namespace", "limit", "algorithm"})
	overs.WithLabelValues("orders", "per-minute", "token_bucket").Add(3)
	overs.WithLabelValues("orders", "per-hour", "token_bucket").Add(1)
	reg.MustRegister(decisions, by, dur, connected, info, audited, overs)
	return reg
}

func TestData(t *testing.T) {
	clk := clocktest.New(time.UnixMilli(1_800_000_000_000))
	h := ui.Handler(ui.Options{Gatherer: registry(t), Top: fakeTop{}, Clock: clk})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/data", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /ui/data: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var doc ui.Doc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Time != 1_800_000_000_000 || doc.Config != "3f2a" || doc.TopWindow != "1m0s" {
		t.Errorf("time %d, config %q, top window %q", doc.Time, doc.Config, doc.TopWindow)
	}
	if doc.Store.Connected == nil || *doc.Store.Connected != 1 || doc.Store.BreakersOpen != nil || doc.Store.Instances != nil {
		t.Errorf("store %+v: want connected 1 and no breaker or instance metric", doc.Store)
	}
	if len(doc.Namespaces) != 1 {
		t.Fatalf("namespaces %+v: want orders alone (an unused _unknown is left out)", doc.Namespaces)
	}
	n := doc.Namespaces[0]
	if n.Name != "orders" || n.Allowed != 95 || n.Denied != 10 || n.DecidedBy["store"] != 95 || n.DecidedBy["deny-cache"] != 10 {
		t.Errorf("orders: %+v", n)
	}
	if len(n.Buckets) != 3 || *n.Buckets[0].Le != 0.001 || n.Buckets[0].Count != 3 || n.Buckets[1].Count != 3 || n.Buckets[2].Le != nil || n.Buckets[2].Count != 4 {
		t.Errorf("buckets %+v: want 3 at 1ms, 3 at 10ms, 4 in all", n.Buckets)
	}
	if n.Audit == nil || n.Audit.Checks != 100 || n.Audit.Over != 4 || n.Audit.Under != 0 {
		t.Errorf("audit %+v: want 100 checks, 4 over", n.Audit)
	}
	if len(n.Top) != 1 || n.Top[0].Subject != "bad-client" || n.Top[0].Denied != 42 {
		t.Errorf("top %+v", n.Top)
	}
}

func TestPageAndGuard(t *testing.T) {
	deny := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusUnauthorized) })
	}
	h := ui.Handler(ui.Options{Gatherer: registry(t), Guard: deny})
	for _, tc := range []struct {
		method, path string
		status       int
		ctype, body  string
	}{
		{"GET", "/ui/", 200, "text/html; charset=utf-8", "DistributedRateLimiter"},
		{"GET", "/ui/app.js", 200, "text/javascript; charset=utf-8", "quantile"},
		{"GET", "/ui/style.css", 200, "text/css; charset=utf-8", "--bg"},
		{"GET", "/ui/data", 401, "", "no"},
		{"POST", "/ui/data", 405, "", ""},
		{"GET", "/ui/missing.js", 404, "", ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tc.status || (tc.ctype != "" && rec.Header().Get("Content-Type") != tc.ctype) || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: %d %q, want %d %q containing %q", tc.method, tc.path, rec.Code, rec.Header().Get("Content-Type"), tc.status, tc.ctype, tc.body)
		}
		if rec.Code == 200 && !strings.Contains(rec.Header().Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s: no Content-Security-Policy", tc.path)
		}
	}
}
