package limit

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// genRule draws a valid rule of algorithm a with small numbers, so that random
// timelines exhaust it often.
func genRule(t *rapid.T, a Algorithm) Rule {
	r := Rule{
		Name:      "p",
		Algorithm: a,
		Limit:     rapid.Int64Range(1, 20).Draw(t, "limit"),
		Period:    time.Duration(rapid.Int64Range(1, 5000).Draw(t, "period_ms")) * time.Millisecond,
	}
	if a == TokenBucket || a == LeakyBucket {
		r.Burst = rapid.Int64Range(1, 30).Draw(t, "burst")
	}
	n, err := r.Normalize()
	if err != nil {
		t.Fatalf("generated an invalid rule %+v: %v", r, err)
	}
	return n
}

type admitted struct{ at, cost int64 }

// timeline feeds random requests (time moving forward by up to a period, at
// times not at all) to r and checks the local contracts of every decision:
// Remaining is exact (a request of that cost passes now and one more unit
// does not), RetryAfter is exact (the same request passes after it and not a
// nanosecond before), peeks and denials change nothing. It returns what was
// admitted.
func timeline(t *rapid.T, r Rule) []admitted {
	now := t0 + rapid.Int64Range(0, int64(time.Hour)).Draw(t, "start")
	var s State
	var out []admitted
	steps := rapid.IntRange(1, 120).Draw(t, "steps")
	for i := 0; i < steps; i++ {
		now += rapid.Int64Range(0, int64(r.Period)).Draw(t, "dt") * rapid.Int64Range(0, 1).Draw(t, "moves")
		cost := rapid.Int64Range(0, r.Capacity()+1).Draw(t, "cost")
		next, d := r.Step(s, now, cost)
		if cost > r.Capacity() && (d.Allowed || d.RetryAfter != RetryNever) {
			t.Fatalf("cost %d over capacity %d: %+v", cost, r.Capacity(), d)
		}
		if d.Remaining < 0 || d.Remaining > r.Capacity() {
			t.Fatalf("remaining %d outside [0, %d]", d.Remaining, r.Capacity())
		}
		if !d.Allowed && d.RetryAfter != RetryNever {
			c := max(cost, 1)
			if d.RetryAfter <= 0 {
				t.Fatalf("denied with RetryAfter %v", d.RetryAfter)
			}
			if _, late := r.Step(s, now+int64(d.RetryAfter), c); !late.Allowed {
				t.Fatalf("denied again after waiting RetryAfter %v: %+v", d.RetryAfter, late)
			}
			if _, early := r.Step(s, now+int64(d.RetryAfter)-1, c); early.Allowed {
				t.Fatalf("allowed 1ns before RetryAfter %v", d.RetryAfter)
			}
		}
		if d.Allowed && cost > 0 {
			out = append(out, admitted{now, cost})
			s = next
		} else if !next.Equal(s) {
			t.Fatalf("a peek or a denial changed the state")
		}
		// Remaining is exact.
		if d.Remaining > 0 {
			if _, ok := r.Step(s, now, d.Remaining); !ok.Allowed {
				t.Fatalf("Remaining %d, but a request of that cost is denied", d.Remaining)
			}
		}
		if d.Remaining < r.Capacity() {
			if _, no := r.Step(s, now, d.Remaining+1); no.Allowed {
				t.Fatalf("Remaining %d, but %d more pass", d.Remaining, d.Remaining+1)
			}
		}
	}
	return out
}

// Token and leaky bucket: over any interval [a, b] the admitted cost never
// exceeds Burst + (b-a)/I, the GCRA promise.
func TestPropertyBucketsNeverExceedBurstPlusRate(t *testing.T) {
	for _, a := range []Algorithm{TokenBucket, LeakyBucket} {
		t.Run(a.String(), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				r := genRule(t, a)
				got := timeline(t, r)
				for i := range got {
					var sum int64
					for j := i; j < len(got); j++ {
						sum += got[j].cost
						if allowance := r.Burst + (got[j].at-got[i].at)/r.interval(); sum > allowance {
							t.Fatalf("admitted %d units in %v, promise is %d", sum, time.Duration(got[j].at-got[i].at), allowance)
						}
					}
				}
			})
		})
	}
}

