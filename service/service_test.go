package service_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// snapshot builds a one-namespace policy: "orders" with the given rules, and
// an override giving "vip" ten times the first rule's limit.
func snapshot(t testing.TB, version string, rules ...limit.Rule) *policy.Snapshot {
	t.Helper()
	snap, err := policy.New([]policy.Namespace{{
		Name:          "orders",
		SubjectHeader: "X-User-ID",
		Rules:         rules,
		Overrides: []policy.Override{{
			Subject: "vip",
			Limits:  map[string]policy.Patch{rules[0].Name: {Limit: rules[0].Limit * 10}},
		}},
	}}, version, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func tokenBucket(name string, n int64, per time.Duration) limit.Rule {
	return limit.Rule{Name: name, Algorithm: limit.TokenBucket, Limit: n, Period: per}
}

func newMemstore(t testing.TB, clk *clocktest.Fake) *memstore.Store {
	st := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
	t.Cleanup(func() { st.Close() })
	return st
}

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu     sync.Mutex
	checks []observed
	snaps  []*policy.Snapshot
}

type observed struct {
	res  service.Result
	err  error
	took time.Duration
}

func (r *recorder) ObserveCheck(res service.Result, err error, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, observed{res, err, took})
}

func (r *recorder) ObserveSnapshot(s *policy.Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, s)
}

func TestCheckTokenBucketTimeline(t *testing.T) {
	clk := clocktest.New(epoch)
	svc, err := service.New(newMemstore(t, clk), snapshot(t, "v1", tokenBucket("per-10h", 5, 10*time.Hour)), service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := service.Request{Namespace: "orders", Subject: "user-42", Cost: 1}
	for i := int64(0); i < 5; i++ {
		res, err := svc.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		d := res.Verdict.Decisions()
		if !res.Verdict.Allowed || len(d) != 1 || d[0].Remaining != 4-i {
			t.Fatalf("check %d: %+v", i+1, res.Verdict)
		}
		if res.Namespace != "orders" || res.Subject != "user-42" || res.Set.Namespace.Name != "orders" || res.Set.Overridden {
			t.Fatalf("check %d: result fields %+v", i+1, res)
		}
	}
	res, err := svc.Check(ctx, req)
	if err != nil || res.Verdict.Allowed || res.Verdict.RetryAfter != 2*time.Hour {
		t.Fatalf("6th check: %+v, %v; want denied for 2h", res.Verdict, err)
	}
	// A peek does not consume; after 2h one token is back.
	clk.Advance(2 * time.Hour)
	res, _ = svc.Check(ctx, service.Request{Namespace: "orders", Subject: "user-42", Cost: 0})
	if !res.Verdict.Allowed || res.Verdict.D[0].Remaining != 1 {
		t.Fatalf("peek after 2h: %+v", res.Verdict)
	}
	res, _ = svc.Check(ctx, req)
	if !res.Verdict.Allowed || res.Verdict.D[0].Remaining != 0 {
		t.Fatalf("check after 2h: %+v", res.Verdict)
	}
	// Another subject has its own budget; the override applies to "vip".
	res, _ = svc.Check(ctx, service.Request{Namespace: "orders", Subject: "vip", Cost: 50})
	if !res.Verdict.Allowed || !res.Set.Overridden || res.Verdict.D[0].Remaining != 0 || res.Verdict.D[0].Limit != 50 {
		t.Fatalf("vip: %+v overridden=%v", res.Verdict, res.Set.Overridden)
	}
}

func TestCheckErrors(t *testing.T) {
	clk := clocktest.New(epoch)
	svc, err := service.New(newMemstore(t, clk), snapshot(t, "v1", tokenBucket("per-minute", 10, time.Minute)), service.Options{MaxCost: 100})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		req     service.Request
		want    error
		text    string
		knownNS bool
	}{
		{service.Request{Namespace: "", Subject: "a", Cost: 1}, service.ErrInvalidNamespace, "namespace is required", false},
		{service.Request{Namespace: "orders", Subject: "", Cost: 1}, service.ErrInvalidSubject, "subject must be 1 to 256 bytes", true},
		{service.Request{Namespace: "orders", Subject: string(make([]byte, 257)), Cost: 1}, service.ErrInvalidSubject, "got 257", true},
		{service.Request{Namespace: "orders", Subject: "a\nb", Cost: 1}, service.ErrInvalidSubject, "control character", true},
		{service.Request{Namespace: "orders", Subject: "a", Cost: -1}, service.ErrInvalidCost, "cost -1 is negative", true},
		{service.Request{Namespace: "orders", Subject: "a", Cost: 101}, service.ErrInvalidCost, "cost 101 is over the maximum 100", true},
		{service.Request{Namespace: "nope", Subject: "a", Cost: 1}, policy.ErrUnknownNamespace, `unknown namespace "nope"`, false},
		{service.Request{Namespace: "nope", Subject: "", Cost: 1}, service.ErrInvalidSubject, "subject", false},
	}
	for _, tc := range tests {
		res, err := svc.Check(context.Background(), tc.req)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("Check(%+v) = %v; want %v naming %q", tc.req, err, tc.want, tc.text)
			continue
		}
		if (res.Set.Namespace != nil) != tc.knownNS || res.Verdict.Allowed || res.Namespace != tc.req.Namespace {
			t.Errorf("Check(%+v): result %+v", tc.req, res)
		}
	}
	// Cost equal to MaxCost is valid input; over capacity is a denial that
	// can never pass, not an error.
	res, err := svc.Check(context.Background(), service.Request{Namespace: "orders", Subject: "a", Cost: 100})
	if err != nil || res.Verdict.Allowed || res.Verdict.RetryAfter != limit.RetryNever {
		t.Fatalf("cost over capacity: %+v, %v", res.Verdict, err)
	}
}

