package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distributedratelimiter/ratelimiter/metrics"
)

func TestRedisCallMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	observe, err := metrics.RegisterRedis(reg)
	if err != nil {
		t.Fatal(err)
	}
	observe(300*time.Microsecond, 1)
	observe(2*time.Millisecond, 40)
	observe(2*time.Millisecond, 128)
	want := `
# HELP ratelimiter_redis_call_checks Checks carried by one script call to Redis (batching: many under load).
# TYPE ratelimiter_redis_call_checks histogram
ratelimiter_redis_call_checks_bucket{le="1"} 1
ratelimiter_redis_call_checks_bucket{le="2"} 1
ratelimiter_redis_call_checks_bucket{le="4"} 1
ratelimiter_redis_call_checks_bucket{le="8"} 1
ratelimiter_redis_call_checks_bucket{le="16"} 1
ratelimiter_redis_call_checks_bucket{le="32"} 1
ratelimiter_redis_call_checks_bucket{le="64"} 2
ratelimiter_redis_call_checks_bucket{le="128"} 3
ratelimiter_redis_call_checks_bucket{le="+Inf"} 3
ratelimiter_redis_call_checks_sum 169
ratelimiter_redis_call_checks_count 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ratelimiter_redis_call_checks"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "ratelimiter_redis_call_duration_seconds"); n != 1 {
		t.Errorf("duration series: %d, want 1", n)
	}
	if _, err := metrics.RegisterRedis(reg); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
	if _, err := metrics.RegisterRedis(nil); err == nil {
		t.Error("a nil Registerer was accepted")
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := metrics.RegisterBuildInfo(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "ratelimiter_build_info" || len(mfs[0].Metric) != 1 || mfs[0].Metric[0].GetGauge().GetValue() != 1 {
		t.Fatalf("gathered %v, want one ratelimiter_build_info of 1", mfs)
	}
	labels := map[string]string{}
	for _, l := range mfs[0].Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if !strings.HasPrefix(labels["goversion"], "go1.") || labels["version"] == "" || labels["revision"] == "" {
		t.Errorf("labels %v: want goversion go1.x and a version and revision (or unknown)", labels)
	}
}
