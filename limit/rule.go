// Package limit holds the pure rate limiting algorithms.
//
// The model: a Rule describes one limit ("100 per minute, bursts of 20"). Its
// State is a small value (for the bucket algorithms a single timestamp). Step
// takes a State, the current instant and a cost, and returns the next State and
// a Decision. Step does no I/O, takes no locks, reads no clock and allocates
// nothing except when a sliding-window log grows. Time is integer nanoseconds
// since the Unix epoch, passed in by the caller; cost is a whole number of units.
//
// Stores (in-memory, Redis) are adapters around this package: they load the
// State of a key, call Step (or, for Redis, a Lua transcription of it that the
// conformance suite holds to the same numbers) and save the result atomically.
//
// Every algorithm shares these contracts:
//
//   - Only allowed requests consume; a denied request leaves State unchanged.
//   - Cost 0 is a peek: nothing is consumed, and the Decision says whether a
//     request of cost 1 would pass now (so a peek at an exhausted limit is
//     denied, with the RetryAfter of a cost-1 request).
//   - A cost larger than the rule's capacity can never pass: the Decision is
//     denied with RetryAfter == RetryNever.
//   - A clock that goes backwards never grants extra capacity: state written
//     at a later instant is kept, and counted, until time catches up.
//
// # Changing a rule
//
// This is the one statement of what a changed rule (a reload, an override)
// does to a subject that already consumed; the docs and the JavaScript port
// link here. State is kept per subject and rule Name, and the rule travels
// with every Step, so a change applies on each subject's next check, with
// no migration:
//
//   - TokenBucket, LeakyBucket: a changed Limit, Period or Burst is in force
//     at once, and the units already consumed carry over. The state records
//     the emission interval it was written under; when the rule's differs,
//     Step rescales the outstanding debt (TAT minus the later of now and
//     the state's last write, P) from the old interval to the new one, in
//     float64 in the order the Redis script repeats bit for bit, capped at
//     MaxDebt. A subject that used 2 of 2 per hour and is raised to 4 has 2
//     left at once; one that used 5 of 10 per hour and is lowered to 5 per
//     hour is empty and refills one unit per 12 minutes (the time before
//     its next check refilled at the old rate); one that used 10 of 10 per
//     second and is cut to 1 per second waits 10s. Because the debt is
//     measured from P, a clock that stepped back cannot shrink it. The
//     rescaled state is saved whatever the decision (a denial, a peek), so
//     the subject refills at the new rate from then on. A raised Burst is
//     capacity at once: the debt, not a token count, is what is kept.
//   - FixedWindow, SlidingWindowCounter: the counts of the current (and
//     previous) window carry over and are compared with the new Limit. A
//     changed Period re-aligns the windows to multiples of the new one: the
//     count carries over when the new current window holds the old one's
//     start, and starts from zero otherwise.
//   - SlidingWindowLog: the log of admitted requests carries over and is
//     compared with the new Limit over the new Period.
//   - A changed Algorithm starts fresh state for that rule (a state records
//     the algorithm that wrote it); a renamed or added rule is a new name
//     with fresh state, and a removed name's state is no longer read and
//     expires.
package limit

import (
	"errors"
	"fmt"
	"time"
)

// Algorithm names a rate limiting algorithm.
type Algorithm uint8

// The algorithms. The zero value is invalid so that a forgotten field fails
// validation instead of silently picking a default.
const (
	// TokenBucket holds up to Burst tokens, refilled at Limit per Period. A
	// request of cost c passes iff c tokens are available. Implemented as GCRA:
	// the whole state is one timestamp, the theoretical arrival time (TAT).
	TokenBucket Algorithm = iota + 1
	// LeakyBucket is the shaping form of the same meter: requests are admitted
	// with a Delay so that they leave at a steady Limit/Period rate, at most
	// Burst units may be queued or in flight, and a request that would overflow
	// the queue is denied. Callers that wait Delay before acting smooth bursts
	// into an even flow.
	LeakyBucket
	// SlidingWindowLog is exact: at most Limit units are admitted in any
	// interval of length Period. Memory is O(Limit) per key.
	SlidingWindowLog
	// SlidingWindowCounter keeps the counts of the current and the previous
	// fixed window and estimates the sliding count by weighting the previous
	// window by the share of it still inside the sliding interval.
	SlidingWindowCounter
	// FixedWindow counts units in windows aligned to multiples of Period since
	// the Unix epoch (so a 1m window starts on the minute, as in Envoy).
	FixedWindow
)

var algorithmNames = [...]string{
	TokenBucket:          "token_bucket",
	LeakyBucket:          "leaky_bucket",
	SlidingWindowLog:     "sliding_window_log",
	SlidingWindowCounter: "sliding_window_counter",
	FixedWindow:          "fixed_window",
}