// Sliding window log: at most Limit units in any interval of length Period.
func TestPropertySlidingLogIsExact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRule(t, SlidingWindowLog)
		got := timeline(t, r)
		for j := range got {
			var sum int64
			for i := j; i >= 0 && got[i].at > got[j].at-int64(r.Period); i-- {
				sum += got[i].cost
			}
			if sum > r.Limit {
				t.Fatalf("%d units in the period ending at entry %d, limit %d", sum, j, r.Limit)
			}
		}
	})
}

// Fixed window: at most Limit units in each aligned window. Sliding window
// counter: the same per fixed window, and at most 2*Limit in any sliding
// interval of length Period (its estimate only ever undercounts the previous
// window by the weighting).
func TestPropertyWindows(t *testing.T) {
	for _, a := range []Algorithm{FixedWindow, SlidingWindowCounter} {
		t.Run(a.String(), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				r := genRule(t, a)
				got := timeline(t, r)
				p := int64(r.Period)
				per := map[int64]int64{}
				for _, e := range got {
					per[floorDiv(e.at, p)] += e.cost
					if per[floorDiv(e.at, p)] > r.Limit {
						t.Fatalf("window %d holds %d units, limit %d", floorDiv(e.at, p), per[floorDiv(e.at, p)], r.Limit)
					}
				}
				if a == SlidingWindowCounter {
					for j := range got {
						var sum int64
						for i := j; i >= 0 && got[i].at > got[j].at-p; i-- {
							sum += got[i].cost
						}
						if sum > 2*r.Limit {
							t.Fatalf("%d units in one period, limit %d", sum, r.Limit)
						}
					}
				}
			})
		})
	}
}

// A clock that jumps back never yields more than the state already promised:
// after any history, stepping back and spending everything Remaining says is
// no more than staying put would have allowed.
func TestPropertyClockBackwardsGrantsNothing(t *testing.T) {
	algs := []Algorithm{TokenBucket, LeakyBucket, FixedWindow, SlidingWindowCounter, SlidingWindowLog}
	rapid.Check(t, func(t *rapid.T) {
		r := genRule(t, rapid.SampledFrom(algs).Draw(t, "alg"))
		now := t0
		var s State
		for i := rapid.IntRange(1, 40).Draw(t, "n"); i > 0; i-- {
			now += rapid.Int64Range(0, int64(r.Period)/4).Draw(t, "dt")
			s, _ = r.Step(s, now, 1)
		}
		back := now - rapid.Int64Range(1, 3*int64(r.Period)).Draw(t, "back")
		_, here := r.Step(s, now, 0)
		_, there := r.Step(s, back, 0)
		if there.Remaining > here.Remaining {
			t.Fatalf("stepping the clock back %v raised Remaining from %d to %d", time.Duration(now-back), here.Remaining, there.Remaining)
		}
	})
}

