// Package storetest is the conformance suite every store.Store must pass with
// the same expected numbers: the in-memory store, and the Redis store in
// standalone, Sentinel and Cluster modes. It is how the Redis Lua scripts are
// held to the pure algorithms of package limit.
//
// Run(t, factory) runs the whole suite. The factory returns a fresh, empty
// store that takes its time from the given fake clock (for Redis, the
// client-clock mode); the suite moves the clock by hand and never sleeps.
// Stores may be shared across subtests as long as keys are distinct: every
// subtest uses its own key prefix.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// Factory returns a store whose clock is clk. It registers its own cleanup.
type Factory func(t *testing.T, clk *clocktest.Fake) store.Store

// Epoch is the instant the suite's fake clocks start at: aligned to the hour,
// so that window algorithms start on a window boundary.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Run runs the conformance suite against the stores newStore makes.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"TokenBucketTable", testTokenBucketTable},
		{"AllOrNothing", testAllOrNothing},
		{"MatchesReference", testMatchesReference},
		{"LongWindow", testLongWindow},
		{"ConcurrentExact", testConcurrentExact},
		{"ConcurrentLimitSet", testConcurrentLimitSet},
		{"Linearizable", testLinearizable},
		{"KeysAreIndependent", testKeysIndependent},
		{"RuleChanges", testRuleChanges},
		{"InvalidRequests", testInvalid},
		{"PartsMatchReference", testPartsMatchReference},
		{"PartsConcurrent", testPartsConcurrent},
		{"PartsLinearizable", testPartsLinearizable},
		{"PartsInvalid", testPartsInvalid},
		{"Leases", testLeases},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

// Rules returns rs normalized, failing t on an invalid one: the limit sets
// of store tests.
func Rules(t testing.TB, rs ...limit.Rule) []limit.Rule {
	t.Helper()
	out := make([]limit.Rule, len(rs))
	for i, r := range rs {
		n, err := r.Normalize()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = n
	}
	return out
}

func rule(name string, a limit.Algorithm, lim int64, period time.Duration, burst int64) limit.Rule {
	r, err := limit.Rule{Name: name, Algorithm: a, Limit: lim, Period: period, Burst: burst}.Normalize()
	if err != nil {
		panic(err)
	}
	return r
}

func apply(t *testing.T, st store.Store, key string, rules []limit.Rule, cost int64) limit.Verdict {
	t.Helper()
	v, err := st.Apply(context.Background(), store.Request{Key: key, Rules: rules, Cost: cost})
	if err != nil {
		t.Fatalf("Apply(%s, cost %d): %v", key, cost, err)
	}
	return v
}

// testTokenBucketTable is the headline example with numbers written out:
// 5 per 10h, checks 1-5 allowed with remaining 4..0, the 6th waits 2h.
func testTokenBucketTable(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	rules := []limit.Rule{rule("per-10h", limit.TokenBucket, 5, 10*time.Hour, 0)}
	for i := int64(0); i < 5; i++ {
		v := apply(t, st, "tb:user-1", rules, 1)
		if !v.Allowed || v.D[0].Remaining != 4-i || v.D[0].Limit != 5 {
			t.Fatalf("check %d: %+v, want allowed with remaining %d", i+1, v.D[0], 4-i)
		}
	}
	v := apply(t, st, "tb:user-1", rules, 1)
	if v.Allowed || v.RetryAfter != 2*time.Hour || v.D[0].Remaining != 0 || v.D[0].ResetAfter != 10*time.Hour {
		t.Fatalf("6th check: %+v, want denied, retry 2h, reset 10h", v)
	}
	v = apply(t, st, "tb:user-1", rules, 6)
	if v.Allowed || v.RetryAfter != limit.RetryNever {
		t.Fatalf("cost over capacity: %+v, want RetryNever", v)
	}
	clk.Advance(2 * time.Hour)
	if v := apply(t, st, "tb:user-1", rules, 0); !v.Allowed || v.D[0].Remaining != 1 {
		t.Fatalf("peek after 2h: %+v, want allowed with 1 remaining", v.D[0])
	}
	if v := apply(t, st, "tb:user-1", rules, 1); !v.Allowed || v.D[0].Remaining != 0 {
		t.Fatalf("check after 2h: %+v, want allowed with 0 remaining (the peek consumed nothing)", v.D[0])
	}
}

