package redisstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// Observe sees every check in exactly one script call, on a standalone
// Redis and on a Cluster, and the calls carry several checks when many
// callers check one key at once (on a Cluster, each key batches apart).
func TestObserveCountsEveryCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server")
	}
	r, err := limit.Rule{Name: "per-second", Algorithm: limit.TokenBucket, Limit: 1_000_000, Period: time.Second}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	rules := []limit.Rule{r}
	srv := redistest.Standalone(t)
	c := redistest.Cluster(t, 3, 0)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"standalone", Options{Addrs: []string{srv.Addr()}}},
		{"cluster", Options{Addrs: c.Addrs(), Mode: Cluster}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			calls, checks, most := 0, 0, 0
			o := tc.opts
			o.Observe = func(took time.Duration, n int) {
				mu.Lock()
				defer mu.Unlock()
				if took <= 0 || n < 1 {
					t.Errorf("observed a call of %v and %d checks", took, n)
				}
				calls, checks, most = calls+1, checks+n, max(most, n)
			}
			st, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			const callers, each = 64, 50
			var wg sync.WaitGroup
			for i := range callers {
				wg.Go(func() {
					for range each {
						// One key: a Cluster batches checks of one key only.
						if _, err := st.Apply(context.Background(), store.Request{Key: "observe", Rules: rules, Cost: 1}); err != nil {
							t.Error(i, err)
							return
						}
					}
				})
			}
			wg.Wait()
			st.Close() // waits for the calls in flight, and their Observe
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%d checks in %d script calls, at most %d in one", checks, calls, most)
			if checks != callers*each {
				t.Errorf("observed %d checks, want %d", checks, callers*each)
			}
			// 64 callers of one key, at most 2 script calls of it in flight:
			// the others queue and go together, on a Cluster too.
			if calls < 1 || 4*calls > checks {
				t.Errorf("observed %d script calls for %d checks, want at most a quarter as many", calls, checks)
			}
		})
	}
}
