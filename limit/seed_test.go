package limit

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// A seeded state at the instant it is made: exactly the remaining it was
// given, for every algorithm; nothing consumed is the fresh state.
func TestSeedTable(t *testing.T) {
	for _, tc := range []struct {
		r         Rule
		remaining int64
		reset     time.Duration
		want      State
	}{
		{Rule{Algorithm: TokenBucket, Limit: 10, Period: 10 * time.Second}, 4, 0,
			State{Alg: TokenBucket, T: t0 + 6*int64(time.Second), N: int64(time.Second), P: t0}},
		{Rule{Algorithm: LeakyBucket, Limit: 10, Period: 10 * time.Second, Burst: 5}, 0, 0,
			State{Alg: LeakyBucket, T: t0 + 5*int64(time.Second), N: int64(time.Second), P: t0}},
		{Rule{Algorithm: FixedWindow, Limit: 10, Period: time.Minute}, 7, 0,
			State{Alg: FixedWindow, T: t0, N: 3}},
		{Rule{Algorithm: SlidingWindowCounter, Limit: 10, Period: time.Minute}, 2, 0,
			State{Alg: SlidingWindowCounter, T: t0, N: 8}},
		{Rule{Algorithm: SlidingWindowLog, Limit: 10, Period: time.Minute}, 9, 20 * time.Second,
			State{Alg: SlidingWindowLog, N: 1, Log: []Entry{{At: t0 - int64(40*time.Second), Cost: 1}}}},
		{Rule{Algorithm: SlidingWindowLog, Limit: 10, Period: time.Minute}, 9, 0, // reset unknown: a whole period
			State{Alg: SlidingWindowLog, N: 1, Log: []Entry{{At: t0, Cost: 1}}}},
		{Rule{Algorithm: TokenBucket, Limit: 10, Period: time.Minute}, 10, 0, State{}},
		{Rule{Algorithm: TokenBucket, Limit: 10, Period: time.Minute}, 99, 0, State{}},                               // clamped
		{Rule{Algorithm: FixedWindow, Limit: 10, Period: time.Minute}, -3, 0, State{Alg: FixedWindow, T: t0, N: 10}}, // clamped
	} {
		r, err := tc.r.Normalize()
		if err != nil {
			t.Fatal(err)
		}
		got := r.Seed(tc.remaining, tc.reset, t0)
		if !got.Equal(tc.want) {
			t.Errorf("%v Seed(%d, %v) = %+v, want %+v", r.Algorithm, tc.remaining, tc.reset, got, tc.want)
		}
		_, d := r.Step(got, t0, 0)
		if want := min(max(tc.remaining, 0), r.Capacity()); d.Remaining != want {
			t.Errorf("%v seeded with %d: a peek says %d remaining", r.Algorithm, tc.remaining, d.Remaining)
		}
	}
}

// The seed is conservative: take any state a random timeline leaves, read
// what a peek reports of it (what a store answers), seed a state from that
// report, and from then on no single request of any cost at any later
// instant is admitted by the seeded state where the original denies it;
// at the instant of the report both leave the same remaining.
func TestPropertySeedIsConservative(t *testing.T) {
	for _, a := range []Algorithm{TokenBucket, LeakyBucket, FixedWindow, SlidingWindowCounter, SlidingWindowLog} {
		t.Run(a.String(), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				r := genRule(t, a)
				var s State
				now := t0 + rapid.Int64Range(0, int64(time.Hour)).Draw(t, "start")
				for range rapid.IntRange(0, 60).Draw(t, "steps") {
					now += rapid.Int64Range(0, int64(r.Period)/4).Draw(t, "dt")
					s, _ = r.Step(s, now, rapid.Int64Range(1, r.Capacity()).Draw(t, "cost"))
				}
				now += rapid.Int64Range(0, int64(r.Period)).Draw(t, "report_after")
				_, report := r.Step(s, now, 0)
				seeded := r.Seed(report.Remaining, report.ResetAfter, now)
				if _, d := r.Step(seeded, now, 0); d.Remaining != report.Remaining {
					t.Fatalf("seeded from remaining %d, a peek at once says %d", report.Remaining, d.Remaining)
				}
				for range 20 {
					later := now + rapid.Int64Range(0, 3*int64(r.Period)).Draw(t, "later")
					cost := rapid.Int64Range(1, r.Capacity()).Draw(t, "cost")
					_, orig := r.Step(s, later, cost)
					_, seed := r.Step(seeded, later, cost)
					if seed.Allowed && !orig.Allowed {
						t.Fatalf("at +%v cost %d: the seeded state admits, the original denies (report %+v)",
							time.Duration(later-now), cost, report)
					}
				}
			})
		})
	}
}

// Spent: the share of the capacity a state holds, judged at the later of
// now and the state's own latest instant.
func TestSpent(t *testing.T) {
	tb, _ := Rule{Algorithm: TokenBucket, Limit: 10, Period: 10 * time.Second}.Normalize()
	fw, _ := Rule{Algorithm: FixedWindow, Limit: 10, Period: time.Minute}.Normalize()
	s, _ := tb.Step(State{}, t0, 4)
	for _, tc := range []struct {
		r    Rule
		s    State
		now  int64
		want float64
	}{
		{tb, State{}, t0, 0},
		{tb, s, t0, 0.4},
		{tb, s, t0 + int64(2*time.Second), 0.2},
		{tb, s, t0 - int64(time.Hour), 0.4}, // written later than now: judged at its own instant
		{tb, s, t0 + int64(time.Hour), 0},
		{fw, State{Alg: FixedWindow, T: t0, N: 10}, t0, 1},
		{fw, State{Alg: FixedWindow, T: t0, N: 3}, t0 - int64(time.Hour), 0.3},
		{fw, State{Alg: FixedWindow, T: t0, N: 3}, t0 + int64(time.Minute), 0},
		{fw, State{Alg: TokenBucket, T: t0}, t0, 0}, // another algorithm's state is fresh
	} {
		if got := tc.r.Spent(tc.s, tc.now); got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("%v %+v at %+d: spent %v, want %v", tc.r.Algorithm, tc.s, tc.now-t0, got, tc.want)
		}
	}
}
