package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// BenchmarkLease measures a global limit (one key every check names) two
// ways, side by side in one run, on a standalone Redis and on a 3-primary
// Cluster: "shared-key", every check a script call on the one key (batched
// by the store), and "leased", checks decided from this instance's slices
// of the same bucket (lease.Store, slices of at most 500ms). Besides
// checks/s and latency it reports the script calls Redis ran per check
// (INFO commandstats, every primary):
//
//	cd bench && go test -run='^$' -bench=Lease -benchtime=2s
//
// The limit, 10,000,000/s, is never reached: the comparison is of the
// cost of a check, not of a denial.
func BenchmarkLease(b *testing.B) { onRedis(b, runLease) }

func runLease(b *testing.B, opts redisstore.Options, primaries []*redistest.Server) {
	r, err := limit.Rule{Name: "global", Algorithm: limit.TokenBucket, Limit: 10_000_000, Period: time.Second, Lease: true}.Normalize()
	if err != nil {
		b.Fatal(err)
	}
	rules := []limit.Rule{r}
	key := []string{"orders:\x1dendpoint=orders"}
	// scriptCalls counts the script calls (EVALSHA and EVAL) of every
	// primary since the last reset.
	scriptCalls := func() (n int64) {
		for _, p := range primaries {
			info, err := p.Info("commandstats")
			if err != nil {
				b.Fatal(err)
			}
			n += statCalls(info["cmdstat_evalsha"]) + statCalls(info["cmdstat_eval"])
		}
		return n
	}
	resetStats := func() {
		for _, p := range primaries {
			p.MustDo("CONFIG", "RESETSTAT")
		}
	}
	for _, callers := range []int{16, 64} {
		b.Run(fmt.Sprintf("shared-key/callers=%d", callers), func(b *testing.B) {
			st := newStore(b, opts)
			resetStats()
			measure(b, callers, key, func(ctx context.Context, key string) (bool, error) {
				v, err := st.Apply(ctx, store.Request{Key: key, Rules: rules, Cost: 1})
				return v.Allowed, err
			})
			b.ReportMetric(float64(scriptCalls())/float64(b.N), "redis-calls/check")
		})
		b.Run(fmt.Sprintf("leased/callers=%d", callers), func(b *testing.B) {
			st, err := lease.New(newStore(b, opts), lease.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			resetStats()
			measure(b, callers, key, func(ctx context.Context, key string) (bool, error) {
				v, err := st.Apply(ctx, store.Request{Key: key, Rules: rules, Cost: 1, Lease: true})
				return v.Allowed, err
			})
			b.ReportMetric(float64(scriptCalls())/float64(b.N), "redis-calls/check")
		})
	}
}

// statCalls reads calls=N out of an INFO commandstats value.
func statCalls(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(strings.Split(v, ",")[0], "calls="), 10, 64)
	return n
}
