package metrics_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// down is a store that is always unavailable.
type down struct{}

func (down) Apply(context.Context, store.Request) (limit.Verdict, error) {
	return limit.Verdict{}, store.ErrUnavailable
}
func (down) ApplyAll(context.Context, []store.Request, []limit.Verdict) (bool, error) {
	return false, store.ErrUnavailable
}
func (down) Close() error { return nil }

// The deciding path is counted per namespace and outcome, and the breaker's
// opening shows in the gauge and the transitions.
func TestDecidedByAndBreaker(t *testing.T) {
	reg := prometheus.NewRegistry()
	obs, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	fallback := memstore.New(memstore.Options{SweepInterval: -1})
	defer fallback.Close()
	svc, err := service.New(down{}, snapshot(t, "v1", 3), service.Options{Observer: obs, Guard: &service.Guard{
		Fallback: fallback,
		Breaker:  service.Breaker{MinCalls: 2, OpenFor: time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for range 5 { // 3 admitted by the local fallback (limit 3), 2 denied
		svc.Check(context.Background(), service.Request{Namespace: "orders", Subject: "u", Cost: 1})
	}
	want := `
# HELP ratelimiter_store_breakers_open Circuit breakers in front of the store that are open or half-open (0: the store is called normally).
# TYPE ratelimiter_store_breakers_open gauge
ratelimiter_store_breakers_open 1
# HELP ratelimiter_store_breaker_transitions_total Changes of state of the circuit breaker in front of the store, by new state.
# TYPE ratelimiter_store_breaker_transitions_total counter
ratelimiter_store_breaker_transitions_total{to="open"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"ratelimiter_store_breakers_open", "ratelimiter_store_breaker_transitions_total"); err != nil {
		t.Fatal(err)
	}
	if n := series(t, reg, "ratelimiter_check_errors_total", map[string]string{"namespace": "orders", "kind": "store"}).GetCounter().GetValue(); n != 5 {
		t.Errorf("%v store errors counted, want the 5 answered by the policy", n)
	}
	for _, c := range []struct {
		by, outcome string
		n           float64
	}{{"local", "allowed", 3}, {"local", "denied", 2}, {"store", "allowed", 0}, {"open", "allowed", 0}} {
		got := series(t, reg, "ratelimiter_decided_by_total",
			map[string]string{"namespace": "orders", "decided_by": c.by, "outcome": c.outcome}).GetCounter().GetValue()
		if got != c.n {
			t.Errorf("decided_by=%s outcome=%s: %v, want %v", c.by, c.outcome, got, c.n)
		}
	}
}

// A check shed for overload counts as decided_by="shed", outcome denied,
// and not as a store error.
func TestShedCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	obs, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	snap := snapshot(t, "v1", 3)
	obs.ObserveSnapshot(snap)
	set, err := snap.Resolve("orders", "u")
	if err != nil {
		t.Fatal(err)
	}
	obs.ObserveCheck(service.Result{Namespace: "orders", Subject: "u", Set: set, DecidedBy: service.DecidedByShed},
		fmt.Errorf("check orders: %w", service.ErrOverloaded), time.Millisecond)
	if n := series(t, reg, "ratelimiter_decided_by_total", map[string]string{"namespace": "orders", "decided_by": "shed", "outcome": "denied"}).GetCounter().GetValue(); n != 1 {
		t.Errorf("decided_by=shed: %v, want 1", n)
	}
	if n := series(t, reg, "ratelimiter_check_errors_total", map[string]string{"namespace": "orders", "kind": "store"}).GetCounter().GetValue(); n != 0 {
		t.Errorf("a shed check counted as %v store errors", n)
	}
}
