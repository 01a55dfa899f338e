package redisstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

func open(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// In server-clock mode the script reads Redis TIME: the headline numbers hold
// up to the few microseconds that pass between calls.
func TestServerClockTokenBucket(t *testing.T) {
	srv := redistest.Standalone(t)
	s := open(t, Options{Addrs: []string{srv.Addr()}})
	rules := storetest.Rules(t, limit.Rule{Name: "per-10h", Algorithm: limit.TokenBucket, Limit: 5, Period: 10 * time.Hour})
	ctx := context.Background()
	for i := int64(0); i < 5; i++ {
		v, err := s.Apply(ctx, store.Request{Key: "orders:user-42", Rules: rules, Cost: 1})
		if err != nil || !v.Allowed || v.D[0].Remaining != 4-i {
			t.Fatalf("check %d: %+v %v", i+1, v, err)
		}
	}
	v, err := s.Apply(ctx, store.Request{Key: "orders:user-42", Rules: rules, Cost: 1})
	if err != nil || v.Allowed || v.RetryAfter > 2*time.Hour || v.RetryAfter < 2*time.Hour-time.Minute {
		t.Fatalf("6th check: %+v %v, want denied with a retry of just under 2h", v, err)
	}
	// The state is where the docs say, with a TTL that covers the refill.
	// TTL = time to full (10h) + 1s of slack, in ms.
	ttl, err := strconv.Atoi(srv.MustDo("PTTL", "rl:{orders:user-42}:per-10h"))
	if err != nil || ttl > 36_001_000 || ttl < 36_000_000-60_000 {
		t.Fatalf("PTTL = %d (%v), want ten hours and a second", ttl, err)
	}
}

// Three stores stand for three ratelimiter instances sharing one Redis, with
// server time: 600 concurrent checks of one subject with limit 100 admit
// exactly 100, and a two-rule set with costs charges both rules alike.
func TestInstancesShareExactCounts(t *testing.T) {
	srv := redistest.Standalone(t)
	var stores []*Store
	for i := 0; i < 3; i++ {
		stores = append(stores, open(t, Options{Addrs: []string{srv.Addr()}}))
	}
	rules := storetest.Rules(t,
		limit.Rule{Name: "per-hour", Algorithm: limit.TokenBucket, Limit: 100, Period: time.Hour},
		limit.Rule{Name: "per-day", Algorithm: limit.SlidingWindowCounter, Limit: 150, Period: 24 * time.Hour},
	)
	var admitted, allowed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 600; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cost := int64(1)
			if i%5 == 0 {
				cost = 3
			}
			v, err := stores[i%3].Apply(context.Background(), store.Request{Key: "orders:hot", Rules: rules, Cost: cost})
			if err != nil {
				t.Error(err)
				return
			}
			if v.Allowed {
				admitted.Add(cost)
				allowed.Add(1)
			}
		}(i)
	}
	wg.Wait()
	v, err := stores[0].Apply(context.Background(), store.Request{Key: "orders:hot", Rules: rules, Cost: 0})
	if err != nil {
		t.Fatal(err)
	}
	if hour, day := 100-v.D[0].Remaining, 150-v.D[1].Remaining; hour != admitted.Load() || day != admitted.Load() {
		t.Fatalf("admitted %d units but the rules were charged %d and %d", admitted.Load(), hour, day)
	}
	if admitted.Load() < 98 || admitted.Load() > 100 {
		t.Fatalf("admitted %d units, want the limit of 100 filled (costs 1 and 3)", admitted.Load())
	}
}

// A Redis that is down gives ErrUnavailable within the timeout, never a
// panic; once it is back (with an empty script cache), checks work again
// through the EVAL fallback.
func TestRedisDownAndBack(t *testing.T) {
	srv := redistest.Standalone(t)
	s := open(t, Options{Addrs: []string{srv.Addr()}, Timeout: 2 * time.Second})
	rules := storetest.Rules(t, limit.Rule{Name: "r", Algorithm: limit.FixedWindow, Limit: 10, Period: time.Hour})
	ctx := context.Background()
	if _, err := s.Apply(ctx, store.Request{Key: "ns:u", Rules: rules, Cost: 1}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := s.Apply(ctx, store.Request{Key: "ns:u", Rules: rules, Cost: 1})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Apply with Redis down = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Apply with Redis down took %v", took)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustDo("SCRIPT", "EXISTS", scriptSHA); got != "0" {
		t.Fatalf("SCRIPT EXISTS after restart = %q, want 0 (the cache is empty)", got)
	}
	var v limit.Verdict
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err = s.Apply(ctx, store.Request{Key: "ns:u", Rules: rules, Cost: 1})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !v.Allowed || v.D[0].Remaining != 9 {
		t.Fatalf("after restart: %+v %v, want allowed with 9 remaining (no persistence: state restarts)", v, err)
	}
}

