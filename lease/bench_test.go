package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// BenchmarkCheck compares a leased check, decided from this instance's
// slice, with the same check of the same limit decided by the memory store
// (what a check costs with no network at all), one goroutine each:
//
//	go test -run='^$' -bench=Check -benchmem -count=3 ./lease/
//
// The limit is never reached: every check is admitted, and the leased one
// takes a new slice once every few thousand checks.
func BenchmarkCheck(b *testing.B) {
	r, err := limit.Rule{Name: "global", Algorithm: limit.TokenBucket, Limit: 1_000_000_000, Period: time.Second, Lease: true}.Normalize()
	if err != nil {
		b.Fatal(err)
	}
	rules := []limit.Rule{r}
	req := store.Request{Key: "orders:\x1dendpoint=orders", Rules: rules, Cost: 1}
	run := func(b *testing.B, st store.Store, req store.Request) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			v, err := st.Apply(ctx, req)
			if err != nil || !v.Allowed {
				b.Fatalf("check: allowed=%v err=%v", v.Allowed, err)
			}
		}
	}
	b.Run("memory", func(b *testing.B) {
		mem := memstore.New(memstore.Options{})
		defer mem.Close()
		run(b, mem, req)
	})
	b.Run("leased", func(b *testing.B) {
		mem := memstore.New(memstore.Options{})
		defer mem.Close()
		st, err := lease.New(mem, lease.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		leased := req
		leased.Lease = true
		run(b, st, leased)
		s := st.Stats()
		b.ReportMetric(float64(s.Takes+s.Returns)/float64(b.N), "store-calls/check")
	})
}
