package lease

import (
	"fmt"
	"math"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

// Lease returns how a leased rule r is kept under a longest lease of
// maxLease: the lease duration d, maxLease or half the time r's burst takes
// to refill when that is shorter, and the store rule (StoreRule(r, d)),
// which then keeps at least half of r's burst. It fails when r is not a
// token bucket or its burst is below 2 (limit.Rule.Leasable).
func Lease(r limit.Rule, maxLease time.Duration) (storeRule limit.Rule, d time.Duration, err error) {
	if err := r.Leasable(); err != nil {
		return r, 0, fmt.Errorf("lease: %s: %w", r.Name, err)
	}
	d = min(maxLease, time.Duration(r.Burst)*r.Interval()/2)
	storeRule, err = StoreRule(r, d)
	return storeRule, d, err
}

// StoreRule is the rule a leased limit keeps in the shared store under a
// lease of d: r with its burst lowered by the units its rate brings in d,
// so that units spent up to d after they were taken never exceed what r
// allows over any interval (see the package doc). It fails when r is not a
// token bucket or its burst is too small for d.
func StoreRule(r limit.Rule, d time.Duration) (limit.Rule, error) {
	if r.Algorithm != limit.TokenBucket {
		return r, fmt.Errorf("lease: %s is a %v: only a token_bucket can be leased", r.Name, r.Algorithm)
	}
	inLease := InLease(r, d)
	s := r
	s.Burst = r.Burst - inLease
	if s.Burst < 1 {
		return r, fmt.Errorf("lease: %s: a burst of %d is no more than the %d units its rate brings in a lease of %v", r.Name, r.Burst, inLease, d)
	}
	return s.Normalize()
}

// InLease is the units r's rate brings in d, rounded up: what StoreRule
// takes off the burst.
func InLease(r limit.Rule, d time.Duration) int64 {
	return int64(math.Ceil(float64(d) / float64(r.Interval())))
}

// Size is how many units a holder wants to hold: what its demand (units per
// second) spends in half a lease d, at least 1, at most MaxHeld. A holder
// asks for more when it holds less than half of that, so that at a steady
// demand each slice is spent within half its lease, leaving the other half
// for the take's round trip and for the demand's jitter.
func Size(demand float64, d time.Duration, storeRule limit.Rule, instances int) int64 {
	want := int64(math.Ceil(demand * d.Seconds() / 2))
	return max(1, min(want, MaxHeld(storeRule, instances)))
}

// MaxHeld bounds what one holder asks for at once: the store rule's burst
// when it is alone, half of it when instances share it, so that a spike on
// one instance leaves at least half the burst to the others (a take larger
// than that only for a single check that costs more).
func MaxHeld(storeRule limit.Rule, instances int) int64 {
	if instances <= 1 {
		return storeRule.Burst
	}
	return max(1, storeRule.Burst/2)
}

// Share is the share of its demand each holder takes when the total
// demand on a limit (units per second, the store's tally) exceeds its
// rate: the rate over the demand, or 1 when the rate covers it. Every
// holder taking that share of its own demand, the shares add up to the rate
// and each follows its holder's demand.
func Share(storeRule limit.Rule, demand float64) float64 {
	r := float64(storeRule.Limit) / storeRule.Period.Seconds()
	if demand <= r {
		return 1
	}
	return r / demand
}
