package service_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// gated is a store whose calls for some keys block until released: a
// busy store, answering other checks meanwhile.
type gated struct {
	st      store.Store
	block   func(key string) bool
	release chan struct{}
	entered chan string
}

func (g *gated) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	if err := g.wait(ctx, req.Key); err != nil {
		return limit.Verdict{}, err
	}
	return g.st.Apply(ctx, req)
}

func (g *gated) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	if err := g.wait(ctx, reqs[0].Key); err != nil {
		return false, err
	}
	return g.st.ApplyAll(ctx, reqs, out)
}

// wait blocks a call of key until released, if key is gated.
func (g *gated) wait(ctx context.Context, key string) error {
	if g.block(key) {
		g.entered <- key
		select {
		case <-g.release:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", store.ErrUnavailable, ctx.Err())
		}
	}
	return nil
}

func (g *gated) Close() error { return nil }

// Slow is not down: checks waiting on a busy store are answered by it,
// however long they wait within MaxWait; past MaxWaiting waiting checks one
// more is shed (ErrOverloaded, DecidedByShed) at once, never decided
// without the store.
func TestGuardWaitsAndSheds(t *testing.T) {
	g := &gated{
		st:      newMemstore(t, clocktest.New(epoch)),
		block:   func(key string) bool { return key != "local:free" },
		release: make(chan struct{}),
		entered: make(chan string, 8),
	}
	svc := newGuarded(t, g, policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour)), nil,
		service.Guard{MaxWait: time.Minute, MaxWaiting: 4})
	var wg sync.WaitGroup
	results := make([]service.Result, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = check(t, svc, "local", "hot", 1)
		}()
	}
	for range 4 {
		<-g.entered // four checks wait for the store
	}
	res, err := svc.Check(context.Background(), service.Request{Namespace: "local", Subject: "other", Cost: 1})
	if !errors.Is(err, service.ErrOverloaded) || res.DecidedBy != service.DecidedByShed || service.Classify(err) != service.Overloaded {
		t.Fatalf("a fifth check while four wait: %v decided by %v, want shed with ErrOverloaded", err, res.DecidedBy)
	}
	close(g.release)
	wg.Wait()
	for i, r := range results {
		if r.DecidedBy != service.DecidedByStore || !r.Verdict.Allowed {
			t.Errorf("waiting check %d: decided by %v, allowed %v; want the store's answer", i, r.DecidedBy, r.Verdict.Allowed)
		}
	}
	if res := check(t, svc, "local", "hot", 0); res.Verdict.D[0].Remaining != 6 {
		t.Errorf("after four admitted: %d remaining, want 6", res.Verdict.D[0].Remaining)
	}
}

// A check that reaches MaxWait is shed when the store answered other checks
// of its failure domain meanwhile (busy, not down), and goes to the failure
// policy when it answered none (down). Only the second counts against the
// breaker.
func TestGuardMaxWaitSilentStoreIsDown(t *testing.T) {
	g := &gated{
		st:      newMemstore(t, clocktest.New(epoch)),
		block:   func(key string) bool { return key == "local:stuck" },
		release: make(chan struct{}),
		entered: make(chan string, 1),
	}
	svc := newGuarded(t, g, policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour)), nil,
		service.Guard{MaxWait: 200 * time.Millisecond, Breaker: service.Breaker{MinCalls: 1}})

	// Down: nothing else is answered while the check waits.
	res := check(t, svc, "local", "stuck", 1)
	if res.DecidedBy != service.DecidedByLocal || !errors.Is(res.StoreError, context.DeadlineExceeded) {
		t.Fatalf("a silent store: decided by %v (%v), want the local policy after MaxWait", res.DecidedBy, res.StoreError)
	}
	<-g.entered
	if svc.BreakerState() != service.BreakerOpen {
		t.Fatalf("one silent call of one (MinCalls 1): breaker %v, want open", svc.BreakerState())
	}
}

