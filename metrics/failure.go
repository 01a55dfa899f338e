package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/service"
)

// Metrics of the store's failure handling (service.Guard):
//
//	ratelimiter_decided_by_total{namespace,decided_by,outcome}  counter; decided_by is "store",
//	    "deny-cache", "local", "open", "closed" or "shed" (service.DecidedBy), outcome "allowed" or
//	    "denied" (a shed check, answered 503, counts as denied: it was not admitted)
//	ratelimiter_store_breakers_open                              gauge: circuit breakers not closed (open or
//	    half-open); one breaker per store, or per slot group of a Redis Cluster
//	ratelimiter_store_breaker_transitions_total{to}              counter; to is "open", "half-open" or "closed"
//
// A rise of decided_by="local"|"open"|"closed" means the store is failing
// (errors, or no answer at all within the maximum wait) and the failure
// policy is answering; a rise of decided_by="shed" means this instance is
// overloaded while the store is healthy: alert on both.
type failureMetrics struct {
	decidedBy   *prometheus.CounterVec
	breaker     prometheus.Gauge
	transitions *prometheus.CounterVec
}

// byPath holds the decided_by children of one namespace: [path][outcome],
// outcome 0 denied, 1 allowed.
type byPath [service.NumDecidedBy][2]prometheus.Counter

func newFailureMetrics() failureMetrics {
	return failureMetrics{
		decidedBy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimiter_decided_by_total",
			Help: "Checks answered, by namespace, the path that decided (store, deny-cache, local, open, closed, shed) and outcome.",
		}, []string{"namespace", "decided_by", "outcome"}),
		breaker: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ratelimiter_store_breakers_open",
			Help: "Circuit breakers in front of the store that are open or half-open (0: the store is called normally).",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimiter_store_breaker_transitions_total",
			Help: "Changes of state of the circuit breaker in front of the store, by new state.",
		}, []string{"to"}),
	}
}

func (f *failureMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{f.decidedBy, f.breaker, f.transitions}
}

func (f *failureMetrics) children(ns string) *byPath {
	var b byPath
	for p := range b {
		name := service.DecidedBy(p).String()
		b[p] = [2]prometheus.Counter{
			f.decidedBy.WithLabelValues(ns, name, "denied"),
			f.decidedBy.WithLabelValues(ns, name, "allowed"),
		}
	}
	return &b
}

// ObserveBreaker implements service.BreakerObserver.
func (o *Observer) ObserveBreaker(from, to service.BreakerState) {
	switch {
	case from == service.BreakerClosed && to != service.BreakerClosed:
		o.fail.breaker.Inc()
	case from != service.BreakerClosed && to == service.BreakerClosed:
		o.fail.breaker.Dec()
	}
	o.fail.transitions.WithLabelValues(to.String()).Inc()
}

// observeDecidedBy counts one answered check. A store failure a failure
// policy answered for also counts as a store error: the check was
// answered, but not by the store.
func (c *nsChildren) observeDecidedBy(res *service.Result, outcome int) {
	if res.StoreError != nil {
		c.storeErr.Inc()
	}
	if c.by == nil || int(res.DecidedBy) >= len(c.by) {
		return
	}
	c.by[res.DecidedBy][outcome].Inc()
}

var _ service.BreakerObserver = (*Observer)(nil)