// failing is a store.Store whose backend is down: the failure a Redis outage
// produces, which no real in-process store can be made to show.
type failing struct{}

func (failing) Apply(context.Context, store.Request) (limit.Verdict, error) {
	return limit.Verdict{}, fmt.Errorf("%w: dial tcp 127.0.0.1:6379: connection refused", store.ErrUnavailable)
}
func (failing) ApplyAll(context.Context, []store.Request, []limit.Verdict) (bool, error) {
	return false, fmt.Errorf("%w: dial tcp 127.0.0.1:6379: connection refused", store.ErrUnavailable)
}
func (failing) Close() error { return nil }

func TestCheckStoreErrors(t *testing.T) {
	snap := snapshot(t, "v1", tokenBucket("per-minute", 10, time.Minute))
	svc, err := service.New(failing{}, snap, service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	req := service.Request{Namespace: "orders", Subject: "a", Cost: 1}
	_, err = svc.Check(context.Background(), req)
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("unavailable store: %v", err)
	}
	if err := svc.Ready(context.Background()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ready with a failing store: %v", err)
	}

	st := newMemstore(t, clocktest.New(epoch))
	svc, err = service.New(st, snap, service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	st.Close()
	if _, err := svc.Check(context.Background(), req); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("closed store: %v", err)
	}
	if err := svc.Ready(context.Background()); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Ready after Close: %v", err)
	}
}

