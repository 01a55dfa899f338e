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

// Quantum is the fair quantum of a bucket shared by instances: the store
// rule's burst divided among them. Under saturation a holder asks once per
// quantum of its own demand (Backoff), so each holder asks as often as its
// demand is large, and since a take gets what the bucket gathered since the
// previous take, each holder's share of the rate follows its share of the
// demand. It is also the store calls' bound under saturation: one take per
// Quantum checks.
func Quantum(storeRule limit.Rule, instances int) int64 {
	return max(1, storeRule.Burst/int64(max(1, instances)))
}

// Backoff is how long a holder whose take came back short (the bucket ran
// dry) waits before it asks again: the time its demand takes to reach a
// Quantum, at least the bucket's wait for one unit (oneUnit, from the
// take's decision), at most two lease durations (so that a holder whose
// demand estimate is still low is not shut out for long).
func Backoff(demand float64, oneUnit, d time.Duration, storeRule limit.Rule, instances int) time.Duration {
	hi := 2 * d
	w := hi
	if demand > 0 {
		w = time.Duration(float64(Quantum(storeRule, instances)) / demand * float64(time.Second))
	}
	return max(oneUnit, storeRule.Interval(), min(w, hi))
}
