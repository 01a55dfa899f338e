package limit

import (
	"errors"
	"testing"
	"time"
)

// t0 is aligned to the hour (and so to every window the tables use).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

const never = RetryNever

// row is one request of a timeline: at t0+at, cost units, and the exact
// decision expected.
type row struct {
	at        time.Duration
	cost      int64
	allowed   bool
	remaining int64
	retry     time.Duration
	reset     time.Duration
	delay     time.Duration
}

func run(t *testing.T, r Rule, rows []row) {
	t.Helper()
	r, err := r.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	var s State
	for i, w := range rows {
		next, d := r.Step(s, t0+int64(w.at), w.cost)
		want := Decision{Allowed: w.allowed, Limit: r.Limit, Remaining: w.remaining, RetryAfter: w.retry, ResetAfter: w.reset, Delay: w.delay}
		if d != want {
			t.Fatalf("row %d (at %v cost %d):\n got %+v\nwant %+v", i, w.at, w.cost, d, want)
		}
		if !d.Allowed || w.cost == 0 {
			if !next.Equal(s) {
				t.Fatalf("row %d: a denied request or a peek changed the state: %+v -> %+v", i, s, next)
			}
		}
		s = next
	}
}

const (
	ms = time.Millisecond
	s  = time.Second
	m  = time.Minute
	h  = time.Hour
)

func TestTokenBucketTimeline(t *testing.T) {
	// 5 per 10h: one token every 2h, bucket of 5.
	run(t, Rule{Name: "tb", Algorithm: TokenBucket, Limit: 5, Period: 10 * h}, []row{
		{at: 0, cost: 1, allowed: true, remaining: 4, reset: 2 * h},
		{at: 0, cost: 1, allowed: true, remaining: 3, reset: 4 * h},
		{at: 0, cost: 1, allowed: true, remaining: 2, reset: 6 * h},
		{at: 0, cost: 1, allowed: true, remaining: 1, reset: 8 * h},
		{at: 0, cost: 1, allowed: true, remaining: 0, reset: 10 * h},
		{at: 0, cost: 1, allowed: false, remaining: 0, retry: 2 * h, reset: 10 * h},
		{at: 0, cost: 0, allowed: false, remaining: 0, retry: 2 * h, reset: 10 * h}, // peek
		{at: 0, cost: 6, allowed: false, remaining: 0, retry: never, reset: 10 * h}, // over capacity
		{at: 2*h - 1, cost: 1, allowed: false, remaining: 0, retry: 1, reset: 10*h - 2*h + 1},
		{at: 2 * h, cost: 1, allowed: true, remaining: 0, reset: 10 * h}, // refilled one token
		{at: 2 * h, cost: 2, allowed: false, remaining: 0, retry: 4 * h, reset: 10 * h},
		{at: 1 * h, cost: 1, allowed: false, remaining: 0, retry: 3 * h, reset: 11 * h}, // clock went back: nothing granted
		{at: 8 * h, cost: 0, allowed: true, remaining: 3, reset: 4 * h},                 // peek consumes nothing
		{at: 8 * h, cost: 3, allowed: true, remaining: 0, reset: 10 * h},
		{at: 40 * h, cost: 5, allowed: true, remaining: 0, reset: 10 * h}, // full after a long idle
	})
}

func TestTokenBucketBurst(t *testing.T) {
	// 10 per second with a bucket of 20: a fresh subject holds 20 tokens.
	run(t, Rule{Name: "tb", Algorithm: TokenBucket, Limit: 10, Period: s, Burst: 20}, []row{
		{at: 0, cost: 20, allowed: true, remaining: 0, reset: 2 * s},
		{at: 0, cost: 1, allowed: false, remaining: 0, retry: 100 * ms, reset: 2 * s},
		{at: 100 * ms, cost: 1, allowed: true, remaining: 0, reset: 2 * s},
		{at: 1100 * ms, cost: 10, allowed: true, remaining: 0, reset: 2 * s},
		{at: 1100 * ms, cost: 21, allowed: false, remaining: 0, retry: never, reset: 2 * s},
	})
}

func TestLeakyBucketShaping(t *testing.T) {
	// 10 per second, queue of 3: requests leave every 100ms.
	run(t, Rule{Name: "lb", Algorithm: LeakyBucket, Limit: 10, Period: s, Burst: 3}, []row{
		{at: 0, cost: 1, allowed: true, remaining: 2, reset: 100 * ms, delay: 0},
		{at: 0, cost: 1, allowed: true, remaining: 1, reset: 200 * ms, delay: 100 * ms},
		{at: 0, cost: 1, allowed: true, remaining: 0, reset: 300 * ms, delay: 200 * ms},
		{at: 0, cost: 1, allowed: false, remaining: 0, retry: 100 * ms, reset: 300 * ms},
		{at: 100 * ms, cost: 1, allowed: true, remaining: 0, reset: 300 * ms, delay: 200 * ms},
		{at: 150 * ms, cost: 0, allowed: false, remaining: 0, retry: 50 * ms, reset: 250 * ms},
		{at: 400 * ms, cost: 2, allowed: true, remaining: 1, reset: 200 * ms, delay: 0},
		{at: 400 * ms, cost: 4, allowed: false, remaining: 1, retry: never, reset: 200 * ms},
	})
}

