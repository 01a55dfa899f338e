package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distributedratelimiter/ratelimiter/audit"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/metrics"
)

func TestAuditMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats := audit.Stats{
		Checks:   map[string]int64{"orders": 120},
		Counts:   []audit.Count{{Namespace: "orders", Limit: "per-minute", Algorithm: limit.SlidingWindowCounter, Over: 7, Under: 1}},
		Dropped:  2,
		Subjects: 5,
	}
	if err := metrics.RegisterAudit(reg, func() audit.Stats { return stats }); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP ratelimiter_audit_checks_total Checks of sampled subjects replayed against an exact reference of their limits.
# TYPE ratelimiter_audit_checks_total counter
ratelimiter_audit_checks_total{namespace="orders"} 120
# HELP ratelimiter_audit_dropped_total Checks of sampled subjects not replayed: observed too late, or the replay queue full.
# TYPE ratelimiter_audit_dropped_total counter
ratelimiter_audit_dropped_total 2
# HELP ratelimiter_audit_over_admissions_total Checks admitted that the exact reference denies (by the reference's denying limit).
# TYPE ratelimiter_audit_over_admissions_total counter
ratelimiter_audit_over_admissions_total{algorithm="sliding_window_counter",limit="per-minute",namespace="orders"} 7
# HELP ratelimiter_audit_subjects Subjects whose exact reference the audit holds.
# TYPE ratelimiter_audit_subjects gauge
ratelimiter_audit_subjects 5
# HELP ratelimiter_audit_under_admissions_total Checks denied that the exact reference admits (memory store only; by the store's denying limit).
# TYPE ratelimiter_audit_under_admissions_total counter
ratelimiter_audit_under_admissions_total{algorithm="sliding_window_counter",limit="per-minute",namespace="orders"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if err := metrics.RegisterAudit(reg, nil); err == nil {
		t.Error("a nil stats function was accepted")
	}
}
