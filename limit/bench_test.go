package limit

import (
	"testing"
	"time"
)

func BenchmarkStep(b *testing.B) {
	for _, a := range []Algorithm{TokenBucket, LeakyBucket, FixedWindow, SlidingWindowCounter, SlidingWindowLog} {
		r, _ := Rule{Name: "b", Algorithm: a, Limit: 1000, Period: time.Second}.Normalize()
		b.Run(a.String(), func(b *testing.B) {
			var s State
			now := t0
			b.ReportAllocs()
			for b.Loop() {
				now += int64(time.Millisecond) // one request per ms: allowed, steady state
				s, _ = r.Step(s, now, 1)
			}
		})
	}
}

// BenchmarkApplyTwoRules: "100/min AND 1000/h", one check every 4s: every
// check is allowed (900/h).
func BenchmarkApplyTwoRules(b *testing.B) {
	m, _ := Rule{Name: "m", Algorithm: TokenBucket, Limit: 100, Period: time.Minute}.Normalize()
	h, _ := Rule{Name: "h", Algorithm: SlidingWindowCounter, Limit: 1000, Period: time.Hour}.Normalize()
	rules := []Rule{m, h}
	states := make([]State, 2)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now += int64(4 * time.Second)
		if v, _ := Apply(rules, states, now, 1); !v.Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkApplyTwoRulesDenied: the same set with the hour limit exhausted:
// every check is denied, the counter finding its exact RetryAfter by binary
// search, and the minute limit reporting a peek.
func BenchmarkApplyTwoRulesDenied(b *testing.B) {
	m, _ := Rule{Name: "m", Algorithm: TokenBucket, Limit: 100, Period: time.Minute}.Normalize()
	h, _ := Rule{Name: "h", Algorithm: SlidingWindowCounter, Limit: 1000, Period: time.Hour}.Normalize()
	rules := []Rule{m, h}
	states := make([]State, 2)
	now := t0
	for i := 0; i < 1000; i++ {
		now += int64(time.Second)
		Apply(rules, states, now, 1)
	}
	b.ReportAllocs()
	for b.Loop() {
		if v, _ := Apply(rules, states, now, 1); v.Allowed {
			b.Fatal("allowed")
		}
	}
}

// BenchmarkApplyOneRule is the path the stores take for a one-rule set: the
// state is stepped in place.
func BenchmarkApplyOneRule(b *testing.B) {
	for _, a := range []Algorithm{TokenBucket, LeakyBucket, FixedWindow, SlidingWindowCounter, SlidingWindowLog} {
		r, _ := Rule{Name: "b", Algorithm: a, Limit: 1000, Period: time.Second}.Normalize()
		b.Run(a.String(), func(b *testing.B) {
			rules := []Rule{r}
			states := make([]State, 1)
			now := t0
			b.ReportAllocs()
			for b.Loop() {
				now += int64(time.Millisecond)
				Apply(rules, states, now, 1)
			}
		})
	}
}