// A caller whose context ends gets an error at once, not after the store's
// own timeout.
func TestContextCancel(t *testing.T) {
	srv := redistest.Standalone(t)
	s := open(t, Options{Addrs: []string{srv.Addr()}})
	rules := storetest.Rules(t, limit.Rule{Name: "r", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Apply(ctx, store.Request{Key: "ns:u", Rules: rules, Cost: 1}); !errors.Is(err, context.Canceled) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Apply with a cancelled context = %v", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{Addrs: []string{"127.0.0.1:1"}, Mode: "ring"},
		{Addrs: []string{"127.0.0.1:1"}, Mode: Sentinel},
	} {
		if s, err := New(o); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	// Nothing listens on port 1: connecting fails with ErrUnavailable.
	if s, err := New(Options{Addrs: []string{"127.0.0.1:1"}}); !errors.Is(err, store.ErrUnavailable) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("New on a closed port = %v, want ErrUnavailable", err)
	}
}

// A bucket value written before the latest-instant field existed (an older
// script, mid rolling deploy) is still read, never a script error.
func TestReadsOlderBucketValues(t *testing.T) {
	srv := redistest.Standalone(t)
	s := open(t, Options{Addrs: []string{srv.Addr()}})
	rules := storetest.Rules(t, limit.Rule{Name: "r", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour})
	srv.MustDo("SET", s.Key("ns:old", "r"), "1 1 0 360000000000", "PX", "60000")
	v, err := s.Apply(context.Background(), store.Request{Key: "ns:old", Rules: rules, Cost: 1})
	if err != nil || !v.Allowed || v.D[0].Remaining != 9 {
		t.Fatalf("%+v %v, want allowed with 9 remaining (the old TAT is long past)", v, err)
	}
}

// A Redis that refuses the credentials is not "unavailable": waiting will
// not change its answer, so New says so plainly (serve then exits instead
// of serving by its failure policies forever). An unreachable address is
// ErrUnavailable.
func TestNewRefusedOrUnreachable(t *testing.T) {
	srv := redistest.Standalone(t)
	srv.MustDo("CONFIG", "SET", "requirepass", "right-password")
	for _, pw := range []string{"", "wrong-password"} {
		_, err := New(Options{Addrs: []string{srv.Addr()}, Password: pw, Timeout: time.Second})
		if err == nil || errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("password %q: %v, want a refusal that is not ErrUnavailable", pw, err)
		}
	}
	s, err := New(Options{Addrs: []string{srv.Addr()}, Password: "right-password", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Addrs: []string{srv.Addr()}, Timeout: time.Second}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Redis stopped: %v, want ErrUnavailable", err)
	}
}

// A Redis that may evict keys (maxmemory with an evicting policy) is
// reported, node by node; one with noeviction, or no maxmemory, is not.
func TestEvictionRisk(t *testing.T) {
	safe := redistest.Standalone(t)
	if risks := open(t, Options{Addrs: []string{safe.Addr()}}).EvictionRisk(context.Background()); len(risks) != 0 {
		t.Errorf("no maxmemory: %q, want no risk", risks)
	}
	full := redistest.Standalone(t, redistest.WithArgs("--maxmemory", "100mb", "--maxmemory-policy", "noeviction"))
	if risks := open(t, Options{Addrs: []string{full.Addr()}}).EvictionRisk(context.Background()); len(risks) != 0 {
		t.Errorf("noeviction: %q, want no risk", risks)
	}
	lru := redistest.Standalone(t, redistest.WithArgs("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"))
	risks := open(t, Options{Addrs: []string{lru.Addr()}}).EvictionRisk(context.Background())
	if len(risks) != 1 || !strings.Contains(risks[0], "allkeys-lru") || !strings.Contains(risks[0], lru.Addr()) {
		t.Errorf("allkeys-lru: %q, want it named with the node", risks)
	}
	c := redistest.Cluster(t, 3, 0, redistest.WithArgs("--maxmemory", "50mb", "--maxmemory-policy", "volatile-ttl"))
	if risks := open(t, Options{Addrs: c.Addrs(), Mode: Cluster}).EvictionRisk(context.Background()); len(risks) != 3 {
		t.Errorf("a cluster of volatile-ttl nodes: %q, want all 3", risks)
	}
}
