// Package bench measures the Redis store side by side with
// github.com/go-redis/redis_rate (the reference GCRA-in-Lua limiter) on the
// same real redis-server processes, in one run:
//
//	cd bench && go test -run='^$' -bench=Redis -benchtime=3s
//
// It is a separate module so that the product does not depend on redis_rate.
// Every benchmark reports checks/s and the p50/p99 latency of one check at a
// fixed number of concurrent callers. The limit is never reached, so every
// check takes the full read-decide-write path.
package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

type checker func(ctx context.Context, key string) (bool, error)

// measure runs b.N checks spread over callers goroutines and reports
// throughput and latency percentiles.
func measure(b *testing.B, callers int, keys []string, check checker) {
	ctx := context.Background()
	per := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	var failed error
	var mu sync.Mutex
	b.ResetTimer()
	start := time.Now()
	for c := 0; c < callers; c++ {
		n := b.N / callers
		if c < b.N%callers {
			n++
		}
		wg.Add(1)
		go func(c, n int) {
			defer wg.Done()
			lat := make([]time.Duration, 0, n)
			k := c * 7919
			for i := 0; i < n; i++ {
				t0 := time.Now()
				ok, err := check(ctx, keys[(k+i*104729)%len(keys)])
				lat = append(lat, time.Since(t0))
				if err != nil || !ok {
					mu.Lock()
					if failed == nil {
						failed = fmt.Errorf("check failed: allowed=%v err=%v", ok, err)
					}
					mu.Unlock()
					return
				}
			}
			per[c] = lat
		}(c, n)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	all := slices.Concat(per...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "checks/s")
	b.ReportMetric(float64(all[len(all)/2])/1e3, "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100])/1e3, "p99-µs")
}

func keySet(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "orders:user-" + strconv.Itoa(i)
	}
	return keys
}

func ourChecker(b *testing.B, opts redisstore.Options) checker {
	st, err := redisstore.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	r, err := limit.Rule{Name: "per-second", Algorithm: limit.TokenBucket, Limit: 1_000_000, Period: time.Second}.Normalize()
	if err != nil {
		b.Fatal(err)
	}
	rules := []limit.Rule{r}
	return func(ctx context.Context, key string) (bool, error) {
		v, err := st.Apply(ctx, store.Request{Key: key, Rules: rules, Cost: 1})
		return v.Allowed, err
	}
}

func redisRateChecker(b *testing.B, rdb redis.UniversalClient) checker {
	b.Cleanup(func() { rdb.Close() })
	l := redis_rate.NewLimiter(rdb)
	lim := redis_rate.Limit{Rate: 1_000_000, Burst: 1_000_000, Period: time.Second}
	return func(ctx context.Context, key string) (bool, error) {
		res, err := l.Allow(ctx, key, lim)
		if err != nil {
			return false, err
		}
		return res.Allowed > 0, nil
	}
}

func BenchmarkRedis(b *testing.B) {
	poolSize := 10 * runtime.GOMAXPROCS(0) // go-redis default
	b.Run("standalone", func(b *testing.B) {
		srv := redistest.Standalone(b)
		addrs := []string{srv.Addr()}
		run(b, map[string]func(*testing.B) checker{
			"redisstore": func(b *testing.B) checker { return ourChecker(b, redisstore.Options{Addrs: addrs}) },
			"redisstore-unbatched": func(b *testing.B) checker {
				return ourChecker(b, redisstore.Options{Addrs: addrs, MaxBatch: 1})
			},
			"redis_rate": func(b *testing.B) checker {
				return redisRateChecker(b, redis.NewClient(&redis.Options{Addr: addrs[0], PoolSize: max(poolSize, 64)}))
			},
		})
	})
	b.Run("cluster", func(b *testing.B) {
		c := redistest.Cluster(b, 3, 0)
		run(b, map[string]func(*testing.B) checker{
			"redisstore": func(b *testing.B) checker {
				return ourChecker(b, redisstore.Options{Addrs: c.Addrs(), Mode: redisstore.Cluster})
			},
			"redis_rate": func(b *testing.B) checker {
				return redisRateChecker(b, redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), PoolSize: max(poolSize, 64)}))
			},
		})
	})
}

func run(b *testing.B, impls map[string]func(*testing.B) checker) {
	names := make([]string, 0, len(impls))
	for n := range impls {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, keys := range []struct {
		name string
		keys []string
	}{{"hot", keySet(1)}, {"100k", keySet(100_000)}} {
		for _, callers := range []int{1, 16, 64} {
			for _, name := range names {
				b.Run(fmt.Sprintf("%s/%s/callers=%d", keys.name, name, callers), func(b *testing.B) {
					measure(b, callers, keys.keys, impls[name](b))
				})
			}
		}
	}
}
