package metrics

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the Redis store's script calls (redisstore.Options.Observe):
//
//	ratelimiter_redis_call_duration_seconds   histogram, 100µs to 5s: a script call's round trip
//	ratelimiter_redis_call_checks             histogram, 1 to 128: checks a script call carried
//
// The first is Redis's latency as the instance sees it (a pipeline's
// calls each observe the pipeline's); the second is how much batching
// saves: under load, many checks per call.

// RedisCallBuckets are the upper bounds of
// ratelimiter_redis_call_duration_seconds.
var RedisCallBuckets = []float64{
	100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
	250e-3, 500e-3, 1, 2.5, 5,
}

// RedisBatchBuckets are the upper bounds of ratelimiter_redis_call_checks:
// powers of two up to the store's largest batch (128).
var RedisBatchBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128}

// RegisterRedis registers the Redis store's metrics on reg and returns the
// function that records a script call, for redisstore.Options.Observe.
func RegisterRedis(reg prometheus.Registerer) (func(took time.Duration, checks int), error) {
	if reg == nil {
		return nil, errors.New("metrics: RegisterRedis needs a Registerer")
	}
	took := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ratelimiter_redis_call_duration_seconds",
		Help:    "Round trip of a script call of checks to Redis, as this instance sees it (a pipeline's calls each observe the pipeline's).",
		Buckets: RedisCallBuckets,
	})
	checks := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ratelimiter_redis_call_checks",
		Help:    "Checks carried by one script call to Redis (batching: many under load).",
		Buckets: RedisBatchBuckets,
	})
	for _, c := range []prometheus.Collector{took, checks} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return func(d time.Duration, n int) {
		took.Observe(d.Seconds())
		checks.Observe(float64(n))
	}, nil
}

// RegisterBuildInfo registers ratelimiter_build_info{version, revision,
// goversion}, always 1: which build each instance runs. The values come
// from the binary's build information (the module version, the VCS
// revision when built from a checkout, "unknown" otherwise).
func RegisterBuildInfo(reg prometheus.Registerer) error {
	version, revision, goVersion := Build()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "ratelimiter_build_info",
		Help:        "The build this instance runs, as labels; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("metrics: register: %w", err)
	}
	return nil
}

// Build returns the binary's module version, VCS revision and Go version,
// "unknown" for what its build information does not say.
func Build() (version, revision, goVersion string) {
	version, revision, goVersion = "unknown", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if v := bi.Main.Version; v != "" {
			version = v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				revision = s.Value
			}
		}
	}
	return version, revision, goVersion
}
