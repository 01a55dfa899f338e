package metrics

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/topk"
)

// TopSource is the top-K tracker of denied subjects (topk.Tracker).
type TopSource interface {
	Namespaces() []string
	Top(ns string, n int) []topk.Entry
}

// Opt-in (serve --top-k-metrics N), read from the tracker at each scrape:
//
//	ratelimiter_top_denied{namespace,rank,subject}  gauge: denials of the N most denied subjects
//
// It is the one metric whose label is a subject: at most N series per
// namespace at a time, but as subjects come and go, each leaves a series
// behind in Prometheus's storage, and subjects are personal data. Off by
// default; /v1/admin/top answers the same question behind the admin token.

type topCollector struct {
	src  TopSource
	n    int
	desc *prometheus.Desc
}

// RegisterTop registers ratelimiter_top_denied for the n most denied
// subjects of each namespace of src.
func RegisterTop(reg prometheus.Registerer, src TopSource, n int) error {
	if reg == nil || src == nil || n < 1 {
		return errors.New("metrics: RegisterTop needs a Registerer, a source and n >= 1")
	}
	return reg.Register(&topCollector{src: src, n: n, desc: prometheus.NewDesc("ratelimiter_top_denied",
		"Denied checks of the most denied subjects of a namespace over the top-K window (one to two --top-window), by rank (1 is the most denied).",
		[]string{"namespace", "rank", "subject"}, nil)})
}

func (c *topCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *topCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ns := range c.src.Namespaces() {
		for i, e := range c.src.Top(ns, c.n) {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(e.Denied), ns, strconv.Itoa(i+1), e.Subject)
		}
	}
}
