package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// BenchmarkDescriptors measures what a request of three descriptors (a
// user, its IP and an endpoint-wide cap, one all-or-nothing ApplyAll) costs
// next to a check of one subject, side by side in one run, on a standalone
// Redis (one script call either way) and a 3-primary Cluster (the three
// keys in three slots: reserve-then-refund, here never refunded: the limits
// are never reached):
//
//	cd bench && go test -run='^$' -bench=Descriptors -benchtime=2s
func BenchmarkDescriptors(b *testing.B) { onRedis(b, runDescriptors) }

func runDescriptors(b *testing.B, opts redisstore.Options, _ []*redistest.Server) {
	rule := func(name string) []limit.Rule {
		r, err := limit.Rule{Name: name, Algorithm: limit.TokenBucket, Limit: 1_000_000_000, Period: time.Hour}.Normalize()
		if err != nil {
			b.Fatal(err)
		}
		return []limit.Rule{r}
	}
	user, ip, cap := rule("per-user"), rule("per-ip"), rule("cap")
	users := keySet(100_000)
	for _, callers := range []int{16, 64} {
		b.Run(fmt.Sprintf("one-subject/callers=%d", callers), func(b *testing.B) {
			st := newStore(b, opts)
			measure(b, callers, users, func(ctx context.Context, key string) (bool, error) {
				v, err := st.Apply(ctx, store.Request{Key: key, Rules: user, Cost: 1})
				return v.Allowed, err
			})
		})
		b.Run(fmt.Sprintf("three-descriptors/callers=%d", callers), func(b *testing.B) {
			st := newStore(b, opts)
			measure(b, callers, users, func(ctx context.Context, key string) (bool, error) {
				n, _ := strconv.Atoi(strings.TrimPrefix(key, "orders:user-"))
				reqs := []store.Request{
					{Key: key, Rules: user, Cost: 1},
					{Key: "orders:\x1dremote_address=10.0." + strconv.Itoa(n%1000/250) + "." + strconv.Itoa(n%250), Rules: ip, Cost: 1},
					{Key: "orders:\x1dendpoint=orders", Rules: cap, Cost: 1},
				}
				var out [3]limit.Verdict
				return st.ApplyAll(ctx, reqs, out[:])
			})
		})
	}
}

// onRedis runs run on a standalone Redis and on a 3-primary Cluster, as
// sub-benchmarks "standalone" and "cluster", with the store options that
// reach each and its primaries.
func onRedis(b *testing.B, run func(b *testing.B, opts redisstore.Options, primaries []*redistest.Server)) {
	b.Run("standalone", func(b *testing.B) {
		srv := redistest.Standalone(b)
		run(b, redisstore.Options{Addrs: []string{srv.Addr()}}, []*redistest.Server{srv})
	})
	b.Run("cluster", func(b *testing.B) {
		c := redistest.Cluster(b, 3, 0)
		primaries, err := c.Primaries()
		if err != nil {
			b.Fatal(err)
		}
		run(b, redisstore.Options{Addrs: c.Addrs(), Mode: redisstore.Cluster}, primaries)
	})
}

func newStore(b *testing.B, opts redisstore.Options) *redisstore.Store {
	st, err := redisstore.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}