// testAllOrNothing: a deny by one limit leaves the others untouched.
func testAllOrNothing(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	rules := []limit.Rule{
		rule("per-minute", limit.TokenBucket, 10, time.Minute, 0),
		rule("per-hour", limit.FixedWindow, 12, time.Hour, 0),
	}
	v := apply(t, st, "aon:u", rules, 10)
	if !v.Allowed || v.N != 2 || v.D[0].Remaining != 0 || v.D[1].Remaining != 2 {
		t.Fatalf("first: %+v", v)
	}
	// The minute limit denies: the hour limit must keep its 2 units.
	v = apply(t, st, "aon:u", rules, 2)
	if v.Allowed || v.D[0].Allowed || !v.D[1].Allowed || v.D[1].Remaining != 2 || v.RetryAfter != 12*time.Second {
		t.Fatalf("minute deny: %+v", v)
	}
	clk.Advance(time.Minute)
	// The hour limit denies 3: the minute limit must keep its 10 tokens.
	v = apply(t, st, "aon:u", rules, 3)
	if v.Allowed || !v.D[0].Allowed || v.D[0].Remaining != 10 || v.D[1].Allowed || v.RetryAfter != 59*time.Minute {
		t.Fatalf("hour deny: %+v", v)
	}
	v = apply(t, st, "aon:u", rules, 2)
	if !v.Allowed || v.D[0].Remaining != 8 || v.D[1].Remaining != 0 {
		t.Fatalf("both allow: %+v", v)
	}
	if v.Binding() != 1 {
		t.Fatalf("binding rule = %d, want the hour limit", v.Binding())
	}
}

// algorithms lists one rule of each algorithm, with sizes that exhaust
// quickly in the reference timelines.
func algorithms() []limit.Rule {
	return []limit.Rule{
		rule("tb", limit.TokenBucket, 7, 10*time.Second, 10),
		rule("lb", limit.LeakyBucket, 5, time.Second, 4),
		rule("fw", limit.FixedWindow, 6, 10*time.Second, 0),
		rule("swc", limit.SlidingWindowCounter, 9, 10*time.Second, 0),
		rule("swl", limit.SlidingWindowLog, 6, 10*time.Second, 0),
	}
}

// testMatchesReference drives the store and limit.Apply side by side over
// seeded random timelines (steps forward, a few steps back, costs 0..capacity+1)
// and requires identical verdicts, for every algorithm alone and for a limit
// set mixing several.
func testMatchesReference(t *testing.T, newStore Factory) {
	sets := map[string][]limit.Rule{}
	for _, r := range algorithms() {
		sets[r.Name] = []limit.Rule{r}
	}
	all := algorithms()
	sets["mixed"] = []limit.Rule{all[0], all[2], all[4]}
	sets["counters"] = []limit.Rule{all[3], all[1]}
	// A rule in shadow mode: charged when it admits, never denying.
	trial := rule("trial", limit.FixedWindow, 3, 10*time.Second, 0)
	trial.Shadow = true
	sets["shadow"] = []limit.Rule{all[0], trial}
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	for name, rules := range sets {
		for seed := uint64(1); seed <= 3; seed++ {
			clk.Set(Epoch)
			rng := rand.New(rand.NewPCG(seed, 7))
			key := fmt.Sprintf("ref:%s:%d", name, seed)
			states := make([]limit.State, len(rules))
			capacity := rules[0].Capacity()
			for i := 0; i < 300; i++ {
				switch rng.IntN(20) {
				case 0, 1: // a clock that steps back a little
					clk.Advance(-time.Duration(rng.Int64N(int64(500 * time.Millisecond))))
				case 2: // a long idle
					clk.Advance(time.Duration(rng.Int64N(int64(48 * time.Hour))))
				case 3, 4, 5, 6, 7:
				default: // nanosecond resolution, so no rounding hides
					clk.Advance(time.Duration(rng.Int64N(int64(1500 * time.Millisecond))))
				}
				cost := rng.Int64N(capacity + 2)
				if rng.IntN(4) > 0 {
					cost = 1
				}
				use := rules
				if i%50 == 49 { // now and then the rate changes (a reload)
					use = rescaled(rules, 1+rng.Int64N(3))
				}
				want, _ := limit.Apply(use, states, clk.Now().UnixNano(), cost)
				got := apply(t, st, key, use, cost)
				if got != want {
					t.Fatalf("%s seed %d step %d (t=%v, cost %d):\n got %+v\nwant %+v",
						name, seed, i, clk.Now().Sub(Epoch), cost, got, want)
				}
			}
		}
	}
}