// String returns the configuration name of a.
func (a Algorithm) String() string {
	if a == 0 || int(a) >= len(algorithmNames) {
		return fmt.Sprintf("algorithm(%d)", uint8(a))
	}
	return algorithmNames[a]
}

// Bucket reports whether a is a bucket algorithm (token_bucket/gcra,
// leaky_bucket): the ones a burst applies to.
func (a Algorithm) Bucket() bool { return a == TokenBucket || a == LeakyBucket }

// BurstOnWindow is the message for a burst given to a window algorithm a.
func BurstOnWindow(a Algorithm) string {
	return fmt.Sprintf("applies only to token_bucket, gcra and leaky_bucket, not %v", a)
}

// Algorithms lists the configuration names ParseAlgorithm accepts.
func Algorithms() []string {
	return []string{"token_bucket", "gcra", "leaky_bucket", "sliding_window_log", "sliding_window_counter", "fixed_window"}
}

// ParseAlgorithm maps a configuration name to an Algorithm. "gcra" is an alias
// of "token_bucket".
func ParseAlgorithm(s string) (Algorithm, error) {
	if s == "gcra" {
		return TokenBucket, nil
	}
	for a, name := range algorithmNames {
		if a != 0 && name == s {
			return Algorithm(a), nil
		}
	}
	return 0, fmt.Errorf("%w %q (want one of %v)", ErrUnknownAlgorithm, s, Algorithms())
}

// Bounds on rule parameters. They keep every intermediate value of Step inside
// int64 and every time difference the Redis scripts handle below 2^53 ns
// (about 104 days), where Lua's doubles are still exact.
const (
	// MaxRules is the number of limits one limit set may hold.
	MaxRules = 8
	// MaxPeriod is the longest Period, and the longest time a bucket may take
	// to refill from empty to full (Burst * Period / Limit).
	MaxPeriod = 31 * 24 * time.Hour
	// MaxWindowPeriod is the longest Period of a FixedWindow, which counts
	// whole windows and keeps no time difference the Redis scripts would
	// have to hold in a double: a year (Envoy's unit, 365 days) fits.
	MaxWindowPeriod = 366 * 24 * time.Hour
	// MinPeriod is the shortest Period.
	MinPeriod = time.Millisecond
	// MaxLimit bounds Limit and Burst.
	MaxLimit = 1_000_000_000
	// MaxLogLimit bounds Limit for SlidingWindowLog, whose memory is O(Limit).
	MaxLogLimit = 100_000
	// MaxDebt bounds how far ahead of now a bucket's TAT may be pushed when
	// a lowered rate rescales what a subject already consumed: at most this
	// long a wait, whatever the change. It keeps the rescale inside int64 and
	// inside the doubles of the Redis scripts.
	MaxDebt = 2 * MaxPeriod
)

// Sentinel errors. Validation errors wrap ErrInvalidRule.
var (
	ErrInvalidRule      = errors.New("invalid rule")
	ErrUnknownAlgorithm = errors.New("unknown algorithm")
)

// RuleError is a validation error of one field of a Rule ("limit",
// "period", "burst", "algorithm"): Normalize and Validate return one, so
// that callers name the field by its place, not by parsing the message. It
// wraps ErrInvalidRule.
type RuleError struct {
	Field string
	Msg   string
	// Cause, when set, is a sentinel the error also wraps
	// (ErrUnknownAlgorithm).
	Cause error
}

func (e *RuleError) Error() string { return ErrInvalidRule.Error() + ": " + e.Field + ": " + e.Msg }

func (e *RuleError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrInvalidRule, e.Cause}
	}
	return []error{ErrInvalidRule}
}

// OutOfRange is the message for a limit or a burst outside [1, MaxLimit]
// (v as written: an integer, or the digits of one too large for int64).
func OutOfRange(v any) string { return fmt.Sprintf("%v is outside [1, %d]", v, MaxLimit) }

// PeriodOutOfRange is the message for a period outside [MinPeriod,
// MaxPeriod].
func PeriodOutOfRange(d time.Duration) string {
	return fmt.Sprintf("%v is outside [%v, %v]", d, MinPeriod, MaxPeriod)
}

// maxPeriod is the longest Period of algorithm a.
func maxPeriod(a Algorithm) time.Duration {
	if a == FixedWindow {
		return MaxWindowPeriod
	}
	return MaxPeriod
}