func TestNewRejectsNil(t *testing.T) {
	snap := snapshot(t, "v1", tokenBucket("per-minute", 10, time.Minute))
	st := newMemstore(t, clocktest.New(epoch))
	if _, err := service.New(nil, snap, service.Options{}); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := service.New(st, nil, service.Options{}); !errors.Is(err, service.ErrNilSnapshot) {
		t.Errorf("nil snapshot: %v", err)
	}
	if _, err := service.New(st, snap, service.Options{MaxCost: -1}); err == nil {
		t.Error("negative MaxCost accepted")
	}
	svc, err := service.New(st, snap, service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.MaxCost() != service.DefaultMaxCost {
		t.Errorf("MaxCost = %d", svc.MaxCost())
	}
	if _, err := svc.Swap(nil); !errors.Is(err, service.ErrNilSnapshot) || svc.Snapshot() != snap {
		t.Errorf("Swap(nil): %v", err)
	}
}

func TestSwapAndObserver(t *testing.T) {
	clk := clocktest.New(epoch)
	rec := &recorder{}
	v1 := snapshot(t, "v1", tokenBucket("per-minute", 1, time.Minute))
	svc, err := service.New(newMemstore(t, clk), v1, service.Options{Observer: rec, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := service.Request{Namespace: "orders", Subject: "a", Cost: 1}
	if res, _ := svc.Check(ctx, req); !res.Verdict.Allowed {
		t.Fatal("first check denied")
	}
	if res, _ := svc.Check(ctx, req); res.Verdict.Allowed {
		t.Fatal("second check allowed under 1/min")
	}
	// Raise the limit: the state of "per-minute" is kept, so one more passes.
	v2 := snapshot(t, "v2", tokenBucket("per-minute", 2, time.Minute))
	old, err := svc.Swap(v2)
	if err != nil || old != v1 || svc.Snapshot() != v2 {
		t.Fatalf("Swap: old=%p err=%v", old, err)
	}
	if res, _ := svc.Check(ctx, req); !res.Verdict.Allowed || res.Verdict.D[0].Limit != 2 {
		t.Fatalf("after swap: %+v", res.Verdict)
	}
	svc.Check(ctx, service.Request{Namespace: "nope", Subject: "a", Cost: 1})

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.snaps) != 2 || rec.snaps[0] != v1 || rec.snaps[1] != v2 {
		t.Fatalf("observed snapshots %v", rec.snaps)
	}
	if len(rec.checks) != 4 {
		t.Fatalf("observed %d checks, want 4", len(rec.checks))
	}
	want := []struct {
		allowed bool
		err     error
	}{{true, nil}, {false, nil}, {true, nil}, {false, policy.ErrUnknownNamespace}}
	for i, w := range want {
		o := rec.checks[i]
		if o.res.Verdict.Allowed != w.allowed || !errors.Is(o.err, w.err) || (w.err == nil) != (o.err == nil) {
			t.Errorf("observed check %d: allowed=%v err=%v", i, o.res.Verdict.Allowed, o.err)
		}
		if o.took != 0 { // the fake clock did not move during the check
			t.Errorf("observed check %d took %v", i, o.took)
		}
	}
	if rec.checks[3].res.Set.Namespace != nil {
		t.Error("an unknown namespace must leave Set.Namespace nil")
	}
}

// TestConcurrentChecksExact: 200 concurrent checks of one subject against a
// limit of 50 over a long period admit exactly 50, while snapshots are being
// swapped (to the same rules) under the checks' feet.
func TestConcurrentChecksExact(t *testing.T) {
	clk := clocktest.New(epoch)
	mk := func(v string) *policy.Snapshot { return snapshot(t, v, tokenBucket("per-day", 50, 24*time.Hour)) }
	svc, err := service.New(newMemstore(t, clk), mk("v0"), service.Options{Observer: &recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for i := range 200 {
		wg.Go(func() {
			if i%50 == 0 {
				if _, err := svc.Swap(mk(fmt.Sprint("v", i))); err != nil {
					t.Error(err)
				}
			}
			res, err := svc.Check(context.Background(), service.Request{Namespace: "orders", Subject: "hot", Cost: 1})
			if err != nil {
				t.Error(err)
				return
			}
			if res.Verdict.Allowed {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != 50 {
		t.Fatalf("admitted %d of 200, want exactly 50", allowed)
	}
}

func TestCheckAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	clk := clocktest.New(epoch)
	svc, err := service.New(newMemstore(t, clk), snapshot(t, "v1",
		tokenBucket("per-minute", limit.MaxLimit/1000, time.Minute),
		limit.Rule{Name: "per-hour", Algorithm: limit.SlidingWindowCounter, Limit: limit.MaxLimit, Period: time.Hour},
	), service.Options{Observer: nopObserver{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := service.Request{Namespace: "orders", Subject: "user-42", Cost: 1}
	svc.Check(ctx, req) // create the key
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := svc.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 { // the store key string
		t.Errorf("Check allocates %.1f times per call, want at most 1", allocs)
	}
}

type nopObserver struct{}

func (nopObserver) ObserveCheck(service.Result, error, time.Duration) {}
func (nopObserver) ObserveSnapshot(*policy.Snapshot)                  {}

func BenchmarkCheck(b *testing.B) {
	svc, err := service.New(memstore.New(memstore.Options{}), snapshot(b, "v1",
		tokenBucket("per-minute", limit.MaxLimit/1000, time.Minute),
		limit.Rule{Name: "per-hour", Algorithm: limit.SlidingWindowCounter, Limit: limit.MaxLimit, Period: time.Hour},
	), service.Options{Observer: nopObserver{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	req := service.Request{Namespace: "orders", Subject: "user-42", Cost: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// Observers tells every observer, in order, and skips nil ones.
func TestObservers(t *testing.T) {
	clk := clocktest.New(epoch)
	a, b := &recorder{}, &recorder{}
	v1 := snapshot(t, "v1", tokenBucket("per-minute", 1, time.Minute))
	svc, err := service.New(newMemstore(t, clk), v1, service.Options{Observer: service.Observers(a, nil, b), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	svc.Check(context.Background(), service.Request{Namespace: "orders", Subject: "a", Cost: 1})
	for i, r := range []*recorder{a, b} {
		r.mu.Lock()
		if len(r.checks) != 1 || len(r.snaps) != 1 || r.snaps[0] != v1 {
			t.Errorf("observer %d saw %d checks, %d snapshots", i, len(r.checks), len(r.snaps))
		}
		r.mu.Unlock()
	}
}

// BenchmarkCheckDescriptors is BenchmarkCheck for a request of a subject
// and two descriptors (its IP, an endpoint-wide cap), all-or-nothing on the
// memory store: go test -run='^$' -bench='Check' -benchmem ./service/
func BenchmarkCheckDescriptors(b *testing.B) {
	snap, err := policy.New([]policy.Namespace{{
		Name:  "orders",
		Rules: []limit.Rule{tokenBucket("per-minute", limit.MaxLimit/1000, time.Minute)},
		Descriptors: []policy.Matcher{
			{Key: "remote_address", Rules: []limit.Rule{tokenBucket("per-ip", limit.MaxLimit/1000, time.Minute)}},
			{Key: "endpoint", Value: "orders", Rules: []limit.Rule{tokenBucket("cap", limit.MaxLimit/1000, time.Minute)}},
		},
	}}, "v1", epoch)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := service.New(memstore.New(memstore.Options{}), snap, service.Options{Observer: nopObserver{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	req := service.Request{Namespace: "orders", Subject: "user-42", Cost: 1, Descriptors: []service.Descriptor{
		{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: "remote_address", Value: "10.0.0.7"}}}, Cost: 1},
		{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: "endpoint", Value: "orders"}}}, Cost: 1},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
