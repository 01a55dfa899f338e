package metrics

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// Per-descriptor counters, as envoyproxy/ratelimit keeps them per key:
//
//	ratelimiter_descriptor_hits_total{namespace,key}          the cost of every check of the key
//	ratelimiter_descriptor_within_limit_total{namespace,key}  the cost of the admitted ones
//	ratelimiter_descriptor_near_limit_total{namespace,key}    the cost past 80% of the limit
//	ratelimiter_descriptor_over_limit_total{namespace,key}    the cost past the limit
//	ratelimiter_descriptor_shadow_mode_total{namespace,key}   the cost past a limit in shadow mode
//	ratelimiter_shadow_denials_total{namespace}               checks a limit in shadow mode (or
//	                                                          --shadow-mode) would have denied
//
// key is the descriptor's metric key without its domain (policy.Match.Stat:
// "remote_address", "route_api/*.method"), which detailed_metric and
// value_to_metric turn into per-value keys: at most MaxDescriptorKeys keys
// per namespace are kept apart, the rest count under key "_other", so a
// client sending new values cannot grow the series without bound. The cost
// is split between near, over and shadow as envoyproxy/ratelimit splits it,
// from what the binding limit had used before the check.

// MaxDescriptorKeys bounds the key label values of one namespace.
const MaxDescriptorKeys = 10_000

// OtherKey is the key label of the keys past MaxDescriptorKeys.
const OtherKey = "_other"

// NearLimitRatio is the share of a limit past which a hit is near it.
const NearLimitRatio = 0.8

type descriptorMetrics struct {
	hits, within, near, over, shadow *prometheus.CounterVec
	denials                          *prometheus.CounterVec

	mu   sync.Mutex
	keys map[string]map[string]*keyCounters // namespace -> key
}

type keyCounters struct{ hits, within, near, over, shadow prometheus.Counter }

func newDescriptorMetrics() *descriptorMetrics {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"namespace", "key"})
	}
	return &descriptorMetrics{
		hits:   vec("ratelimiter_descriptor_hits_total", "Cost of the checks of a descriptor key (envoyproxy/ratelimit's total_hits)."),
		within: vec("ratelimiter_descriptor_within_limit_total", "Cost of the admitted checks of a descriptor key."),
		near:   vec("ratelimiter_descriptor_near_limit_total", "Cost of the checks of a descriptor key past 80% of its limit."),
		over:   vec("ratelimiter_descriptor_over_limit_total", "Cost of the checks of a descriptor key past its limit."),
		shadow: vec("ratelimiter_descriptor_shadow_mode_total", "Cost past a limit in shadow mode, which did not deny."),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ratelimiter_shadow_denials_total",
			Help: "Checks a limit in shadow mode (or --shadow-mode) would have denied, admitted all the same."}, []string{"namespace"}),
		keys: map[string]map[string]*keyCounters{},
	}
}

func (m *descriptorMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.hits, m.within, m.near, m.over, m.shadow, m.denials}
}

// counters returns the counters of a key, resolving them once.
func (m *descriptorMetrics) counters(ns, key string) *keyCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	byKey := m.keys[ns]
	if byKey == nil {
		byKey = map[string]*keyCounters{}
		m.keys[ns] = byKey
	}
	if c, ok := byKey[key]; ok {
		return c
	}
	if len(byKey) >= MaxDescriptorKeys {
		key = OtherKey
		if c, ok := byKey[key]; ok {
			return c
		}
	}
	c := &keyCounters{
		hits: m.hits.WithLabelValues(ns, key), within: m.within.WithLabelValues(ns, key),
		near: m.near.WithLabelValues(ns, key), over: m.over.WithLabelValues(ns, key), shadow: m.shadow.WithLabelValues(ns, key),
	}
	byKey[key] = c
	return c
}

// observe counts the descriptors of a check.
func (m *descriptorMetrics) observe(ns string, res *service.Result) {
	if res.Verdict.Shadow {
		m.denials.WithLabelValues(ns).Inc()
	}
	for i := range res.Descriptors {
		d := &res.Descriptors[i]
		if d.Match.Stat == "" || !d.Match.Limited {
			continue
		}
		key := strings.TrimPrefix(d.Match.Stat, ns+".")
		c := m.counters(ns, key)
		cost := float64(d.Cost)
		c.hits.Add(cost)
		if d.Match.Blocked {
			c.over.Add(cost)
			continue
		}
		if d.Verdict.N == 0 {
			continue // not looked up (the deny cache answered for another descriptor)
		}
		split(c, &d.Verdict, d.Match.Rules, d.Cost)
	}
}

// split adds a check of cost to near, over, within and shadow as
// envoyproxy/ratelimit does, from the binding limit: before is what the
// limit had used before the check, after what it would have used with it.
func split(c *keyCounters, v *limit.Verdict, rules []limit.Rule, cost int64) {
	b := v.Binding()
	d, r := &v.D[b], &rules[b]
	capacity := r.Capacity()
	near := int64(float64(capacity) * NearLimitRatio)
	var before, after int64
	if d.Allowed {
		after = capacity - d.Remaining
		before = after - cost
	} else {
		before = capacity - d.Remaining
		after = before + cost
	}
	if d.Allowed {
		c.within.Add(float64(cost))
		if after > near {
			if before >= near {
				c.near.Add(float64(cost))
			} else {
				c.near.Add(float64(after - near))
			}
		}
		return
	}
	overPart := cost
	if before < capacity {
		overPart = after - capacity
		c.near.Add(float64(capacity - max(near, before)))
	}
	c.over.Add(float64(overPart))
	if d.Shadow {
		c.shadow.Add(float64(overPart))
	}
}