func TestFixedWindowTimeline(t *testing.T) {
	// 3 per minute, windows on the minute.
	run(t, Rule{Name: "fw", Algorithm: FixedWindow, Limit: 3, Period: m}, []row{
		{at: 10 * s, cost: 1, allowed: true, remaining: 2, reset: 50 * s},
		{at: 10 * s, cost: 2, allowed: true, remaining: 0, reset: 50 * s},
		{at: 59 * s, cost: 1, allowed: false, remaining: 0, retry: 1 * s, reset: 1 * s},
		{at: 59 * s, cost: 4, allowed: false, remaining: 0, retry: never, reset: 1 * s},
		{at: 60 * s, cost: 0, allowed: true, remaining: 3, reset: 0}, // a new window
		{at: 60 * s, cost: 1, allowed: true, remaining: 2, reset: 60 * s},
		{at: 59 * s, cost: 2, allowed: true, remaining: 0, reset: 61 * s}, // clock went back: the later window still counts
		{at: 61 * s, cost: 1, allowed: false, remaining: 0, retry: 59 * s, reset: 59 * s},
		{at: 180 * s, cost: 3, allowed: true, remaining: 0, reset: 60 * s},
	})
}

func TestSlidingWindowCounterTimeline(t *testing.T) {
	// 10 per minute. The estimate is floor(prev*(60s-elapsed)/60s) + curr.
	run(t, Rule{Name: "swc", Algorithm: SlidingWindowCounter, Limit: 10, Period: m}, []row{
		{at: 10 * s, cost: 6, allowed: true, remaining: 4, reset: 110 * s},
		{at: 30 * s, cost: 4, allowed: true, remaining: 0, reset: 90 * s},
		// curr+1 > limit: passes only in the next window, once the weight of
		// 10 drops below 10, i.e. 1ns into it.
		{at: 40 * s, cost: 1, allowed: false, remaining: 0, retry: 20*s + 1, reset: 80 * s},
		{at: 40 * s, cost: 11, allowed: false, remaining: 0, retry: never, reset: 80 * s},
		// 15s into the next window: floor(10*45/60) = floor(7.5) = 7 used.
		{at: 75 * s, cost: 3, allowed: true, remaining: 0, reset: 105 * s},
		// 2 more need floor(10*(60s-e)/60s) <= 5, i.e. e > 24s.
		{at: 75 * s, cost: 2, allowed: false, remaining: 0, retry: 9*s + 1, reset: 105 * s},
		{at: 84*s + 1, cost: 2, allowed: true, remaining: 0, reset: 96*s - 1},
		{at: 80 * s, cost: 0, allowed: false, remaining: 0, retry: 10*s + 1, reset: 100 * s}, // clock back: nothing granted; curr is 5, so the weight must fall to 4
		{at: 300 * s, cost: 10, allowed: true, remaining: 0, reset: 120 * s},
	})
}

func TestSlidingWindowLogTimeline(t *testing.T) {
	// 3 per 10s, exact.
	run(t, Rule{Name: "swl", Algorithm: SlidingWindowLog, Limit: 3, Period: 10 * s}, []row{
		{at: 0, cost: 1, allowed: true, remaining: 2, reset: 10 * s},
		{at: 2 * s, cost: 1, allowed: true, remaining: 1, reset: 10 * s},
		{at: 4 * s, cost: 1, allowed: true, remaining: 0, reset: 10 * s},
		{at: 5 * s, cost: 1, allowed: false, remaining: 0, retry: 5 * s, reset: 9 * s},
		{at: 5 * s, cost: 4, allowed: false, remaining: 0, retry: never, reset: 9 * s},
		{at: 10 * s, cost: 1, allowed: true, remaining: 0, reset: 10 * s}, // the t0 entry left
		{at: 12 * s, cost: 2, allowed: false, remaining: 1, retry: 2 * s, reset: 8 * s},
		{at: 14 * s, cost: 2, allowed: true, remaining: 0, reset: 10 * s},
		{at: 13 * s, cost: 1, allowed: false, remaining: 0, retry: 7 * s, reset: 11 * s}, // clock back
		{at: 13 * s, cost: 0, allowed: false, remaining: 0, retry: 7 * s, reset: 11 * s},
		{at: 24 * s, cost: 3, allowed: true, remaining: 0, reset: 10 * s},
	})
}

