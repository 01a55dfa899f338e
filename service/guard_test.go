package service_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// Every test of the package ends with no goroutine left behind: deadlines,
// the breaker and the fallback store start none that outlive a Service.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// flaky is a store in front of another that can be made to fail or hang
// (wait for its context to end, as a black-holed Redis does).
type flaky struct {
	st    store.Store
	mode  atomic.Int32 // modeOK, modeFail, modeHang
	calls atomic.Int64

	mu        sync.Mutex
	deadlines []time.Duration // time left on each call's context
	seen      []string        // the key of every call, in order

	entered chan struct{} // when set, told of each call as it begins
}

const (
	modeOK = iota
	modeFail
	modeHang
)

func (f *flaky) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	if err := f.call(ctx, req.Key); err != nil {
		return limit.Verdict{}, err
	}
	return f.st.Apply(ctx, req)
}

func (f *flaky) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	if err := f.call(ctx, reqs[0].Key); err != nil {
		return false, err
	}
	return f.st.ApplyAll(ctx, reqs, out)
}

// call records a call of key and fails it as the mode says.
func (f *flaky) call(ctx context.Context, key string) error {
	f.calls.Add(1)
	f.mu.Lock()
	f.seen = append(f.seen, key)
	f.mu.Unlock()
	if f.entered != nil {
		select {
		case f.entered <- struct{}{}:
		default:
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		f.mu.Lock()
		f.deadlines = append(f.deadlines, time.Until(dl))
		f.mu.Unlock()
	}
	switch f.mode.Load() {
	case modeFail:
		return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	case modeHang:
		<-ctx.Done()
		return fmt.Errorf("%w: %w", store.ErrUnavailable, ctx.Err())
	}
	return nil
}

func (f *flaky) Close() error { return nil }

func (f *flaky) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// subjectCallsSince counts the calls after the first n that were checks
// (not probes of the breaker).
func (f *flaky) subjectCallsSince(n int) int {
	c := 0
	for _, k := range f.keys()[n:] {
		if !strings.HasPrefix(k, "\x00") {
			c++
		}
	}
	return c
}

// probes counts the breaker's probes.
func (f *flaky) probes() int {
	c := 0
	for _, k := range f.keys() {
		if strings.HasPrefix(k, "\x00probe:") {
			c++
		}
	}
	return c
}

// policySnapshot has three namespaces with the same rule and the three
// failure policies.
func policySnapshot(t testing.TB, version string, r limit.Rule) *policy.Snapshot {
	t.Helper()
	var nss []policy.Namespace
	for _, p := range []policy.FailurePolicy{policy.FailLocal, policy.FailOpen, policy.FailClosed} {
		nss = append(nss, policy.Namespace{Name: p.String(), Rules: []limit.Rule{r}, OnStoreError: p})
	}
	snap, err := policy.New(nss, version, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func newGuarded(t testing.TB, st store.Store, snap *policy.Snapshot, clk *clocktest.Fake, g service.Guard) *service.Service {
	t.Helper()
	if g.Fallback == nil {
		g.Fallback = newFallback(t)
	}
	opts := service.Options{Guard: &g}
	if clk != nil {
		opts.Clock = clk
	}
	svc, err := service.New(st, snap, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// newFallback is the local failure policy's store, on the system clock, as
// serve makes it.
func newFallback(t testing.TB) *memstore.Store {
	fb := memstore.New(memstore.Options{SweepInterval: -1})
	t.Cleanup(func() { fb.Close() })
	return fb
}

func check(t testing.TB, svc *service.Service, ns, subject string, cost int64) service.Result {
	t.Helper()
	res, err := svc.Check(context.Background(), service.Request{Namespace: ns, Subject: subject, Cost: cost})
	if err != nil {
		t.Fatalf("check %s/%s: %v", ns, subject, err)
	}
	return res
}

// Every store call carries the maximum wait; a store that answers nothing
// is given up on at it and the failure policy answers.
func TestGuardDeadline(t *testing.T) {
	f := &flaky{st: newMemstore(t, clocktest.New(epoch))}
	f.mode.Store(modeHang)
	svc := newGuarded(t, f, policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour)), nil,
		service.Guard{MaxWait: 20 * time.Millisecond, Breaker: service.Breaker{Disabled: true}})
	for _, ns := range []string{"local", "open", "closed"} {
		res := check(t, svc, ns, "alice", 1)
		if want := map[string]service.DecidedBy{"local": service.DecidedByLocal, "open": service.DecidedByOpen, "closed": service.DecidedByClosed}[ns]; res.DecidedBy != want {
			t.Errorf("%s: decided by %v, want %v", ns, res.DecidedBy, want)
		}
		if !errors.Is(res.StoreError, context.DeadlineExceeded) || !errors.Is(res.StoreError, store.ErrUnavailable) {
			t.Errorf("%s: StoreError = %v, want the deadline", ns, res.StoreError)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.deadlines) != 3 {
		t.Fatalf("%d calls carried a deadline, want 3", len(f.deadlines))
	}
	for _, d := range f.deadlines {
		if d > 20*time.Millisecond {
			t.Errorf("a store call had %v left, want at most the 20ms maximum wait", d)
		}
	}
}

// The three policies, and the local share: limit / instances, rounded up.
func TestFailurePolicies(t *testing.T) {
	f := &flaky{st: newMemstore(t, clocktest.New(epoch))}
	f.mode.Store(modeFail)
	clk := clocktest.New(epoch)
	instances := 3
	svc := newGuarded(t, f, policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour)), clk,
		service.Guard{Instances: func() int { return instances }, Breaker: service.Breaker{Disabled: true},
			ClosedRetryAfter: 2 * time.Second})

	res := check(t, svc, "open", "alice", 1)
	if !res.Verdict.Allowed || res.DecidedBy != service.DecidedByOpen || res.Verdict.D[0].Limit != 10 {
		t.Errorf("open: %+v", res)
	}
	res = check(t, svc, "closed", "alice", 1)
	if res.Verdict.Allowed || res.DecidedBy != service.DecidedByClosed || res.Verdict.RetryAfter != 2*time.Second {
		t.Errorf("closed: %+v", res)
	}
	// local: ceil(10/3) = 4 of this instance's share, then denied.
	for i := range 6 {
		res = check(t, svc, "local", "alice", 1)
		if res.DecidedBy != service.DecidedByLocal || res.Verdict.Allowed != (i < 4) {
			t.Fatalf("local check %d: allowed %v by %v, want allowed %v", i+1, res.Verdict.Allowed, res.DecidedBy, i < 4)
		}
		if !errors.Is(res.StoreError, store.ErrUnavailable) {
			t.Fatalf("local check %d: StoreError %v", i+1, res.StoreError)
		}
	}
	if res.Verdict.D[0].Limit != 4 {
		t.Errorf("local decision reports limit %d, want the share 4", res.Verdict.D[0].Limit)
	}
	// The store back: it decides again, from its own state.
	f.mode.Store(modeOK)
	res = check(t, svc, "local", "alice", 1)
	if !res.Verdict.Allowed || res.DecidedBy != service.DecidedByStore || res.StoreError != nil || res.Verdict.D[0].Remaining != 9 {
		t.Errorf("store back: %+v", res)
	}
}

func TestShareRule(t *testing.T) {
	for _, tc := range []struct {
		r           limit.Rule
		n           int
		limit, brst int64
	}{
		{limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 100, Period: time.Minute}, 3, 34, 34},
		{limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 100, Period: time.Minute, Burst: 20}, 3, 34, 7},
		{limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 2, Period: time.Minute}, 5, 1, 1},
		{limit.Rule{Name: "a", Algorithm: limit.FixedWindow, Limit: 10, Period: time.Second}, 4, 3, 0},
		{limit.Rule{Name: "a", Algorithm: limit.SlidingWindowLog, Limit: 10, Period: time.Second}, 1, 10, 0},
	} {
		r, err := tc.r.Normalize()
		if err != nil {
			t.Fatal(err)
		}
		s := service.ShareRule(r, tc.n)
		if s.Limit != tc.limit || s.Burst != tc.brst || s.Period != r.Period || s.Name != r.Name || s.Validate() != nil {
			t.Errorf("ShareRule(%+v, %d) = %+v, want limit %d burst %d", r, tc.n, s, tc.limit, tc.brst)
		}
	}
}

