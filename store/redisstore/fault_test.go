package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

// No test of the package leaves a goroutine behind: a closed Store has
// stopped its flushers, its client and its heartbeat, whatever deadlines
// and outages its calls went through. Two goroutines are not ours to end:
// the redistest spawner lives as long as the test binary, by design, and
// rueidis closes the connections a cluster topology refresh replaced five
// seconds later, from a goroutine of its own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakOptions...)
}

var leakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/distributedratelimiter/ratelimiter/internal/redistest.spawn.func1.1"),
	goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
}

// A stalled Redis (CLIENT PAUSE: the server takes commands and answers
// nothing until the pause ends) costs each call its caller's deadline, no
// more; calls that gave up while queued are never sent; the connections do
// not multiply; and the store answers again once the stall ends.
func TestDeadlineUnderStall(t *testing.T) {
	srv := redistest.Standalone(t)
	s := open(t, Options{Addrs: []string{srv.Addr()}})
	rules := storetest.Rules(t, limit.Rule{Name: "r", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Hour})
	ctx := context.Background()
	if _, err := s.Apply(ctx, store.Request{Key: "ns:u", Rules: rules, Cost: 1}); err != nil {
		t.Fatal(err)
	}
	srv.MustDo("CONFIG", "RESETSTAT")
	srv.MustDo("CLIENT", "PAUSE", "700", "ALL")

	const callers, each = 16, 10
	const deadline = 10 * time.Millisecond
	var wg sync.WaitGroup
	var mu sync.Mutex
	var worst time.Duration
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				cctx, cancel := context.WithTimeout(ctx, deadline)
				start := time.Now()
				_, err := s.Apply(cctx, store.Request{Key: "ns:u", Rules: rules, Cost: 1})
				took := time.Since(start)
				cancel()
				if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Apply during the stall = %v, want ErrUnavailable and DeadlineExceeded", err)
				}
				mu.Lock()
				worst = max(worst, took)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d calls during a stall, deadline %v: the slowest returned after %v", callers*each, deadline, worst)
	if worst > deadline+200*time.Millisecond { // generous: -race and 2 cores
		t.Errorf("a call returned %v after its deadline of %v", worst, deadline)
	}

	// Back: the store answers, with the units of the calls that were sent
	// before their callers gave up consumed, and only those.
	var v limit.Verdict
	var err error
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(10 * time.Millisecond) {
		if v, err = s.Apply(ctx, store.Request{Key: "ns:u", Rules: rules, Cost: 1}); err == nil {
			break
		}
	}
	if err != nil || !v.Allowed {
		t.Fatalf("after the stall: %+v %v", v, err)
	}
	info, err := srv.Info("commandstats")
	if err != nil {
		t.Fatal(err)
	}
	calls := statCalls(info["cmdstat_evalsha"]) + statCalls(info["cmdstat_eval"])
	consumed := 1000 - 1 - v.D[0].Remaining - 1
	t.Logf("script calls during and after the stall: %d (for %d checks); units consumed by abandoned checks: %d", calls, callers*each+1, consumed)
	if calls > 20 {
		t.Errorf("%d script calls for %d abandoned checks: abandoned calls were sent", calls, callers*each)
	}
	clients, err := srv.Info("clients")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(clients["connected_clients"]); n > 4 {
		t.Errorf("%d clients connected after the stall: connections leak", n)
	}
}

// statCalls reads calls=N out of an INFO commandstats value.
func statCalls(v string) int64 {
	var n int64
	fmt.Sscanf(v, "calls=%d", &n)
	return n
}