func TestApplyAllOrNothing(t *testing.T) {
	minute, _ := Rule{Name: "m", Algorithm: TokenBucket, Limit: 3, Period: time.Minute}.Normalize()
	hour, _ := Rule{Name: "h", Algorithm: SlidingWindowLog, Limit: 4, Period: time.Hour}.Normalize()
	rules := []Rule{minute, hour}
	states := make([]State, 2)
	v, _ := Apply(rules, states, t0, 3)
	if !v.Allowed || v.N != 2 || v.D[0].Remaining != 0 || v.D[1].Remaining != 1 || v.Binding() != 0 {
		t.Fatalf("first: %+v", v)
	}
	before := states[1]
	v, _ = Apply(rules, states, t0, 1)
	if v.Allowed || v.RetryAfter != 20*time.Second || !v.D[1].Allowed || v.D[1].Remaining != 1 || len(states[1].Log) != len(before.Log) {
		t.Fatalf("the minute limit denies, the hour limit must be untouched: %+v", v)
	}
	v, _ = Apply(rules, states, t0+int64(time.Minute), 2)
	if v.Allowed || v.RetryAfter != 59*time.Minute || !v.D[0].Allowed || v.D[0].Remaining != 3 || v.Binding() != 1 {
		t.Fatalf("the hour limit denies 2, the minute limit must keep 3: %+v", v)
	}
	v, _ = Apply(rules, states, t0+int64(time.Minute), 5)
	if v.Allowed || v.RetryAfter != RetryNever {
		t.Fatalf("cost 5 exceeds both capacities: %+v", v)
	}
	v, _ = Apply(rules, states, t0+int64(time.Minute), 0)
	if !v.Allowed || v.D[0].Remaining != 3 || v.D[1].Remaining != 1 {
		t.Fatalf("peek: %+v", v)
	}
}

func TestRaisingTheRateKeepsConsumedUnits(t *testing.T) {
	ten, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 10, Period: time.Hour}.Normalize()
	twenty, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 20, Period: time.Hour}.Normalize()
	s, _ := ten.Step(State{}, t0, 4)
	if _, d := twenty.Step(s, t0, 0); d.Remaining != 16 {
		t.Fatalf("used 4 of 10, raised to 20: remaining %d, want 16", d.Remaining)
	}
	s, _ = ten.Step(s, t0, 6)
	if _, d := twenty.Step(s, t0, 1); !d.Allowed || d.Remaining != 9 {
		t.Fatalf("used 10 of 10, raised to 20: %+v, want allowed with 9 left", d)
	}
	five, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 5, Period: time.Hour}.Normalize()
	if _, d := five.Step(s, t0, 1); d.Allowed || d.RetryAfter != 72*time.Minute {
		t.Fatalf("used 10, lowered to 5: %+v, want denied until 6 units refill at 12m each", d)
	}
}

// Lowering the rate: the subject waits for what it consumed at the new rate,
// and RetryAfter is exact once the rescaled state is saved, as Apply does.
func TestLoweringTheRateIsExact(t *testing.T) {
	fast, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 10, Period: time.Second}.Normalize()
	slow, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 1, Period: time.Second}.Normalize()
	states := []State{{}}
	Apply([]Rule{fast}, states, t0, 10)
	v, changed := Apply([]Rule{slow}, states, t0, 1)
	if v.Allowed || !changed || v.RetryAfter != 10*time.Second {
		t.Fatalf("after lowering to 1/s: %+v changed=%v, want denied for 10s and the state rescaled", v, changed)
	}
	if v, _ := Apply([]Rule{slow}, states, t0+int64(time.Second), 1); v.Allowed {
		t.Fatal("allowed after 1s: the subject refilled at the old rate")
	}
	if v, _ := Apply([]Rule{slow}, states, t0+int64(10*time.Second)-1, 1); v.Allowed {
		t.Fatal("allowed 1ns before RetryAfter")
	}
	if v, _ := Apply([]Rule{slow}, states, t0+int64(10*time.Second), 1); !v.Allowed {
		t.Fatal("denied at RetryAfter")
	}
}

// A drastic cut cannot overflow into a full bucket: the debt is capped.
func TestRescaleIsCapped(t *testing.T) {
	big, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 10_000, Period: time.Hour}.Normalize()
	tiny, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 1, Period: MaxPeriod}.Normalize()
	states := []State{{}}
	Apply([]Rule{big}, states, t0, 10_000)
	v, _ := Apply([]Rule{tiny}, states, t0, 1)
	if v.Allowed || v.RetryAfter != MaxDebt {
		t.Fatalf("after cutting 10000/h to 1/744h: %+v, want denied for MaxDebt", v)
	}
}