// The breaker opens once most calls fail and stops calling the store; a
// background prober, not the checks, probes it every OpenFor and closes it
// when the probes are answered, with no check arriving. While it is open no
// check reaches the store: the only calls are the probes, peeks of a
// reserved key. The transitions reach the breaker observer through
// service.Observers, as in serve, where metrics share it with the top-K
// tracker.
func TestBreaker(t *testing.T) {
	f := &flaky{st: newMemstore(t, clocktest.New(epoch))}
	rec := &breakerRecorder{}
	g := service.Guard{Fallback: newFallback(t), Breaker: service.Breaker{MinCalls: 10, OpenFor: 30 * time.Millisecond, Probes: 2}}
	svc, err := service.New(f, policySnapshot(t, "v1", tokenBucket("per-hour", 1000, time.Hour)),
		service.Options{Guard: &g, Observer: service.Observers(nopObserver{}, rec)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	f.mode.Store(modeFail)
	for i := range 10 {
		check(t, svc, "local", fmt.Sprint("s", i), 1)
	}
	if st := svc.BreakerState(); st != service.BreakerOpen {
		t.Fatalf("after 10 failures of 10 calls the breaker is %v, want open", st)
	}
	for i := range 100 {
		if res := check(t, svc, "local", fmt.Sprint("s", i), 1); res.DecidedBy != service.DecidedByLocal ||
			!errors.Is(res.StoreError, store.ErrUnavailable) {
			t.Fatalf("breaker open: %+v", res)
		}
	}
	if n := f.subjectCallsSince(10); n != 0 {
		t.Fatalf("%d checks reached the store with the breaker open; only probes may", n)
	}

	// Recovery: the prober's probes are answered and the breaker closes,
	// with no check to carry them.
	f.mode.Store(modeOK)
	deadline := time.Now().Add(10 * time.Second)
	for svc.BreakerState() != service.BreakerClosed {
		if time.Now().After(deadline) {
			t.Fatalf("the breaker did not close; state %v", svc.BreakerState())
		}
		time.Sleep(time.Millisecond)
	}
	if f.probes() < 2 {
		t.Fatalf("%d probes reached the store, want at least the 2 that close it", f.probes())
	}
	if res := check(t, svc, "local", "after", 1); res.DecidedBy != service.DecidedByStore {
		t.Fatalf("after recovery: decided by %v", res.DecidedBy)
	}
	if got := rec.transitions(); got != "closed>open open>half-open half-open>closed" {
		t.Errorf("transitions %q", got)
	}
}

type breakerRecorder struct {
	nopObserver
	mu sync.Mutex
	tr []string
}

func (r *breakerRecorder) ObserveBreaker(from, to service.BreakerState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tr = append(r.tr, from.String()+">"+to.String())
}

func (r *breakerRecorder) transitions() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ""
	for i, t := range r.tr {
		if i > 0 {
			s += " "
		}
		s += t
	}
	return s
}

// A third of the calls failing (one dead shard of three) leaves the breaker
// closed: the healthy shards keep deciding.
func TestBreakerIgnoresPartialFailure(t *testing.T) {
	var n atomic.Int64
	st := newMemstore(t, clocktest.New(epoch))
	partial := storeFunc(func(ctx context.Context, req store.Request) (limit.Verdict, error) {
		if n.Add(1)%3 == 0 {
			return limit.Verdict{}, store.ErrUnavailable
		}
		return st.Apply(ctx, req)
	})
	svc := newGuarded(t, partial, policySnapshot(t, "v1", tokenBucket("per-hour", 1000, time.Hour)), nil, service.Guard{})
	byStore := 0
	for i := range 300 {
		if check(t, svc, "local", fmt.Sprint("s", i), 1).DecidedBy == service.DecidedByStore {
			byStore++
		}
	}
	if svc.BreakerState() != service.BreakerClosed || byStore != 200 {
		t.Fatalf("breaker %v, %d of 300 decided by the store, want closed and 200", svc.BreakerState(), byStore)
	}
}

// With one breaker per shard, a dead shard opens its own breaker only.
func TestBreakerPerShard(t *testing.T) {
	st := newMemstore(t, clocktest.New(epoch))
	var deadCalls atomic.Int64
	shardOf := func(key string) int { // "local:d..." on shard 1, the rest on 0
		if strings.HasPrefix(key, "local:d") {
			return 1
		}
		return 0
	}
	s := storeFunc(func(ctx context.Context, req store.Request) (limit.Verdict, error) {
		if shardOf(req.Key) == 1 {
			deadCalls.Add(1)
			return limit.Verdict{}, store.ErrUnavailable
		}
		return st.Apply(ctx, req)
	})
	svc := newGuarded(t, s, policySnapshot(t, "v1", tokenBucket("per-hour", 1000, time.Hour)), nil,
		service.Guard{Shards: 2, ShardOf: shardOf, Breaker: service.Breaker{MinCalls: 5, OpenFor: time.Hour}})
	for i := range 20 {
		if res := check(t, svc, "local", fmt.Sprint("dead-", i), 1); res.DecidedBy != service.DecidedByLocal {
			t.Fatalf("dead shard: decided by %v", res.DecidedBy)
		}
		if res := check(t, svc, "local", fmt.Sprint("alive-", i), 1); res.DecidedBy != service.DecidedByStore {
			t.Fatalf("healthy shard: decided by %v", res.DecidedBy)
		}
	}
	if n := deadCalls.Load(); n != 5 {
		t.Errorf("the dead shard was called %d times, want 5 (then its breaker opened)", n)
	}
	if svc.OpenBreakers() != 1 || svc.BreakerState() != service.BreakerOpen {
		t.Errorf("%d breakers open, state %v; want 1, open", svc.OpenBreakers(), svc.BreakerState())
	}
}

type storeFunc func(context.Context, store.Request) (limit.Verdict, error)

func (f storeFunc) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	return f(ctx, req)
}
func (f storeFunc) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	allowed := true
	for i := range reqs { // not atomic: these tests send one part
		v, err := f(ctx, reqs[i])
		if err != nil {
			return false, err
		}
		out[i], allowed = v, allowed && v.Allowed
	}
	return allowed, nil
}
func (storeFunc) Close() error { return nil }

