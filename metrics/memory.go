package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of an in-process memory store (the memory store of a single
// instance, or the local fallback of a distributed one), read from its
// counters at each scrape:
//
//	ratelimiter_memstore_keys{store}                       gauge: subjects held
//	ratelimiter_memstore_evictions_total{store,carried}    counter: entries evicted to make room;
//	    carried="spent": the entry held spent budget, which its subject got back (the store is too
//	    small: alert); carried="nothing": it was equivalent to fresh (harmless)
//	ratelimiter_memstore_expired_total{store}              counter: entries dropped once fresh again
//	ratelimiter_memstore_unstored_total{store}             counter: new subjects not stored (store full)
//
// store is "memory" or "fallback".

// MemoryStats are the counters of a memory store (memstore.Stats).
type MemoryStats struct {
	Keys           int
	Evictions      uint64 // entries that carried spent budget
	FreshEvictions uint64 // entries that carried nothing
	Expired        uint64
	Unstored       uint64
}

type memoryCollector struct {
	stats                              func() MemoryStats
	keys, evictions, expired, unstored *prometheus.Desc
}

// RegisterMemory registers on reg the metrics of the memory store named
// store, read from stats at every scrape.
func RegisterMemory(reg prometheus.Registerer, store string, stats func() MemoryStats) error {
	if reg == nil || stats == nil {
		return errors.New("metrics: RegisterMemory needs a Registerer and a stats function")
	}
	labels := prometheus.Labels{"store": store}
	return reg.Register(&memoryCollector{
		stats:     stats,
		keys:      prometheus.NewDesc("ratelimiter_memstore_keys", "Subjects the in-process memory store holds.", nil, labels),
		evictions: prometheus.NewDesc("ratelimiter_memstore_evictions_total", "Entries the memory store evicted to make room, by whether they carried spent budget (spent: their subjects got it back; the store is too small) or nothing.", []string{"carried"}, labels),
		expired:   prometheus.NewDesc("ratelimiter_memstore_expired_total", "Entries the memory store dropped once they were fresh again.", nil, labels),
		unstored:  prometheus.NewDesc("ratelimiter_memstore_unstored_total", "New subjects the memory store could not hold (full, and nothing to evict in their shard).", nil, labels),
	})
}

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.keys
	ch <- c.evictions
	ch <- c.expired
	ch <- c.unstored
}

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(s.Keys))
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(s.Evictions), "spent")
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(s.FreshEvictions), "nothing")
	ch <- prometheus.MustNewConstMetric(c.expired, prometheus.CounterValue, float64(s.Expired))
	ch <- prometheus.MustNewConstMetric(c.unstored, prometheus.CounterValue, float64(s.Unstored))
}