func TestNormalize(t *testing.T) {
	r, err := Rule{Name: "a", Algorithm: TokenBucket, Limit: 100, Period: m}.Normalize()
	if err != nil || r.Burst != 100 {
		t.Fatalf("token bucket burst defaults to limit: got %+v, %v", r, err)
	}
	r, err = Rule{Name: "a", Algorithm: FixedWindow, Limit: 100, Period: m, Burst: 7}.Normalize()
	if err != nil || r.Burst != 0 || r.Capacity() != 100 {
		t.Fatalf("window algorithms ignore burst: got %+v, %v", r, err)
	}
	bad := []struct {
		r    Rule
		want string
	}{
		{Rule{Algorithm: 0, Limit: 1, Period: s}, "algorithm"},
		{Rule{Algorithm: TokenBucket, Limit: 0, Period: s}, "limit"},
		{Rule{Algorithm: TokenBucket, Limit: -5, Period: s}, "limit"},
		{Rule{Algorithm: TokenBucket, Limit: 1, Period: 0}, "period"},
		{Rule{Algorithm: TokenBucket, Limit: 1, Period: 32 * 24 * h}, "period"},
		{Rule{Algorithm: TokenBucket, Limit: 1, Period: s, Burst: -1}, "burst"},
		{Rule{Algorithm: TokenBucket, Limit: 1, Period: 24 * h, Burst: 1000}, "burst"}, // 1000 days to refill
		{Rule{Algorithm: TokenBucket, Limit: 1e9, Period: ms}, "nanosecond"},
		{Rule{Algorithm: SlidingWindowLog, Limit: 1e6, Period: s}, "sliding_window_log"},
		{Rule{Algorithm: FixedWindow, Limit: 1, Period: 1500 * time.Microsecond}, "milliseconds"},
	}
	for _, b := range bad {
		_, err := b.r.Normalize()
		if !errors.Is(err, ErrInvalidRule) || !contains(err.Error(), b.want) {
			t.Errorf("Normalize(%+v) = %v, want an ErrInvalidRule naming %q", b.r, err, b.want)
		}
	}
	if err := (Rule{Algorithm: TokenBucket, Limit: 5, Period: s}).Validate(); err == nil {
		t.Error("Validate accepted a rule whose defaults are not filled")
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, name := range Algorithms() {
		a, err := ParseAlgorithm(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name != "gcra" && a.String() != name {
			t.Errorf("%s round-trips as %s", name, a)
		}
	}
	if a, _ := ParseAlgorithm("gcra"); a != TokenBucket {
		t.Errorf("gcra = %v, want token_bucket", a)
	}
	if _, err := ParseAlgorithm("token-bucket"); !errors.Is(err, ErrUnknownAlgorithm) {
		t.Errorf("unknown name: %v", err)
	}
}

func TestStateOfAnotherAlgorithmIsFresh(t *testing.T) {
	r, _ := Rule{Name: "x", Algorithm: TokenBucket, Limit: 2, Period: s}.Normalize()
	stale := State{Alg: FixedWindow, T: t0 + int64(h), N: 99}
	_, d := r.Step(stale, t0, 2)
	if !d.Allowed || d.Remaining != 0 {
		t.Fatalf("state written by another algorithm must be ignored: %+v", d)
	}
	if r.ExpiresAt(stale) != 0 {
		t.Fatal("a foreign state must be expired")
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestStateEqual(t *testing.T) {
	base := State{Alg: SlidingWindowLog, T: 1, N: 2, P: 3, Log: []Entry{{At: 4, Cost: 5}}}
	if !base.Equal(State{Alg: SlidingWindowLog, T: 1, N: 2, P: 3, Log: []Entry{{At: 4, Cost: 5}}}) {
		t.Fatal("equal states reported different")
	}
	for _, o := range []State{
		{Alg: FixedWindow, T: 1, N: 2, P: 3, Log: []Entry{{At: 4, Cost: 5}}},
		{Alg: SlidingWindowLog, T: 9, N: 2, P: 3, Log: []Entry{{At: 4, Cost: 5}}},
		{Alg: SlidingWindowLog, T: 1, N: 9, P: 3, Log: []Entry{{At: 4, Cost: 5}}},
		{Alg: SlidingWindowLog, T: 1, N: 2, P: 9, Log: []Entry{{At: 4, Cost: 5}}},
		{Alg: SlidingWindowLog, T: 1, N: 2, P: 3, Log: []Entry{{At: 4, Cost: 9}}},
		{Alg: SlidingWindowLog, T: 1, N: 2, P: 3},
	} {
		if base.Equal(o) {
			t.Errorf("%+v reported equal to %+v", o, base)
		}
	}
}
