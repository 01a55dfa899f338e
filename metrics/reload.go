package metrics

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reload exports configuration reloads and runtime overrides (it implements
// reload.Recorder):
//
//	ratelimiter_config_reloads_total{result}           counter; result is "success" or "error"
//	ratelimiter_config_loaded_timestamp_seconds        gauge, when the file in force was loaded
//	ratelimiter_runtime_overrides{namespace}           gauge, runtime overrides in force
//	ratelimiter_runtime_overrides_inactive             gauge, stored overrides that do not apply
//	ratelimiter_runtime_override_sync_errors_total     counter, failed reads of the override store
//
// Alert on increase(ratelimiter_config_reloads_total{result="error"}[10m]) > 0:
// the file on disk is not the policy in force. The version in force is
// ratelimiter_config_info{version} (Observer). Create it with NewReload; it
// is safe for concurrent use.
type Reload struct {
	reloads  *prometheus.CounterVec
	loadedAt prometheus.Gauge
	active   *prometheus.GaugeVec
	inactive prometheus.Gauge
	syncErrs prometheus.Counter

	mu  sync.Mutex
	nss map[string]bool // namespaces with an active series
}

// NewReload creates the collectors and registers them on reg.
func NewReload(reg prometheus.Registerer) (*Reload, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil Registerer")
	}
	r := &Reload{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimiter_config_reloads_total",
			Help: "Reloads of the configuration file, by result (success or error).",
		}, []string{"result"}),
		loadedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ratelimiter_config_loaded_timestamp_seconds",
			Help: "Unix time at which the configuration file in force was loaded.",
		}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ratelimiter_runtime_overrides",
			Help: "Runtime per-subject overrides in force, by namespace.",
		}, []string{"namespace"}),
		inactive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ratelimiter_runtime_overrides_inactive",
			Help: "Stored runtime overrides that do not apply to the configuration in force.",
		}),
		syncErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ratelimiter_runtime_override_sync_errors_total",
			Help: "Failed reads of the runtime override store.",
		}),
		nss: map[string]bool{},
	}
	for _, c := range []prometheus.Collector{r.reloads, r.loadedAt, r.active, r.inactive, r.syncErrs} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	// Both results exist from the start, so rate() and alerts see a zero.
	r.reloads.WithLabelValues("success")
	r.reloads.WithLabelValues("error")
	return r, nil
}

// Reloaded counts one reload.
func (r *Reload) Reloaded(ok bool) {
	if ok {
		r.reloads.WithLabelValues("success").Inc()
	} else {
		r.reloads.WithLabelValues("error").Inc()
	}
}

// ConfigLoaded sets the load time of the file in force (its version is
// ratelimiter_config_info, set by Observer on every swap).
func (r *Reload) ConfigLoaded(_ string, loadedAt time.Time) {
	r.loadedAt.Set(float64(loadedAt.UnixNano()) / 1e9)
}

// Overrides sets the runtime overrides in force per namespace and the
// number that do not apply. A namespace no longer listed drops to 0.
func (r *Reload) Overrides(active map[string]int, inactive int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ns := range r.nss {
		if _, ok := active[ns]; !ok {
			r.active.WithLabelValues(ns).Set(0)
		}
	}
	for ns, n := range active {
		r.active.WithLabelValues(ns).Set(float64(n))
		r.nss[ns] = true
	}
	r.inactive.Set(float64(inactive))
}

// SyncFailed counts a failed read of the override store.
func (r *Reload) SyncFailed() { r.syncErrs.Inc() }
