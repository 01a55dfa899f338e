package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the leases of leased limits (package lease), read from the
// lease store's counters at each scrape:
//
//	ratelimiter_lease_store_calls_total{call}   counter: takes and returns sent to the store
//	ratelimiter_lease_take_errors_total         counter: takes that failed (the store is down or slow)
//	ratelimiter_lease_units_total{direction}    counter: units taken out of shared buckets, and returned
//	ratelimiter_lease_local_checks_total        counter: checks decided from slices with no wait for the store
//
// local_checks over store_calls is the store calls saved; a take error
// rate above zero means leased limits are living on their slices, then on
// the failure policy.

// LeaseStats are the counters of a lease store (lease.Stats).
type LeaseStats struct {
	Takes, TakeErrors, Returns int64
	Taken, Returned, Local     int64
}

type leaseCollector struct {
	stats                        func() LeaseStats
	calls, errors, units, checks *prometheus.Desc
}

// RegisterLease registers on reg the metrics of a lease store, read from
// stats at every scrape.
func RegisterLease(reg prometheus.Registerer, stats func() LeaseStats) error {
	if reg == nil || stats == nil {
		return errors.New("metrics: RegisterLease needs a Registerer and a stats function")
	}
	return reg.Register(&leaseCollector{
		stats:  stats,
		calls:  prometheus.NewDesc("ratelimiter_lease_store_calls_total", "Store calls of leased limits: takes of slices and returns of what they did not spend.", []string{"call"}, nil),
		errors: prometheus.NewDesc("ratelimiter_lease_take_errors_total", "Takes of slices that failed; the instance decides from what it holds, then by the failure policy.", nil, nil),
		units:  prometheus.NewDesc("ratelimiter_lease_units_total", "Units of leased limits taken out of the shared buckets, and returned unspent.", []string{"direction"}, nil),
		checks: prometheus.NewDesc("ratelimiter_lease_local_checks_total", "Checks of leased limits decided from this instance's slices with no wait for the store.", nil, nil),
	})
}

func (c *leaseCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.calls
	ch <- c.errors
	ch <- c.units
	ch <- c.checks
}

func (c *leaseCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(s.Takes), "take")
	ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(s.Returns), "return")
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(s.TakeErrors))
	ch <- prometheus.MustNewConstMetric(c.units, prometheus.CounterValue, float64(s.Taken), "taken")
	ch <- prometheus.MustNewConstMetric(c.units, prometheus.CounterValue, float64(s.Returned), "returned")
	ch <- prometheus.MustNewConstMetric(c.checks, prometheus.CounterValue, float64(s.Local))
}
