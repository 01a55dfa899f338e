package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/topk"
)

func TestTopMetrics(t *testing.T) {
	tr := topk.New(topk.Options{Window: time.Minute})
	for range 5 {
		tr.Add("orders", "bad-client")
	}
	for range 2 {
		tr.Add("orders", "noisy")
	}
	tr.Add("orders", "once")
	reg := prometheus.NewRegistry()
	if err := metrics.RegisterTop(reg, tr, 2); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP ratelimiter_top_denied Denied checks of the most denied subjects of a namespace over the top-K window (one to two --top-window), by rank (1 is the most denied).
# TYPE ratelimiter_top_denied gauge
ratelimiter_top_denied{namespace="orders",rank="1",subject="bad-client"} 5
ratelimiter_top_denied{namespace="orders",rank="2",subject="noisy"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if err := metrics.RegisterTop(reg, tr, 0); err == nil {
		t.Error("n = 0 was accepted")
	}
}
