// Package metrics exports the service's checks as Prometheus metrics. Its
// Observer implements service.Observer and registers its collectors on an
// injected prometheus.Registerer: the package has no global state.
//
// Metrics:
//
//	ratelimiter_decisions_total{namespace,limit,outcome}  counter; outcome is "allowed" or
//	    "denied", limit the name of the binding rule (limit.Verdict.Binding)
//	ratelimiter_check_duration_seconds{namespace}          histogram, 50µs to 5s
//	ratelimiter_check_errors_total{namespace,kind}         counter; kind is "invalid",
//	    "unknown_namespace" or "store" (a store failure, also when a failure
//	    policy answered the check: service.Result.StoreError); a check shed
//	    for overload is no error here: it counts as decided_by="shed"
//	ratelimiter_config_info{version}                       gauge, 1 for the policy in use
//
// and those of the store's failure handling, listed in failure.go
// (ratelimiter_decided_by_total, ratelimiter_store_breaker_state, ...).
//
// Label values come from the policy snapshot, never from user input: a check
// whose namespace the snapshot does not know is counted under namespace
// UnknownNamespace, so a client inventing namespaces cannot create series.
//
// The hot path allocates nothing: the label children of every namespace and
// rule of a snapshot are resolved when the service starts using it
// (ObserveSnapshot) and looked up by name per check.
package metrics

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// UnknownNamespace is the namespace label of checks whose namespace the policy
// does not define (or that named none). No namespace can be called so (a
// name starts with a letter or digit), so a real namespace never shares its
// series.
const UnknownNamespace = "_unknown"

// Error kinds, the values of the kind label of ratelimiter_check_errors_total.
const (
	KindInvalid          = "invalid"
	KindUnknownNamespace = "unknown_namespace"
	KindStore            = "store"
)

// DurationBuckets are the upper bounds of ratelimiter_check_duration_seconds,
// from 50µs to 5s: a check of a busy but healthy Redis waits for its answer
// (up to service.Guard.MaxWait), so the tail reaches past 100ms under
// bursts, and an operator sizing --store-max-wait needs to see it.
var DurationBuckets = []float64{
	50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
	250e-3, 500e-3, 1, 2.5, 5,
}

// Observer records checks and snapshot swaps as Prometheus metrics. Create it
// with New. It is safe for concurrent use.
type Observer struct {
	decisions *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	errs      *prometheus.CounterVec
	info      *prometheus.GaugeVec
	fail      failureMetrics     // failure.go
	desc      *descriptorMetrics // descriptors.go

	mu      sync.Mutex // serializes table rebuilds and the info gauge
	table   atomic.Pointer[table]
	unknown *nsChildren
}

// table maps the namespaces and rule names of one snapshot to their label
// children. It is immutable once published.
type table struct {
	ns map[string]*nsChildren
}

type nsChildren struct {
	duration   prometheus.Observer
	invalid    prometheus.Counter
	unknownNS  prometheus.Counter
	storeErr   prometheus.Counter
	byRuleName map[string]*[2]prometheus.Counter // [denied, allowed]
	by         *byPath                           // decided_by children (failure.go)
}

// New creates the collectors and registers them on reg. It fails if reg is
// nil or already holds collectors of the same names.
func New(reg prometheus.Registerer) (*Observer, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil Registerer")
	}
	o := &Observer{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimiter_decisions_total",
			Help: "Checks answered, by namespace, binding limit and outcome (allowed or denied).",
		}, []string{"namespace", "limit", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ratelimiter_check_duration_seconds",
			Help:    "Time a check took in the service, store call included.",
			Buckets: DurationBuckets,
		}, []string{"namespace"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimiter_check_errors_total",
			Help: "Checks that failed, by namespace and kind (invalid, unknown_namespace, store).",
		}, []string{"namespace", "kind"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ratelimiter_config_info",
			Help: "The version of the policy in use, as a label; the value is always 1.",
		}, []string{"version"}),
	}
	o.fail = newFailureMetrics()
	o.desc = newDescriptorMetrics()
	for _, c := range append(append([]prometheus.Collector{o.decisions, o.duration, o.errs, o.info}, o.fail.collectors()...), o.desc.collectors()...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	o.unknown = o.children(UnknownNamespace, nil)
	o.table.Store(&table{ns: map[string]*nsChildren{}})
	return o, nil
}

// children resolves the label children of one namespace.
func (o *Observer) children(ns string, ruleNames []string) *nsChildren {
	c := &nsChildren{
		duration:   o.duration.WithLabelValues(ns),
		invalid:    o.errs.WithLabelValues(ns, KindInvalid),
		unknownNS:  o.errs.WithLabelValues(ns, KindUnknownNamespace),
		storeErr:   o.errs.WithLabelValues(ns, KindStore),
		byRuleName: make(map[string]*[2]prometheus.Counter, len(ruleNames)),
	}
	if ns != UnknownNamespace {
		c.by = o.fail.children(ns)
	}
	for _, r := range ruleNames {
		c.byRuleName[r] = &[2]prometheus.Counter{
			o.decisions.WithLabelValues(ns, r, "denied"),
			o.decisions.WithLabelValues(ns, r, "allowed"),
		}
	}
	return c
}

// ObserveSnapshot implements service.Observer: it sets ratelimiter_config_info
// to the snapshot's version and resolves the label children of its
// namespaces and rules. Series of namespaces a later snapshot drops are kept
// (counters must not go backwards while the process lives).
func (o *Observer) ObserveSnapshot(snap *policy.Snapshot) {
	if snap == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.info.Reset()
	o.info.WithLabelValues(snap.Version()).Set(1)

	t := &table{ns: make(map[string]*nsChildren)}
	for _, name := range snap.Names() {
		ns, ok := snap.Namespace(name)
		if !ok {
			continue
		}
		// Overrides patch rules but never rename them, so the namespace's
		// rule names are every name a check of it can report.
		names := make([]string, len(ns.Rules))
		for i, r := range ns.Rules {
			names[i] = r.Name
		}
		t.ns[name] = o.children(name, names)
	}
	o.table.Store(t)
}

// ObserveCheck implements service.Observer.
func (o *Observer) ObserveCheck(res service.Result, err error, took time.Duration) {
	c := o.unknown
	name := ""
	if res.Set.Namespace != nil {
		name = res.Set.Namespace.Name
		if c2, ok := o.table.Load().ns[name]; ok {
			c = c2
		} else {
			// A check that loaded a snapshot the table does not describe yet
			// (it raced a Swap): resolve the series directly, off the hot path.
			c = o.children(name, nil)
		}
	}
	c.duration.Observe(took.Seconds())
	if err != nil {
		switch service.Classify(err) {
		case service.Invalid:
			c.invalid.Inc()
		case service.UnknownNamespace:
			c.unknownNS.Inc()
		case service.Overloaded:
			if c.by != nil { // shed: no decision, counted by its path only
				c.by[service.DecidedByShed][0].Inc()
			}
		default:
			c.storeErr.Inc()
		}
		return
	}
	v := &res.Verdict
	if res.Descriptors != nil || v.Shadow {
		o.desc.observe(name, &res)
	}
	if v.N == 0 {
		return
	}
	rule := res.Set.Rules[v.Binding()].Name
	outcome := 0
	if v.Allowed {
		outcome = 1
	}
	c.observeDecidedBy(&res, outcome)
	if pair, ok := c.byRuleName[rule]; ok {
		pair[outcome].Inc()
		return
	}
	o.decisions.WithLabelValues(name, rule, [2]string{"denied", "allowed"}[outcome]).Inc()
}

var _ service.Observer = (*Observer)(nil)
