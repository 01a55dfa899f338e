package lease_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/limit"
)

func rule(t testing.TB, alg limit.Algorithm, perSecond, burst int64) limit.Rule {
	t.Helper()
	r, err := limit.Rule{Name: "global", Algorithm: alg, Limit: perSecond, Period: time.Second, Burst: burst}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestStoreRuleLowersTheBurstByOneLease(t *testing.T) {
	r := rule(t, limit.TokenBucket, 1000, 1000)
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{
		{500 * time.Millisecond, 500},
		{250 * time.Millisecond, 750},
		{time.Millisecond, 999},
		{1500 * time.Microsecond, 998}, // 1.5 units, rounded up
	} {
		sr, err := lease.StoreRule(r, c.d)
		if err != nil {
			t.Fatalf("%v: %v", c.d, err)
		}
		if sr.Burst != c.want || sr.Limit != r.Limit || sr.Period != r.Period || sr.Name != r.Name {
			t.Errorf("%v: store rule %+v, want burst %d and the rest of %+v", c.d, sr, c.want, r)
		}
		if got := lease.InLease(r, c.d); got != r.Burst-c.want {
			t.Errorf("%v: InLease %d, want %d", c.d, got, r.Burst-c.want)
		}
	}
}

func TestLeaseKeepsHalfTheBurstAtLeast(t *testing.T) {
	for _, c := range []struct {
		perSecond, burst int64
		wantD            time.Duration
		wantBurst        int64
	}{
		{1000, 1000, 500 * time.Millisecond, 500}, // the longest lease
		{1000, 5000, 500 * time.Millisecond, 4500},
		{1000, 100, 50 * time.Millisecond, 50}, // half the burst's refill
		{1000, 3, 1500 * time.Microsecond, 1},  // 1.5 units: 2 leased, 1 kept
		{1000, 2, time.Millisecond, 1},
	} {
		r := rule(t, limit.TokenBucket, c.perSecond, c.burst)
		sr, d, err := lease.Lease(r, lease500)
		if err != nil || d != c.wantD || sr.Burst != c.wantBurst {
			t.Errorf("%d/s burst %d: lease %v, store burst %d, %v; want %v and %d", c.perSecond, c.burst, d, sr.Burst, err, c.wantD, c.wantBurst)
		}
	}
	if _, _, err := lease.Lease(rule(t, limit.TokenBucket, 1000, 1), lease500); err == nil {
		t.Error("a burst of 1: no error")
	}
	if _, _, err := lease.Lease(rule(t, limit.FixedWindow, 1000, 0), lease500); err == nil {
		t.Error("a fixed window: no error")
	}
}

func TestStoreRuleRefuses(t *testing.T) {
	if _, err := lease.StoreRule(rule(t, limit.TokenBucket, 1000, 500), 500*time.Millisecond); err == nil {
		t.Error("a burst of exactly one lease of the rate: no error")
	}
	for _, alg := range []limit.Algorithm{limit.LeakyBucket, limit.FixedWindow, limit.SlidingWindowCounter, limit.SlidingWindowLog} {
		_, err := lease.StoreRule(rule(t, alg, 1000, 0), time.Millisecond)
		if err == nil {
			t.Errorf("%v: no error", alg)
		}
		if errors.Is(err, limit.ErrInvalidRule) {
			t.Errorf("%v: %v reads as an invalid rule, not as an unleasable one", alg, err)
		}
	}
}

func TestSize(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500) // a store rule: burst 500
	d := 500 * time.Millisecond
	for _, c := range []struct {
		demand    float64
		instances int
		want      int64
	}{
		{0, 3, 1},        // idle: one unit
		{0.5, 3, 1},      // ceil(0.125)
		{10, 3, 3},       // half a lease of demand, rounded up
		{333.4, 3, 84},   // ceil(83.35)
		{1200, 3, 250},   // capped at half the burst
		{10_000, 3, 250}, // however busy
		{1200, 1, 300},   // alone: the whole burst is its own
		{10_000, 1, 500},
	} {
		if got := lease.Size(c.demand, d, sr, c.instances); got != c.want {
			t.Errorf("Size(%v/s, %d instances) = %d, want %d", c.demand, c.instances, got, c.want)
		}
	}
	if got := lease.MaxHeld(rule(t, limit.TokenBucket, 10, 1), 3); got != 1 {
		t.Errorf("MaxHeld of a burst of 1 among 3: %d, want 1", got)
	}
}

func TestShare(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	for _, c := range []struct{ demand, want float64 }{
		{0, 1}, {999, 1}, {1000, 1}, {2000, 0.5}, {3000, 1.0 / 3}, {1e6, 0.001},
	} {
		if got := lease.Share(sr, c.demand); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Share at a demand of %v/s = %v, want %v", c.demand, got, c.want)
		}
	}
	perMinute := rule(t, limit.TokenBucket, 60, 60)
	perMinute.Period = time.Minute
	if got := lease.Share(perMinute, 2); math.Abs(got-0.5) > 1e-12 {
		t.Errorf("60 a minute at a demand of 2/s: %v, want 0.5", got)
	}
}

// expNeg's polynomial below 1e-4 agrees with the exponential.
func TestExpNeg(t *testing.T) {
	for _, x := range []float64{0, 1e-9, 1e-6, 5e-5, 9.99e-5, 1e-4, 0.5, 3} {
		got, want := lease.ExpNeg(x), math.Exp(-x)
		if d := math.Abs(got-want) / want; d > 2e-13 {
			t.Errorf("expNeg(%g) = %.17g, want %.17g (relative error %g)", x, got, want, d)
		}
	}
}