// A caller that goes away gets its error, not a policy answer, and does not
// count against the store.
func TestGuardCallerCancelled(t *testing.T) {
	f := &flaky{st: newMemstore(t, clocktest.New(epoch)), entered: make(chan struct{}, 1)}
	f.mode.Store(modeHang)
	svc := newGuarded(t, f, policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour)), nil,
		service.Guard{MaxWait: time.Minute, Breaker: service.Breaker{MinCalls: 1}})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-f.entered; cancel() }() // the caller leaves while the store call hangs
	_, err := svc.Check(ctx, service.Request{Namespace: "local", Subject: "a", Cost: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a cancelled caller = %v", err)
	}
	if svc.BreakerState() != service.BreakerClosed {
		t.Fatal("a cancelled caller opened the breaker")
	}
	// Bad input and a closed store are errors too, never policy answers.
	f.mode.Store(modeOK)
	if _, err := svc.Check(context.Background(), service.Request{Namespace: "local", Subject: "", Cost: 1}); !errors.Is(err, service.ErrInvalidSubject) {
		t.Fatalf("empty subject: %v", err)
	}
	f.st.Close()
	if _, err := svc.Check(context.Background(), service.Request{Namespace: "local", Subject: "a", Cost: 1}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("closed store: %v", err)
	}
}

