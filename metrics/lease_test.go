package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLeaseMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats := LeaseStats{Takes: 12, TakeErrors: 2, Returns: 3, Taken: 1500, Returned: 40, Local: 1460}
	if err := RegisterLease(reg, func() LeaseStats { return stats }); err != nil {
		t.Fatal(err)
	}
	if err := RegisterLease(reg, func() LeaseStats { return stats }); err == nil {
		t.Fatal("registering twice succeeded")
	}
	if err := RegisterLease(nil, nil); err == nil {
		t.Fatal("nil registerer accepted")
	}
	want := `
# HELP ratelimiter_lease_local_checks_total Checks of leased limits decided from this instance's slices with no wait for the store.
# TYPE ratelimiter_lease_local_checks_total counter
ratelimiter_lease_local_checks_total 1460
# HELP ratelimiter_lease_store_calls_total Store calls of leased limits: takes of slices and returns of what they did not spend.
# TYPE ratelimiter_lease_store_calls_total counter
ratelimiter_lease_store_calls_total{call="return"} 3
ratelimiter_lease_store_calls_total{call="take"} 12
# HELP ratelimiter_lease_take_errors_total Takes of slices that failed; the instance decides from what it holds, then by the failure policy.
# TYPE ratelimiter_lease_take_errors_total counter
ratelimiter_lease_take_errors_total 2
# HELP ratelimiter_lease_units_total Units of leased limits taken out of the shared buckets, and returned unspent.
# TYPE ratelimiter_lease_units_total counter
ratelimiter_lease_units_total{direction="returned"} 40
ratelimiter_lease_units_total{direction="taken"} 1500
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
