package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func snapshot(t testing.TB, version string, perMinute int64) *policy.Snapshot {
	t.Helper()
	snap, err := policy.New([]policy.Namespace{{
		Name:          "orders",
		SubjectHeader: "X-User-ID",
		Rules: []limit.Rule{
			{Name: "per-minute", Algorithm: limit.TokenBucket, Limit: perMinute, Period: time.Minute},
			{Name: "per-hour", Algorithm: limit.SlidingWindowCounter, Limit: 1000, Period: time.Hour},
		},
	}, {
		Name:          "search",
		SubjectHeader: "X-User-ID",
		Rules:         []limit.Rule{{Name: "per-second", Algorithm: limit.FixedWindow, Limit: 100, Period: time.Second}},
	}}, version, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

type fixture struct {
	reg *prometheus.Registry
	obs *metrics.Observer
	svc *service.Service
	clk *clocktest.Fake
	st  *memstore.Store
}

func newFixture(t testing.TB, perMinute int64) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewRegistry(), clk: clocktest.New(epoch)}
	var err error
	if f.obs, err = metrics.New(f.reg); err != nil {
		t.Fatal(err)
	}
	f.st = memstore.New(memstore.Options{Clock: f.clk, SweepInterval: -1})
	t.Cleanup(func() { f.st.Close() })
	if f.svc, err = service.New(f.st, snapshot(t, "v1", perMinute), service.Options{Observer: f.obs, Clock: f.clk}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) check(ns, subject string, cost int64) {
	f.svc.Check(context.Background(), service.Request{Namespace: ns, Subject: subject, Cost: cost})
}

func TestDecisionsAndErrors(t *testing.T) {
	f := newFixture(t, 3)
	for range 5 { // 3 allowed, 2 denied by per-minute
		f.check("orders", "user-1", 1)
	}
	f.check("orders", "user-2", 0) // a peek: allowed, binding per-minute (fewest remaining)
	f.check("search", "user-1", 1)
	f.check("nope", "user-1", 1)        // unknown namespace
	f.check("nope-2", "user-1", 1)      // another one: still the same series
	f.check("orders", "", 1)            // invalid subject, known namespace
	f.check("orders", "user-1", -1)     // invalid cost
	f.check("random-ns", "bad\x00", 1)  // invalid input, unknown namespace
	f.check("orders", "user-3", 10_000) // over capacity: a denial, not an error

	want := `
# HELP ratelimiter_decisions_total Checks answered, by namespace, binding limit and outcome (allowed or denied).
# TYPE ratelimiter_decisions_total counter
ratelimiter_decisions_total{limit="per-minute",namespace="orders",outcome="allowed"} 4
ratelimiter_decisions_total{limit="per-minute",namespace="orders",outcome="denied"} 3
ratelimiter_decisions_total{limit="per-hour",namespace="orders",outcome="allowed"} 0
ratelimiter_decisions_total{limit="per-hour",namespace="orders",outcome="denied"} 0
ratelimiter_decisions_total{limit="per-second",namespace="search",outcome="allowed"} 1
ratelimiter_decisions_total{limit="per-second",namespace="search",outcome="denied"} 0
# HELP ratelimiter_check_errors_total Checks that failed, by namespace and kind (invalid, unknown_namespace, store).
# TYPE ratelimiter_check_errors_total counter
ratelimiter_check_errors_total{kind="invalid",namespace="orders"} 2
ratelimiter_check_errors_total{kind="invalid",namespace="_unknown"} 1
ratelimiter_check_errors_total{kind="invalid",namespace="search"} 0
ratelimiter_check_errors_total{kind="store",namespace="orders"} 0
ratelimiter_check_errors_total{kind="store",namespace="search"} 0
ratelimiter_check_errors_total{kind="store",namespace="_unknown"} 0
ratelimiter_check_errors_total{kind="unknown_namespace",namespace="orders"} 0
ratelimiter_check_errors_total{kind="unknown_namespace",namespace="search"} 0
ratelimiter_check_errors_total{kind="unknown_namespace",namespace="_unknown"} 2
# HELP ratelimiter_config_info The version of the policy in use, as a label; the value is always 1.
# TYPE ratelimiter_config_info gauge
ratelimiter_config_info{version="v1"} 1
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want),
		"ratelimiter_decisions_total", "ratelimiter_check_errors_total", "ratelimiter_config_info"); err != nil {
		t.Fatal(err)
	}
	// Every check is timed once, under its bounded namespace label.
	n := testutil.CollectAndCount(f.reg, "ratelimiter_check_duration_seconds")
	if n != 3 { // orders, search, unknown
		t.Fatalf("%d duration series, want 3", n)
	}
	if c := histogramCount(t, f.reg, "orders"); c != 9 {
		t.Errorf("orders histogram count %d, want 9", c)
	}
	if c := histogramCount(t, f.reg, "_unknown"); c != 3 {
		t.Errorf("unknown histogram count %d, want 3", c)
	}
}

func TestStoreErrorsAndSwap(t *testing.T) {
	f := newFixture(t, 3)
	f.check("orders", "user-1", 1)
	if _, err := f.svc.Swap(snapshot(t, "v2", 5)); err != nil {
		t.Fatal(err)
	}
	f.check("orders", "user-1", 1)
	f.st.Close()
	f.check("orders", "user-1", 1)
	f.check("orders", "user-1", 1)

	want := `
# HELP ratelimiter_config_info The version of the policy in use, as a label; the value is always 1.
# TYPE ratelimiter_config_info gauge
ratelimiter_config_info{version="v2"} 1
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "ratelimiter_config_info"); err != nil {
		t.Fatal(err)
	}
	m := series(t, f.reg, "ratelimiter_check_errors_total", map[string]string{"namespace": "orders", "kind": "store"})
	if got := m.GetCounter().GetValue(); got != 2 {
		t.Errorf("store errors = %v, want 2", got)
	}
}

