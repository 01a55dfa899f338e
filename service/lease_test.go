package service_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// A leased limit reaches the store marked Lease, on the subject path and
// the descriptors path; the deny cache neither answers nor keeps its
// denials (the holder must see every check), and under the Guard a burst
// of concurrent checks from three instances, time standing still, admits
// no more than the store's bucket holds.
func TestLeasedLimitsThroughTheService(t *testing.T) {
	clk := clocktest.New(epoch)
	ms := newMemstore(t, clk)
	global := limit.Rule{Name: "global", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Second, Lease: true}
	snap, err := policy.New([]policy.Namespace{
		{Name: "tenants", Rules: []limit.Rule{global}},
		{Name: "orders", Descriptors: []policy.Matcher{
			{Key: "endpoint", Value: "place_order", Rules: []limit.Rule{global}},
			{Key: "user", Rules: []limit.Rule{tokenBucket("per-user", 1000, time.Second)}},
		}},
	}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	var svcs [3]*service.Service
	var lss [3]*lease.Store
	for i := range svcs {
		ls, err := lease.New(shared{ms}, lease.Options{Clock: clk, Instances: func() int { return 3 }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ls.Close() })
		lss[i] = ls
		svcs[i] = newGuarded(t, ls, snap, clk, service.Guard{Breaker: service.Breaker{Disabled: true}})
	}
	for _, tc := range []struct {
		name string
		req  service.Request
	}{
		{"subject", service.Request{Namespace: "tenants", Subject: "acme", Cost: 1}},
		{"descriptors", service.Request{Namespace: "orders", Cost: 1, Descriptors: []service.Descriptor{
			{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: "endpoint", Value: "place_order"}}}, Cost: 1},
			{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: "user", Value: "u1"}}}, Cost: 1},
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			by := map[service.DecidedBy]int{}
			allowed := 0
			var wg sync.WaitGroup
			for g := range 30 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 100 {
						res, err := svcs[g%3].Check(context.Background(), tc.req)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						by[res.DecidedBy]++
						if res.Verdict.Allowed {
							allowed++
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()

			// Time stands still: the store keeps 500 of the burst of 1000,
			// and holders that found the bucket contended leave what is
			// under half of it there until their next take, half a lease
			// later (a time that does not come here).
			if allowed > 500 || allowed < 250 || by[service.DecidedByStore] != 3000 {
				t.Errorf("allowed %d of 3000, decided by %v; want 250 to 500, all by the store", allowed, by)
			}
		})
	}
	var takes int64
	for _, ls := range lss {
		takes += ls.Stats().Takes
	}
	if takes > 60 {
		t.Errorf("%d takes for 6000 checks, want at most 1 per 100", takes)
	}
}

// shared is a memstore that several lease.Stores share, as instances share
// Redis: closing one leaves it open.
type shared struct{ *memstore.Store }

func (shared) Close() error { return nil }
