package limit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// t0 is aligned to the hour (and so to every window the tables use).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

const never = RetryNever

// timelines are the exact decisions of single requests against one rule,
// in testdata/timelines.json, which the JavaScript port's tests read too
// (clients/js/test/go-tables.test.js): one table for both.
type timelines struct {
	About     string
	Timelines []struct {
		Name  string
		About string
		Rule  struct {
			Name      string
			Algorithm string
			Limit     int64
			Period    span
			Burst     int64
		}
		Rows []row
	}
}

// row is one request of a timeline: at t0+At, Cost units, and the exact
// decision expected.
type row struct {
	At        span
	Cost      int64
	Allowed   bool
	Remaining int64
	Retry     span
	Reset     span
	Delay     span
	Note      string
}

// span is a duration written as Go duration terms joined by + or -
// ("2h - 1ns"), or "never" (RetryNever).
type span time.Duration

func (d *span) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == "never" {
		*d = span(RetryNever)
		return nil
	}
	var total time.Duration
	sign := time.Duration(1)
	for _, f := range strings.Fields(s) {
		switch f {
		case "+":
			sign = 1
		case "-":
			sign = -1
		default:
			v, err := time.ParseDuration(f)
			if err != nil {
				return fmt.Errorf("span %q: %w", s, err)
			}
			total += sign * v
		}
	}
	*d = span(total)
	return nil
}

func TestTimelines(t *testing.T) {
	data, err := os.ReadFile("testdata/timelines.json")
	if err != nil {
		t.Fatal(err)
	}
	var tl timelines
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // a misspelt field fails, not defaults to 0
	if err := dec.Decode(&tl); err != nil {
		t.Fatal(err)
	}
	if len(tl.Timelines) != 6 {
		t.Fatalf("%d timelines, want 6", len(tl.Timelines))
	}
	for _, c := range tl.Timelines {
		t.Run(c.Name, func(t *testing.T) {
			alg, err := ParseAlgorithm(c.Rule.Algorithm)
			if err != nil {
				t.Fatal(err)
			}
			run(t, Rule{Name: c.Rule.Name, Algorithm: alg, Limit: c.Rule.Limit, Period: time.Duration(c.Rule.Period), Burst: c.Rule.Burst}, c.Rows)
		})
	}
}

func run(t *testing.T, r Rule, rows []row) {
	t.Helper()
	r, err := r.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	var s State
	for i, w := range rows {
		next, d := r.Step(s, t0+int64(w.At), w.Cost)
		want := Decision{Allowed: w.Allowed, Limit: r.Limit, Remaining: w.Remaining, RetryAfter: time.Duration(w.Retry),
			ResetAfter: time.Duration(w.Reset), Delay: time.Duration(w.Delay)}
		if d != want {
			t.Fatalf("row %d (at %v cost %d):\n got %+v\nwant %+v", i, time.Duration(w.At), w.Cost, d, want)
		}
		if !d.Allowed || w.Cost == 0 {
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
		{Rule{Algorithm: FixedWindow, Limit: 10, Period: s, Lease: true}, "lease: only a token_bucket"},
		{Rule{Algorithm: LeakyBucket, Limit: 10, Period: s, Lease: true}, "lease: only a token_bucket"},
		{Rule{Algorithm: TokenBucket, Limit: 10, Period: s, Burst: 1, Lease: true}, "lease: a leased token_bucket needs a burst of at least 2"},
	}
	for _, b := range bad {
		_, err := b.r.Normalize()
		if !errors.Is(err, ErrInvalidRule) || !contains(err.Error(), b.want) {
			t.Errorf("Normalize(%+v) = %v, want an ErrInvalidRule naming %q", b.r, err, b.want)
		}
	}
	if r, err := (Rule{Algorithm: TokenBucket, Limit: 2, Period: s, Lease: true}).Normalize(); err != nil || !r.Lease || r.Burst != 2 {
		t.Errorf("a leased token bucket of burst 2: %+v, %v", r, err)
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