// series returns the gathered metric of family name whose labels include
// every pair of want.
func series(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			return m
		}
	}
	t.Fatalf("no series %s%v", name, want)
	return nil
}

func histogramCount(t *testing.T, reg *prometheus.Registry, ns string) uint64 {
	t.Helper()
	return series(t, reg, "ratelimiter_check_duration_seconds", map[string]string{"namespace": ns}).GetHistogram().GetSampleCount()
}

func TestNewRejectsNilAndDuplicates(t *testing.T) {
	if _, err := metrics.New(nil); err == nil {
		t.Error("nil Registerer accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := metrics.New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg); err == nil {
		t.Error("registering twice on one registry must fail")
	}
}

func TestObserveCheckAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	f := newFixture(t, 1_000_000)
	ctx := context.Background()
	var res service.Result
	var err error
	res, err = f.svc.Check(ctx, service.Request{Namespace: "orders", Subject: "u", Cost: 1})
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() { f.obs.ObserveCheck(res, nil, time.Millisecond) })
	if allocs != 0 {
		t.Errorf("ObserveCheck allocates %.1f times per call", allocs)
	}
}

func BenchmarkObserveCheck(b *testing.B) {
	f := newFixture(b, 1_000_000)
	res, err := f.svc.Check(context.Background(), service.Request{Namespace: "orders", Subject: "u", Cost: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		f.obs.ObserveCheck(res, nil, 200*time.Microsecond)
	}
}

// A namespace that happens to be called "unknown" keeps its own series:
// checks of namespaces the policy lacks are counted apart, under a label
// no namespace can have.
func TestNamespaceCalledUnknown(t *testing.T) {
	reg := prometheus.NewRegistry()
	obs, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.New([]policy.Namespace{{Name: "unknown", SubjectHeader: "X-User-ID",
		Rules: []limit.Rule{{Name: "r", Algorithm: limit.FixedWindow, Limit: 1, Period: time.Minute}}}}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New(memstore.Options{Clock: clocktest.New(epoch), SweepInterval: -1})
	defer st.Close()
	svc, err := service.New(st, snap, service.Options{Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	svc.Check(context.Background(), service.Request{Namespace: "unknown", Subject: "u", Cost: 1})
	svc.Check(context.Background(), service.Request{Namespace: "nope", Subject: "u", Cost: 1})
	if n := histogramCount(t, reg, "unknown"); n != 1 {
		t.Errorf("checks of the namespace called unknown: %d, want 1", n)
	}
	if n := histogramCount(t, reg, metrics.UnknownNamespace); n != 1 {
		t.Errorf("checks of namespaces the policy lacks: %d, want 1", n)
	}
	m := series(t, reg, "ratelimiter_decided_by_total", map[string]string{"namespace": "unknown", "decided_by": "store", "outcome": "allowed"})
	if got := m.GetCounter().GetValue(); got != 1 {
		t.Errorf("decided_by of the namespace called unknown = %v, want 1", got)
	}
}