// testLongWindow drives fixed windows of a year (Envoy's unit: 365 days,
// up to limit.MaxWindowPeriod) and of a week beside limit.Apply, at
// nanosecond instants over several years, clock steps back included, and
// requires identical verdicts: durations of a year are more nanoseconds
// than a double holds exactly.
func testLongWindow(t *testing.T, newStore Factory) {
	rules := []limit.Rule{
		rule("year", limit.FixedWindow, 5, 365*24*time.Hour, 0),
		rule("week", limit.FixedWindow, 3, 7*24*time.Hour, 0),
	}
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	rng := rand.New(rand.NewPCG(11, 12))
	states := make([]limit.State, len(rules))
	for i := 0; i < 400; i++ {
		switch rng.IntN(10) {
		case 0:
			clk.Advance(-time.Duration(rng.Int64N(int64(3 * 24 * time.Hour))))
		case 1:
			clk.Advance(time.Duration(rng.Int64N(int64(400 * 24 * time.Hour))))
		default:
			clk.Advance(time.Duration(rng.Int64N(int64(5 * 24 * time.Hour))))
		}
		cost := int64(1 + rng.IntN(2))
		want, _ := limit.Apply(rules, states, clk.Now().UnixNano(), cost)
		if got := apply(t, st, "long:k", rules, cost); got != want {
			t.Fatalf("step %d (t=%v, cost %d):\n got %+v\nwant %+v", i, clk.Now().Sub(Epoch), cost, got, want)
		}
	}
}

// rescaled returns rules with every limit (and burst) multiplied by k.
func rescaled(rules []limit.Rule, k int64) []limit.Rule {
	out := make([]limit.Rule, len(rules))
	for i, r := range rules {
		out[i] = rule(r.Name, r.Algorithm, r.Limit*k, r.Period, r.Burst*k)
		out[i].Shadow = r.Shadow
	}
	return out
}

// testConcurrentExact: 200 concurrent checks of one key with limit 50 over a
// long period admit exactly 50, for every algorithm.
func testConcurrentExact(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	for _, a := range []limit.Algorithm{limit.TokenBucket, limit.LeakyBucket, limit.FixedWindow, limit.SlidingWindowCounter, limit.SlidingWindowLog} {
		rules := []limit.Rule{rule("burst", a, 50, time.Hour, 0)}
		var allowed atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := st.Apply(context.Background(), store.Request{Key: "conc:" + a.String(), Rules: rules, Cost: 1})
				if err != nil {
					errs <- err
					return
				}
				if v.Allowed {
					allowed.Add(1)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := allowed.Load(); got != 50 {
			t.Errorf("%s: %d of 200 concurrent checks allowed, want exactly 50", a, got)
		}
	}
}

// testConcurrentLimitSet: concurrent checks with costs against a two-limit
// set; the admitted cost must fill the tighter limit exactly and never be
// charged to one limit without the other.
func testConcurrentLimitSet(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	rules := []limit.Rule{
		rule("small", limit.TokenBucket, 100, time.Hour, 0),
		rule("large", limit.SlidingWindowLog, 1000, time.Hour, 0),
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				cost := int64(1 + (i+j)%3)
				v, err := st.Apply(context.Background(), store.Request{Key: "set:u", Rules: rules, Cost: cost})
				if err != nil {
					t.Error(err)
					return
				}
				if v.Allowed {
					admitted.Add(cost)
				}
			}
		}(i)
	}
	wg.Wait()
	v := apply(t, st, "set:u", rules, 0)
	small, large := 100-v.D[0].Remaining, 1000-v.D[1].Remaining
	if small != admitted.Load() || large != admitted.Load() {
		t.Fatalf("admitted %d units, but the limits were charged %d and %d", admitted.Load(), small, large)
	}
	if admitted.Load() < 98 || admitted.Load() > 100 {
		t.Fatalf("admitted %d units of 100 with costs 1..3 from 1280 offered", admitted.Load())
	}
}

