package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/audit"
)

// Metrics of the online accuracy audit (package audit), read from the
// auditor at each scrape:
//
//	ratelimiter_audit_checks_total{namespace}                counter: checks of sampled subjects replayed
//	ratelimiter_audit_over_admissions_total{namespace,limit,algorithm}  counter: admitted, the exact reference denies
//	ratelimiter_audit_under_admissions_total{namespace,limit,algorithm} counter: denied, the reference admits (memory store only)
//	ratelimiter_audit_dropped_total                           counter: checks not replayed (late, or the queue full)
//	ratelimiter_audit_subjects                                gauge: references held
//
// Expected on a healthy store: 0 over and under for token_bucket,
// leaky_bucket, fixed_window and sliding_window_log; the
// sliding_window_counter's over-admissions are its approximation.

type auditCollector struct {
	stats                                  func() audit.Stats
	checks, over, under, dropped, subjects *prometheus.Desc
}

// RegisterAudit registers on reg the metrics of an auditor, read from stats
// at every scrape.
func RegisterAudit(reg prometheus.Registerer, stats func() audit.Stats) error {
	if reg == nil || stats == nil {
		return errors.New("metrics: RegisterAudit needs a Registerer and a stats function")
	}
	return reg.Register(&auditCollector{
		stats:    stats,
		checks:   prometheus.NewDesc("ratelimiter_audit_checks_total", "Checks of sampled subjects replayed against an exact reference of their limits.", []string{"namespace"}, nil),
		over:     prometheus.NewDesc("ratelimiter_audit_over_admissions_total", "Checks admitted that the exact reference denies (by the reference's denying limit).", []string{"namespace", "limit", "algorithm"}, nil),
		under:    prometheus.NewDesc("ratelimiter_audit_under_admissions_total", "Checks denied that the exact reference admits (memory store only; by the store's denying limit).", []string{"namespace", "limit", "algorithm"}, nil),
		dropped:  prometheus.NewDesc("ratelimiter_audit_dropped_total", "Checks of sampled subjects not replayed: observed too late, or the replay queue full.", nil, nil),
		subjects: prometheus.NewDesc("ratelimiter_audit_subjects", "Subjects whose exact reference the audit holds.", nil, nil),
	})
}

func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.checks
	ch <- c.over
	ch <- c.under
	ch <- c.dropped
	ch <- c.subjects
}

func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for ns, n := range s.Checks {
		ch <- prometheus.MustNewConstMetric(c.checks, prometheus.CounterValue, float64(n), ns)
	}
	for _, k := range s.Counts {
		ch <- prometheus.MustNewConstMetric(c.over, prometheus.CounterValue, float64(k.Over), k.Namespace, k.Limit, k.Algorithm.String())
		ch <- prometheus.MustNewConstMetric(c.under, prometheus.CounterValue, float64(k.Under), k.Namespace, k.Limit, k.Algorithm.String())
	}
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(c.subjects, prometheus.GaugeValue, float64(s.Subjects))
}