// Members: instances sharing a Redis see each other, leave on Close, keep
// their last count while Redis is down, and report the fallback count
// before any renewal succeeded.
func TestMembers(t *testing.T) {
	srv := redistest.Standalone(t)
	opts := MembersOptions{Interval: 30 * time.Millisecond, Fallback: 7}
	var failed atomic.Int64 // renewals of instance-1 that failed
	var ms []*Members
	for i := range 3 {
		s := open(t, Options{Addrs: []string{srv.Addr()}})
		o := opts
		o.ID = fmt.Sprint("instance-", i)
		if i == 1 {
			o.OnError = func(error) { failed.Add(1) }
		}
		m := s.StartMembers(o)
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	waitCount := func(m *Members, want int) {
		t.Helper()
		for start := time.Now(); m.Count() != want; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s counts %d instances, want %d", m.ID(), m.Count(), want)
			}
		}
	}
	waitCount(ms[0], 3)
	if got := srv.MustDo("ZCARD", ms[0].s.MembersKey()); got != "3" {
		t.Fatalf("ZCARD = %s", got)
	}
	if ttl, _ := strconv.Atoi(srv.MustDo("PTTL", ms[0].s.MembersKey())); ttl <= 0 || ttl > 180 {
		t.Fatalf("PTTL of the members key = %d ms, want at most 2 TTLs", ttl)
	}
	if err := ms[2].Close(); err != nil {
		t.Fatal(err)
	}
	// Both that stay must have believed the drop (each after its own 2
	// TTLs of lower reads) before Redis goes: instance-1's last count is
	// what is checked below.
	waitCount(ms[0], 2)
	waitCount(ms[1], 2)

	// Redis gone: the last count stays, through more failed renewals than
	// span the 2*TTL after which a lower count would be believed.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	before := failed.Load()
	for start := time.Now(); failed.Load()-before < 7; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("only %d renewals failed with Redis down", failed.Load()-before)
		}
	}
	if n := ms[1].Count(); n != 2 {
		t.Fatalf("with Redis down the count is %d, want the last one, 2", n)
	}
}

// Before any renewal succeeds, Count is the configured fallback.
func TestMembersFallback(t *testing.T) {
	srv := redistest.Standalone(t)
	s := open(t, Options{Addrs: []string{srv.Addr()}, Timeout: 100 * time.Millisecond})
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	var errs int
	var mu sync.Mutex
	m := s.StartMembers(MembersOptions{Interval: 20 * time.Millisecond, Fallback: 4, OnError: func(error) {
		mu.Lock()
		errs++
		mu.Unlock()
	}})
	defer m.Close()
	if n := m.Count(); n != 4 {
		t.Fatalf("Count = %d with Redis down since start, want the fallback 4", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if errs == 0 {
		t.Fatal("no renewal error reported")
	}
}

// The members set is one key, so it works on a Cluster.
func TestMembersCluster(t *testing.T) {
	c := redistest.Cluster(t, 3, 0)
	var ms []*Members
	for i := range 3 {
		s := open(t, Options{Addrs: c.Addrs(), Mode: Cluster})
		m := s.StartMembers(MembersOptions{Interval: 30 * time.Millisecond, ID: fmt.Sprint("i", i)})
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	for start := time.Now(); ms[0].Count() != 3; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("counts %d instances on the cluster, want 3", ms[0].Count())
		}
	}
}

// The count rises at once and drops only after lower counts for 2*TTL:
// the renewals right after a failover (1, 2, 3 as the instances renew on
// the promoted replica) never shrink it.
func TestMembersCountDropsSlowly(t *testing.T) {
	m := &Members{ttl: time.Second}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		n    int64
		at   time.Duration
		want int
	}{
		{3, 0, 3}, {1, 3 * time.Second, 3}, {2, 3200 * time.Millisecond, 3}, {3, 3400 * time.Millisecond, 3},
		{2, 4 * time.Second, 3}, {2, 5 * time.Second, 3}, {2, 6 * time.Second, 2}, {4, 6100 * time.Millisecond, 4},
	}
	for _, s := range steps {
		m.observe(s.n, t0.Add(s.at))
		if got := m.Count(); got != s.want {
			t.Fatalf("after reading %d at +%v: Count %d, want %d", s.n, s.at, got, s.want)
		}
	}
}
