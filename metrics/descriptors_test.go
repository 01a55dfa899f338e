package metrics_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// The per-key counters of envoyproxy/ratelimit, split as it splits them:
// a limit of 20 (near limit 16) checked with costs 4, 4, 4, 4 (16 used),
// 3 (19: near 3), 3 (22 would be: denied, over 2, near 1) and 7 from 15
// used (denied: over 2, near 4) on another key.
func TestDescriptorCounters(t *testing.T) {
	snap, err := policy.New([]policy.Namespace{{Name: "d", Descriptors: []policy.Matcher{
		{Key: "k", Rules: []limit.Rule{{Name: "w", Algorithm: limit.FixedWindow, Limit: 20, Period: time.Hour}}},
		{Key: "dm", DetailedMetric: true, Rules: []limit.Rule{{Name: "w", Algorithm: limit.FixedWindow, Limit: 20, Period: time.Hour}}},
	}}}, "v", epoch)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	obs, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(epoch)
	st := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
	defer st.Close()
	svc, _ := service.New(st, snap, service.Options{Clock: clk, Observer: obs})
	check := func(key, value string, cost int64) {
		t.Helper()
		_, err := svc.Check(context.Background(), service.Request{Namespace: "d", Descriptors: []service.Descriptor{
			{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: key, Value: value}}}, Cost: cost}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []int64{4, 4, 4, 4, 3, 3} {
		check("k", "a", c)
	}
	for _, c := range []int64{15, 7} {
		check("dm", "x", c)
	}
	want := `
# HELP ratelimiter_descriptor_hits_total Cost of the checks of a descriptor key (envoyproxy/ratelimit's total_hits).
# TYPE ratelimiter_descriptor_hits_total counter
ratelimiter_descriptor_hits_total{key="dm_x",namespace="d"} 22
ratelimiter_descriptor_hits_total{key="k",namespace="d"} 22
# HELP ratelimiter_descriptor_near_limit_total Cost of the checks of a descriptor key past 80% of its limit.
# TYPE ratelimiter_descriptor_near_limit_total counter
ratelimiter_descriptor_near_limit_total{key="dm_x",namespace="d"} 4
ratelimiter_descriptor_near_limit_total{key="k",namespace="d"} 4
# HELP ratelimiter_descriptor_over_limit_total Cost of the checks of a descriptor key past its limit.
# TYPE ratelimiter_descriptor_over_limit_total counter
ratelimiter_descriptor_over_limit_total{key="dm_x",namespace="d"} 2
ratelimiter_descriptor_over_limit_total{key="k",namespace="d"} 2
# HELP ratelimiter_descriptor_within_limit_total Cost of the admitted checks of a descriptor key.
# TYPE ratelimiter_descriptor_within_limit_total counter
ratelimiter_descriptor_within_limit_total{key="dm_x",namespace="d"} 15
ratelimiter_descriptor_within_limit_total{key="k",namespace="d"} 19
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ratelimiter_descriptor_hits_total",
		"ratelimiter_descriptor_near_limit_total", "ratelimiter_descriptor_over_limit_total", "ratelimiter_descriptor_within_limit_total"); err != nil {
		t.Fatal(err)
	}
	// A detailed_metric key per value, bounded per namespace.
	for i := range metrics.MaxDescriptorKeys + 5 {
		check("dm", fmt.Sprint(i), 0)
	}
	if n := testutil.CollectAndCount(reg, "ratelimiter_descriptor_hits_total"); n != metrics.MaxDescriptorKeys+1 {
		t.Fatalf("%d key series, want at most %d and %q", n, metrics.MaxDescriptorKeys, metrics.OtherKey)
	}
}
