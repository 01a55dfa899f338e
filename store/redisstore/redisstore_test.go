package redisstore

import (
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

// newStore returns a factory of client-clock stores on addrs; every store of
// one test shares the Redis but gets its own key prefix.
func newStore(t *testing.T, opts Options) storetest.Factory {
	n := 0
	return func(t *testing.T, clk *clocktest.Fake) store.Store {
		n++
		o := opts
		o.Clock = clk
		o.Timeout = 10 * time.Second // conformance, not deadlines: a loaded CI machine must not fail it
		o.Prefix = t.Name() + ":" + string(rune('a'+n%26)) + ":"
		s, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

func TestConformanceStandalone(t *testing.T) {
	srv := redistest.Standalone(t)
	storetest.Run(t, newStore(t, Options{Addrs: []string{srv.Addr()}}))
}

func TestConformanceStandaloneUnbatched(t *testing.T) {
	srv := redistest.Standalone(t)
	storetest.Run(t, newStore(t, Options{Addrs: []string{srv.Addr()}, MaxBatch: 1}))
}

func TestConformanceCluster(t *testing.T) {
	c := redistest.Cluster(t, 3, 0)
	storetest.Run(t, newStore(t, Options{Addrs: c.Addrs(), Mode: Cluster}))
}

func TestConformanceSentinel(t *testing.T) {
	s := redistest.Sentinel(t, "rl-primary")
	storetest.Run(t, newStore(t, Options{Addrs: s.SentinelAddrs(), Mode: Sentinel, MasterName: "rl-primary"}))
}
