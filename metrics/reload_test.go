package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReloadMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := NewReload(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewReload(reg); err == nil {
		t.Fatal("registering twice succeeded")
	}
	if _, err := NewReload(nil); err == nil {
		t.Fatal("nil registerer accepted")
	}
	r.Reloaded(true)
	r.Reloaded(false)
	r.Reloaded(false)
	r.ConfigLoaded("abc", time.Unix(1700000000, 500_000_000))
	r.Overrides(map[string]int{"orders": 3, "payments": 1}, 2)
	r.Overrides(map[string]int{"orders": 4}, 0) // payments left the file
	r.SyncFailed()
	want := `
# HELP ratelimiter_config_loaded_timestamp_seconds Unix time at which the configuration file in force was loaded.
# TYPE ratelimiter_config_loaded_timestamp_seconds gauge
ratelimiter_config_loaded_timestamp_seconds 1.7000000005e+09
# HELP ratelimiter_config_reloads_total Reloads of the configuration file, by result (success or error).
# TYPE ratelimiter_config_reloads_total counter
ratelimiter_config_reloads_total{result="error"} 2
ratelimiter_config_reloads_total{result="success"} 1
# HELP ratelimiter_runtime_override_sync_errors_total Failed reads of the runtime override store.
# TYPE ratelimiter_runtime_override_sync_errors_total counter
ratelimiter_runtime_override_sync_errors_total 1
# HELP ratelimiter_runtime_overrides Runtime per-subject overrides in force, by namespace.
# TYPE ratelimiter_runtime_overrides gauge
ratelimiter_runtime_overrides{namespace="orders"} 4
ratelimiter_runtime_overrides{namespace="payments"} 0
# HELP ratelimiter_runtime_overrides_inactive Stored runtime overrides that do not apply to the configuration in force.
# TYPE ratelimiter_runtime_overrides_inactive gauge
ratelimiter_runtime_overrides_inactive 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