func ruleErr(field, format string, args ...any) error {
	return &RuleError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Rule is one limit: Limit units per Period, with the algorithm that enforces
// it. A Rule is a value; the zero Rule is invalid. Call Validate (or Normalize)
// before Step: Step assumes a valid rule and does not check it again.
type Rule struct {
	// Name identifies the rule within its limit set ("per-minute"). State is
	// kept per name, so renaming a rule starts fresh state.
	Name      string
	Algorithm Algorithm
	// Limit is the number of units per Period.
	Limit int64
	// Period is the window (or refill period) of Limit.
	Period time.Duration
	// Burst is the bucket capacity (TokenBucket) or the queue length
	// (LeakyBucket). Zero means Limit. Window algorithms ignore it.
	Burst int64
	// Shadow makes the rule a trial: it is evaluated, and charged when it
	// admits, exactly as if enforced, but its denial does not deny the
	// limit set (Apply, ApplyParts): the request passes and the decision,
	// marked Shadow, says what enforcing the rule would have done.
	Shadow bool
	// Lease marks a limit whose instances decide from slices of its bucket
	// taken out of the shared store (package lease) instead of asking the
	// store on every check. Step ignores it; Normalize refuses it on a rule
	// that cannot be leased (Leasable).
	Lease bool

	iv int64 // emission interval, set by Normalize
}

// Normalize validates r and fills defaults (Burst = Limit for the bucket
// algorithms, 0 for the window algorithms). Its error is a *RuleError
// naming the offending field (it wraps ErrInvalidRule).
func (r Rule) Normalize() (Rule, error) {
	if r.Algorithm == 0 || int(r.Algorithm) >= len(algorithmNames) {
		return r, &RuleError{Field: "algorithm", Msg: fmt.Sprintf("%v: %v", ErrUnknownAlgorithm, r.Algorithm), Cause: ErrUnknownAlgorithm}
	}
	if r.Limit < 1 || r.Limit > MaxLimit {
		return r, ruleErr("limit", "%s", OutOfRange(r.Limit))
	}
	if r.Period < MinPeriod || r.Period > maxPeriod(r.Algorithm) {
		if r.Algorithm == FixedWindow {
			return r, ruleErr("period", "%v is outside [%v, %v] (fixed_window)", r.Period, MinPeriod, MaxWindowPeriod)
		}
		return r, ruleErr("period", "%s", PeriodOutOfRange(r.Period))
	}
	if r.Period%time.Millisecond != 0 {
		// Window starts are computed from Unix milliseconds by the Redis
		// scripts, whose doubles cannot hold Unix nanoseconds exactly.
		return r, ruleErr("period", "%v is not a whole number of milliseconds", r.Period)
	}
	r.iv = 0
	switch r.Algorithm {
	case TokenBucket, LeakyBucket:
		r.iv = int64(r.Period) / r.Limit
		if r.Burst == 0 {
			r.Burst = r.Limit
		}
		if r.Burst < 1 || r.Burst > MaxLimit {
			return r, ruleErr("burst", "%s", OutOfRange(r.Burst))
		}
		if int64(r.Period)/r.Limit < 1 {
			return r, ruleErr("limit", "%d per %v is more than one per nanosecond", r.Limit, r.Period)
		}
		if r.Burst > int64(MaxPeriod)/r.interval() {
			return r, ruleErr("burst", "%d takes longer than %v to refill at %d per %v", r.Burst, MaxPeriod, r.Limit, r.Period)
		}
	case SlidingWindowLog:
		if r.Limit > MaxLogLimit {
			return r, ruleErr("limit", "sliding_window_log keeps one entry per request; %d is over its bound %d", r.Limit, MaxLogLimit)
		}
		r.Burst = 0
	default:
		r.Burst = 0
	}
	if r.Lease {
		if err := r.Leasable(); err != nil {
			return r, ruleErr("lease", "%v", err)
		}
	}
	return r, nil
}

// Validate reports whether r is usable as it is (defaults already filled).
func (r Rule) Validate() error {
	n, err := r.Normalize()
	if err != nil {
		return err
	}
	if n.Burst != r.Burst {
		return ruleErr("burst", "%d should be %d (call Normalize)", r.Burst, n.Burst)
	}
	if r.iv != 0 && r.iv != n.iv {
		return ruleErr("limit", "limit or period changed after Normalize (call Normalize again)")
	}
	return nil
}

// Capacity is the largest cost a single request may ever have: Burst for the
// bucket algorithms, Limit for the window algorithms.
func (r Rule) Capacity() int64 {
	if r.Algorithm.Bucket() {
		return r.Burst
	}
	return r.Limit
}

// interval is the GCRA emission interval: the time one unit takes to refill,
// Period/Limit. Integer division rounds it down by less than a nanosecond per
// unit, so a bucket refills at most Limit units early by less than Limit
// nanoseconds per Period: far below any measurable effect. Normalize caches it.
func (r *Rule) interval() int64 {
	if r.iv != 0 {
		return r.iv
	}
	return int64(r.Period) / r.Limit
}

// Interval returns the emission interval of a bucket rule (Period/Limit,
// rounded down to the nanosecond), the quantity the Redis scripts take as a
// parameter so that they round exactly as Step does.
func (r Rule) Interval() time.Duration { return time.Duration(r.interval()) }