func testKeysIndependent(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	rules := []limit.Rule{rule("one", limit.FixedWindow, 1, time.Hour, 0)}
	for i := 0; i < 100; i++ {
		if v := apply(t, st, fmt.Sprintf("ind:user-%d", i), rules, 1); !v.Allowed {
			t.Fatalf("user-%d denied on its first request", i)
		}
	}
	for i := 0; i < 100; i++ {
		if v := apply(t, st, fmt.Sprintf("ind:user-%d", i), rules, 1); v.Allowed {
			t.Fatalf("user-%d allowed twice", i)
		}
	}
	// Keys with hash-tag and separator characters stay distinct.
	for _, k := range []string{"ind:{a}", "ind:{a}:b", "ind:a}{", "ind:", "ind:ü"} {
		if v := apply(t, st, k, rules, 1); !v.Allowed {
			t.Fatalf("key %q denied on its first request", k)
		}
	}
}

// testRuleChanges: state is kept per rule name; a changed limit takes effect on
// the next check; a changed algorithm or a new rule starts fresh.
func testRuleChanges(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	v1 := []limit.Rule{rule("a", limit.TokenBucket, 10, time.Hour, 0)}
	apply(t, st, "chg:u", v1, 10)
	if v := apply(t, st, "chg:u", v1, 1); v.Allowed {
		t.Fatal("exhausted bucket allowed")
	}
	// Raise the limit: the bucket's debt is re-read at the new rate.
	v2 := []limit.Rule{rule("a", limit.TokenBucket, 20, time.Hour, 0)}
	if v := apply(t, st, "chg:u", v2, 1); !v.Allowed || v.D[0].Remaining != 9 {
		t.Fatalf("after raising the limit to 20: %+v, want allowed with 9 remaining", v.D[0])
	}
	// Change the algorithm: fresh state.
	v3 := []limit.Rule{rule("a", limit.FixedWindow, 5, time.Hour, 0)}
	if v := apply(t, st, "chg:u", v3, 1); !v.Allowed || v.D[0].Remaining != 4 {
		t.Fatalf("after switching to fixed_window: %+v, want a fresh window", v.D[0])
	}
	// Add a rule, keep the old one's state.
	v4 := []limit.Rule{rule("b", limit.TokenBucket, 3, time.Hour, 0), v3[0]}
	if v := apply(t, st, "chg:u", v4, 1); !v.Allowed || v.D[0].Remaining != 2 || v.D[1].Remaining != 3 {
		t.Fatalf("after adding a rule: %+v", v)
	}
}

func testInvalid(t *testing.T, newStore Factory) {
	st := newStore(t, clocktest.New(Epoch))
	r := []limit.Rule{rule("a", limit.TokenBucket, 1, time.Second, 0)}
	bad := []store.Request{
		{Key: "", Rules: r, Cost: 1},
		{Key: "inv:k", Rules: nil, Cost: 1},
		{Key: "inv:k", Rules: r, Cost: -1},
		{Key: "inv:k", Rules: make([]limit.Rule, limit.MaxRules+1), Cost: 1},
	}
	for _, req := range bad {
		if _, err := st.Apply(context.Background(), req); !errors.Is(err, store.ErrInvalidRequest) {
			t.Errorf("Apply(%+v) = %v, want ErrInvalidRequest", req, err)
		}
	}
}

func testClosed(t *testing.T, newStore Factory) {
	st := newStore(t, clocktest.New(Epoch))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	r := []limit.Rule{rule("a", limit.TokenBucket, 1, time.Second, 0)}
	if _, err := st.Apply(context.Background(), store.Request{Key: "closed:k", Rules: r, Cost: 1}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Apply after Close = %v, want ErrClosed", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}