func TestGuardMaxWaitBusyStoreSheds(t *testing.T) {
	g := &gated{
		st:      newMemstore(t, clocktest.New(epoch)),
		block:   func(key string) bool { return key == "local:stuck" },
		release: make(chan struct{}),
		entered: make(chan string, 1),
	}
	svc := newGuarded(t, g, policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour)), nil,
		service.Guard{MaxWait: 200 * time.Millisecond, Breaker: service.Breaker{MinCalls: 1}})
	done := make(chan struct{})
	var res service.Result
	var err error
	go func() {
		defer close(done)
		res, err = svc.Check(context.Background(), service.Request{Namespace: "local", Subject: "stuck", Cost: 1})
	}()
	<-g.entered
	// Busy: the store answers another check while this one waits.
	if other := check(t, svc, "local", "free", 1); other.DecidedBy != service.DecidedByStore {
		t.Fatalf("another check: decided by %v", other.DecidedBy)
	}
	<-done
	if !errors.Is(err, service.ErrOverloaded) || res.DecidedBy != service.DecidedByShed {
		t.Fatalf("a check past MaxWait of a store answering others: %v, decided by %v; want shed", err, res.DecidedBy)
	}
	if svc.BreakerState() != service.BreakerClosed {
		t.Fatalf("a shed check opened the breaker (%v)", svc.BreakerState())
	}
}

// A fallback that remembers: the local policy starts a subject from what
// the store last said about it (its share of what was left), a spent
// subject stays denied until its budget really returns, and a subject the
// instance never saw gets the plain share.
func TestFallbackSeededFromStore(t *testing.T) {
	clk := clocktest.New(epoch)
	f := &flaky{st: newMemstore(t, clk)}
	fallback := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
	defer fallback.Close()
	svc := newGuarded(t, f, policySnapshot(t, "v1", tokenBucket("per-10h", 50, 10*time.Hour)), clk,
		service.Guard{Instances: func() int { return 3 }, Fallback: fallback, DenyCacheSize: -1,
			Breaker: service.Breaker{Disabled: true}})
	for range 45 {
		check(t, svc, "local", "spender", 1)
	}
	for range 51 {
		check(t, svc, "local", "spent", 1)
	}
	f.mode.Store(modeFail)
	admitted := func(subject string, n int) int {
		a := 0
		for range n {
			res := check(t, svc, "local", subject, 1)
			if res.DecidedBy != service.DecidedByLocal {
				t.Fatalf("%s: decided by %v during the outage", subject, res.DecidedBy)
			}
			if res.Verdict.Allowed {
				a++
			}
		}
		return a
	}
	if a := admitted("spender", 20); a != 2 { // ceil(5/3)
		t.Errorf("5 of 50 left, 3 instances: %d admitted locally, want ceil(5/3) = 2", a)
	}
	if a := admitted("spent", 20); a != 0 {
		t.Errorf("a spent subject: %d admitted locally, want 0", a)
	}
	if a := admitted("stranger", 40); a != 17 { // ceil(50/3)
		t.Errorf("an unknown subject: %d admitted locally, want its share 17", a)
	}
	// The spent subject's budget returns at its share's rate: ceil(50/3) =
	// 17 per 10h, one unit every 10h/17 (about 35 minutes; the store's rate
	// is one every 12).
	share := 10 * time.Hour / 17
	clk.Advance(share - time.Nanosecond)
	if a := admitted("spent", 1); a != 0 {
		t.Errorf("just before its share refilled one unit: admitted %d", a)
	}
	clk.Advance(time.Nanosecond)
	if a := admitted("spent", 2); a != 1 {
		t.Errorf("once its share refilled one unit: admitted %d, want 1", a)
	}
	f.mode.Store(modeOK)
	// The store back: it decides from its own state, which refilled
	// meanwhile (5 left, plus one unit per 12 minutes).
	want := 5 + int64(share/(12*time.Minute))
	if res := check(t, svc, "local", "spender", 0); res.DecidedBy != service.DecidedByStore || res.Verdict.D[0].Remaining != want {
		t.Errorf("the store back: decided by %v, %d remaining; want the store's %d", res.DecidedBy, res.Verdict.D[0].Remaining, want)
	}
}

// The guarded path's allocations (no race detector): the store key, the
// maximum wait's context, timer and cancel function, and the breaker's
// completion: six, as many as before the store queue and the seeding of the
// local fallback, which allocate nothing.
func TestGuardedCheckAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	clk := clocktest.New(epoch)
	svc := newGuarded(t, newMemstore(t, clk), policySnapshot(t, "v1", tokenBucket("per-hour", 1_000_000, time.Hour)), clk,
		service.Guard{Instances: func() int { return 3 }})
	ctx := context.Background()
	req := service.Request{Namespace: "local", Subject: "user-42", Cost: 1}
	svc.Check(ctx, req)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := svc.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("a guarded check allocates %.1f times", allocs)
	if allocs > 6 {
		t.Errorf("a guarded check allocates %.1f times per call, want at most 6", allocs)
	}
}

// Close may be called more than once.
func TestCloseTwice(t *testing.T) {
	svc := newGuarded(t, newMemstore(t, clocktest.New(epoch)), policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour)), nil, service.Guard{})
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
}
