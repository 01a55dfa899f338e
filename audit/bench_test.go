package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/audit"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// BenchmarkCheck measures a check on the memory store (10,000 subjects,
// one goroutine) without the audit, and with it at 1% and 100% of the
// subjects, its replay running beside:
//
//	go test -run='^$' -bench=Check -benchmem -count=3 ./audit/
func BenchmarkCheck(b *testing.B) {
	r, err := limit.Rule{Name: "per-second", Algorithm: limit.TokenBucket, Limit: 1_000_000, Period: time.Second}.Normalize()
	if err != nil {
		b.Fatal(err)
	}
	snap, err := policy.New([]policy.Namespace{{Name: "orders", Rules: []limit.Rule{r}}}, "v1", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	subjects := make([]string, 10_000)
	for i := range subjects {
		subjects[i] = fmt.Sprint("user-", i)
	}
	for _, rate := range []float64{0, 0.01, 1} {
		b.Run(fmt.Sprintf("audit=%g", rate), func(b *testing.B) {
			st := memstore.New(memstore.Options{})
			defer st.Close()
			var obs service.Observer
			var a *audit.Auditor
			if rate > 0 {
				a = audit.New(audit.Options{Rate: rate, Exclusive: true})
				obs = a
				ctx, cancel := context.WithCancel(context.Background())
				tick := time.NewTicker(audit.DefaultHorizon / 2)
				done := make(chan struct{})
				go func() { defer close(done); a.Run(ctx, tick.C) }()
				defer func() { cancel(); tick.Stop(); <-done }()
			}
			svc, err := service.New(st, snap, service.Options{Observer: obs})
			if err != nil {
				b.Fatal(err)
			}
			defer svc.Close()
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := svc.Check(ctx, service.Request{Namespace: "orders", Subject: subjects[i%len(subjects)], Cost: 1}); err != nil {
					b.Fatal(err)
				}
				i++
			}
			if a != nil {
				s := a.Stats()
				var over int64
				for _, c := range s.Counts {
					over += c.Over + c.Under
				}
				if over != 0 {
					b.Fatalf("the audit disagreed %d times", over)
				}
				b.ReportMetric(float64(s.Dropped)/float64(b.N), "dropped/check")
			}
		})
	}
}