// The deny cache answers exactly as the store would: the same timeline of
// requests (several subjects, costs 0 to 3, every algorithm, a two-rule set)
// through a guarded service and a plain one over identical stores gives the
// same allowed/denied answers and the same RetryAfter, while the guarded one
// asks its store far less.
func TestDenyCacheExact(t *testing.T) {
	rules := []limit.Rule{
		tokenBucket("tb", 5, time.Second),
		{Name: "lb", Algorithm: limit.LeakyBucket, Limit: 5, Period: time.Second, Burst: 3},
		{Name: "swl", Algorithm: limit.SlidingWindowLog, Limit: 5, Period: time.Second},
		{Name: "swc", Algorithm: limit.SlidingWindowCounter, Limit: 5, Period: time.Second},
		{Name: "fw", Algorithm: limit.FixedWindow, Limit: 5, Period: time.Second},
	}
	var nss []policy.Namespace
	for _, r := range rules {
		nss = append(nss, policy.Namespace{Name: r.Name, Rules: []limit.Rule{r}})
	}
	nss = append(nss, policy.Namespace{Name: "pair", Rules: []limit.Rule{tokenBucket("per-second", 4, time.Second), tokenBucket("per-minute", 30, time.Minute)}})
	snap, err := policy.New(nss, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(epoch)
	plain, err := service.New(newMemstore(t, clk), snap, service.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{st: newMemstore(t, clk)}
	guarded := newGuarded(t, f, snap, clk, service.Guard{})

	rng := rand.New(rand.NewPCG(1, 2))
	cached := 0
	for i := range 20000 {
		clk.Advance(time.Duration(rng.IntN(int(40 * time.Millisecond))))
		req := service.Request{Namespace: nss[rng.IntN(len(nss))].Name, Subject: fmt.Sprint("s", rng.IntN(3)), Cost: int64(rng.IntN(4))}
		want, err1 := plain.Check(context.Background(), req)
		got, err2 := guarded.Check(context.Background(), req)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if got.DecidedBy == service.DecidedByDenyCache {
			cached++
		}
		// The answer is the store's. A cached RetryAfter is the store's
		// when it was cached; a request of another cost consuming since
		// can only have pushed the true one later.
		if got.Verdict.Allowed != want.Verdict.Allowed || got.Verdict.RetryAfter > want.Verdict.RetryAfter ||
			(got.DecidedBy == service.DecidedByStore && got.Verdict.RetryAfter != want.Verdict.RetryAfter) {
			t.Fatalf("request %d %+v (decided by %v): allowed %v retry %v, the store says allowed %v retry %v",
				i, req, got.DecidedBy, got.Verdict.Allowed, got.Verdict.RetryAfter, want.Verdict.Allowed, want.Verdict.RetryAfter)
		}
	}
	if cached < 1000 || f.calls.Load() != int64(20000-cached) {
		t.Fatalf("%d answers from the deny cache, %d store calls", cached, f.calls.Load())
	}
	t.Logf("%d of 20000 checks answered by the deny cache", cached)
}

// With one cost, a token bucket's cached denial is the store's, decision
// for decision: Remaining, ResetAfter and RetryAfter included.
func TestDenyCacheExactTokenBucket(t *testing.T) {
	clk := clocktest.New(epoch)
	snap := policySnapshot(t, "v1", tokenBucket("per-second", 10, time.Second))
	plain, err := service.New(newMemstore(t, clk), snap, service.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	guarded := newGuarded(t, newMemstore(t, clk), snap, clk, service.Guard{})
	cached := 0
	for i := range 5000 {
		clk.Advance(time.Duration(i%7) * 3 * time.Millisecond)
		req := service.Request{Namespace: "local", Subject: "hot", Cost: 1}
		want, _ := plain.Check(context.Background(), req)
		got, _ := guarded.Check(context.Background(), req)
		if got.DecidedBy == service.DecidedByDenyCache {
			cached++
		}
		if got.Verdict != want.Verdict {
			t.Fatalf("check %d (decided by %v): %+v, the store says %+v", i, got.DecidedBy, got.Verdict, want.Verdict)
		}
	}
	if cached < 1000 {
		t.Fatalf("only %d answers from the deny cache", cached)
	}
}

// A new snapshot invalidates the deny cache: a raised limit is felt at once.
func TestDenyCacheInvalidatedBySwap(t *testing.T) {
	clk := clocktest.New(epoch)
	svc := newGuarded(t, newMemstore(t, clk), policySnapshot(t, "v1", tokenBucket("per-hour", 1, time.Hour)), clk, service.Guard{})
	check(t, svc, "local", "alice", 1)
	if res := check(t, svc, "local", "alice", 1); res.Verdict.Allowed || res.DecidedBy != service.DecidedByStore {
		t.Fatalf("second check: %+v", res)
	}
	if res := check(t, svc, "local", "alice", 1); res.Verdict.Allowed || res.DecidedBy != service.DecidedByDenyCache {
		t.Fatalf("third check: decided by %v", res.DecidedBy)
	}
	if _, err := svc.Swap(policySnapshot(t, "v2", tokenBucket("per-hour", 5, time.Hour))); err != nil {
		t.Fatal(err)
	}
	if svc.DenyCacheLen() != 0 {
		t.Fatalf("%d deny cache entries after Swap", svc.DenyCacheLen())
	}
	if res := check(t, svc, "local", "alice", 1); !res.Verdict.Allowed || res.DecidedBy != service.DecidedByStore {
		t.Fatalf("after raising the limit: %+v", res)
	}
}

// The deny cache stays within its bound whatever the number of denied
// subjects.
func TestDenyCacheBounded(t *testing.T) {
	clk := clocktest.New(epoch)
	svc := newGuarded(t, newMemstore(t, clk), policySnapshot(t, "v1", tokenBucket("per-hour", 1, time.Hour)), clk,
		service.Guard{DenyCacheSize: 640})
	for i := range 5000 {
		s := fmt.Sprint("s", i)
		check(t, svc, "local", s, 1)
		if res := check(t, svc, "local", s, 1); res.Verdict.Allowed {
			t.Fatal("second check allowed")
		}
	}
	if n := svc.DenyCacheLen(); n > 640 || n < 320 {
		t.Fatalf("deny cache holds %d entries, want at most 640 (and well used)", n)
	}
}

// Guarded checks are safe under concurrency while the store flips between
// healthy, failing and hanging (run with -race).
func TestGuardConcurrent(t *testing.T) {
	f := &flaky{st: newMemstore(t, clocktest.New(epoch))}
	svc := newGuarded(t, f, policySnapshot(t, "v1", tokenBucket("per-hour", 50, time.Hour)), nil,
		service.Guard{MaxWait: 2 * time.Millisecond, Instances: func() int { return 2 },
			Breaker: service.Breaker{MinCalls: 5, OpenFor: 5 * time.Millisecond}})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				if w == 0 && i%50 == 0 {
					f.mode.Store(int32(i / 50 % 3))
				}
				ns := []string{"local", "open", "closed"}[i%3]
				// A hanging call while others are answered is shed: the
				// only error a guarded check of good input may return.
				if _, err := svc.Check(context.Background(), service.Request{Namespace: ns, Subject: fmt.Sprint("s", i%7), Cost: 1}); err != nil && !errors.Is(err, service.ErrOverloaded) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestGuardRejectsBadOptions(t *testing.T) {
	snap := policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour))
	st := newMemstore(t, clocktest.New(epoch))
	fb := newFallback(t)
	for _, g := range []service.Guard{
		{}, // no Fallback
		{Fallback: fb, MaxWait: -1},
		{Fallback: fb, MaxWaiting: -1},
		{Fallback: fb, ClosedRetryAfter: -1},
		{Fallback: fb, Breaker: service.Breaker{FailureRatio: 1.5}},
		{Fallback: fb, Breaker: service.Breaker{OpenFor: -1}},
	} {
		if svc, err := service.New(st, snap, service.Options{Guard: &g}); err == nil {
			svc.Close()
			t.Errorf("New accepted %+v", g)
		}
	}
}

func TestDecidedByNames(t *testing.T) {
	want := []string{"store", "deny-cache", "local", "open", "closed", "shed", "policy"}
	for i, w := range want {
		if got := service.DecidedBy(i).String(); got != w {
			t.Errorf("DecidedBy(%d) = %q, want %q", i, got, w)
		}
	}
	if service.NumDecidedBy != len(want) {
		t.Errorf("NumDecidedBy = %d", service.NumDecidedBy)
	}
}

// With a guard, a store that does not answer leaves the instance ready but
// degraded (the failure policies answer); a closed store does not.
func TestReadyDegraded(t *testing.T) {
	down := storeFunc(func(context.Context, store.Request) (limit.Verdict, error) {
		return limit.Verdict{}, store.ErrUnavailable
	})
	snap := policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour))
	svc := newGuarded(t, down, snap, nil, service.Guard{Breaker: service.Breaker{Disabled: true}})
	if err := svc.Ready(context.Background()); !errors.Is(err, service.ErrDegraded) {
		t.Fatalf("Ready with the store down = %v, want ErrDegraded", err)
	}
	closed := storeFunc(func(context.Context, store.Request) (limit.Verdict, error) {
		return limit.Verdict{}, store.ErrClosed
	})
	svc = newGuarded(t, closed, snap, nil, service.Guard{Breaker: service.Breaker{Disabled: true}})
	if err := svc.Ready(context.Background()); err == nil || errors.Is(err, service.ErrDegraded) {
		t.Fatalf("Ready with the store closed = %v, want not ready", err)
	}
}