// Random rule changes between requests keep RetryAfter exact for callers
// that save states as Apply says.
func TestPropertyRetryExactAcrossRateChanges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		alg := rapid.SampledFrom([]Algorithm{TokenBucket, LeakyBucket}).Draw(t, "alg")
		var rules []Rule
		for i := 0; i < 3; i++ {
			r := genRule(t, alg)
			r.Name = "same"
			rules = append(rules, r)
		}
		states := []State{{}}
		now := t0
		for i := rapid.IntRange(1, 60).Draw(t, "n"); i > 0; i-- {
			r := rules[rapid.IntRange(0, 2).Draw(t, "rule")]
			now += rapid.Int64Range(0, int64(r.Period)).Draw(t, "dt")
			cost := rapid.Int64Range(0, r.Burst).Draw(t, "cost")
			v, _ := Apply([]Rule{r}, states, now, cost)
			if !v.Allowed && v.RetryAfter > 0 {
				probe := append([]State(nil), states...)
				if w, _ := Apply([]Rule{r}, probe, now+int64(v.RetryAfter), max(cost, 1)); !w.Allowed {
					t.Fatalf("denied again at RetryAfter %v", v.RetryAfter)
				}
				probe = append([]State(nil), states...)
				if w, _ := Apply([]Rule{r}, probe, now+int64(v.RetryAfter)-1, max(cost, 1)); w.Allowed {
					t.Fatalf("allowed 1ns before RetryAfter %v", v.RetryAfter)
				}
			}
		}
	})
}

// A clock that stepped back, met by a raised rate, must not shrink the span it
// went back by (found by the JavaScript port's cross-check).
func TestRaisedRateWithClockBackGrantsNothing(t *testing.T) {
	slow, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 1, Period: time.Second, Burst: 10}.Normalize()
	fast, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 10, Period: time.Second, Burst: 10}.Normalize()
	states := []State{{}}
	Apply([]Rule{slow}, states, t0, 10) // TAT = t0+10s
	Apply([]Rule{fast}, states, t0-int64(5*time.Second), 0)
	v, _ := Apply([]Rule{fast}, states, t0, 0)
	if v.D[0].Remaining != 0 {
		t.Fatalf("remaining %d at t0; 10 slow units rescale to 1s of debt at 10/s, so none is back yet", v.D[0].Remaining)
	}
	v, _ = Apply([]Rule{fast}, states, t0+int64(time.Second), 0)
	if v.D[0].Remaining != 10 {
		t.Fatalf("remaining %d at t0+1s, want a full bucket", v.D[0].Remaining)
	}
}

func TestValidateCatchesAStaleInterval(t *testing.T) {
	r, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 10, Period: time.Second}.Normalize()
	if err := r.Validate(); err != nil {
		t.Fatalf("a normalized rule: %v", err)
	}
	r.Limit, r.Burst = 1, 1
	if err := r.Validate(); err == nil {
		t.Fatal("Validate accepted a rule whose limit changed after Normalize")
	}
	filled := Rule{Name: "a", Algorithm: TokenBucket, Limit: 5, Period: time.Second, Burst: 5}
	if err := filled.Validate(); err != nil {
		t.Fatalf("a rule written with its defaults filled: %v", err)
	}
}

// Apply leaves states untouched unless it reports a change, also when the
// state is fresh or belongs to another algorithm.
func TestApplyUntouchedUnlessChanged(t *testing.T) {
	r, _ := Rule{Name: "a", Algorithm: TokenBucket, Limit: 1, Period: time.Second}.Normalize()
	for _, st := range []State{{}, {Alg: FixedWindow, T: 5, N: 3}} {
		states := []State{st}
		if _, changed := Apply([]Rule{r}, states, t0, 0); changed || !states[0].Equal(st) {
			t.Fatalf("a peek changed %+v to %+v (changed=%v)", st, states[0], changed)
		}
		if _, changed := Apply([]Rule{r}, states, t0, 2); changed || !states[0].Equal(st) {
			t.Fatalf("an impossible request changed %+v to %+v (changed=%v)", st, states[0], changed)
		}
	}
}
