package limit

import "time"

// RetryNever is the RetryAfter of a request that can never pass because its
// cost exceeds the rule's capacity.
const RetryNever time.Duration = -1

// State is the stored state of one rule for one key. The zero State is a fresh
// key. Fields are used per algorithm:
//
//	TokenBucket, LeakyBucket: T = theoretical arrival time (TAT), N = emission interval it was
//	                          written with, P = the latest instant it was written at
//	FixedWindow:              T = window start, N = units counted in it
//	SlidingWindowCounter:     T = current window start, N = its count, P = previous window's count
//	SlidingWindowLog:         Log = admitted requests, oldest first; N = their total cost
//
// Alg records which algorithm wrote the state; a State written by another
// algorithm (after a configuration change) is treated as fresh.
type State struct {
	Alg Algorithm
	T   int64
	N   int64
	P   int64
	Log []Entry
}

// Equal reports whether s and o are the same state, log entries included.
func (s State) Equal(o State) bool {
	if s.Alg != o.Alg || s.T != o.T || s.N != o.N || s.P != o.P || len(s.Log) != len(o.Log) {
		return false
	}
	for i := range s.Log {
		if s.Log[i] != o.Log[i] {
			return false
		}
	}
	return true
}

// Entry is one admitted request of a sliding-window log: its instant and cost.
type Entry struct {
	At   int64
	Cost int64
}

// Decision is the outcome of one rule for one request.
type Decision struct {
	// Allowed reports whether the rule admits the request.
	Allowed bool
	// Limit is the rule's Limit (units per Period).
	Limit int64
	// Remaining is the number of whole units that could still pass now, after
	// this decision.
	Remaining int64
	// ResetAfter is the time until the rule is back to its full capacity, if
	// nothing more is consumed.
	ResetAfter time.Duration
	// RetryAfter is 0 when allowed; when denied, the time until the same
	// request would be allowed (if nothing else consumes), or RetryNever.
	RetryAfter time.Duration
	// Delay is how long an allowed request should wait before it proceeds
	// (LeakyBucket shaping); 0 for every other algorithm.
	Delay time.Duration
	// Shadow reports a shadow rule (Rule.Shadow): Allowed is what enforcing
	// it would have decided, and a denial does not deny the set.
	Shadow bool
}

// denies reports whether d denies its set: a denial of a rule not in
// shadow mode.
func (d *Decision) denies() bool { return !d.Allowed && !d.Shadow }

// Step evaluates a request of cost units at instant now (Unix nanoseconds)
// against rule r in state s, and returns the next state and the decision.
//
// Preconditions: r is valid (see Rule.Normalize) and cost >= 0. When the
// request is denied, or cost is 0, nothing is consumed and the returned state
// is s itself, except that a bucket state written under another rate comes
// back rescaled to r's rate (see gcra): a change of representation that
// callers should save, so that the subject refills at the new rate from now
// on. Step never
// modifies the elements of s.Log; an allowed request's state may share and
// append to its backing array, so s stays valid as the "unchanged" state and a
// caller needs no copy to implement all-or-nothing. The flip side: a caller
// that steps one state twice and keeps both results (a model checker
// exploring branches) must copy s.Log first.
func (r *Rule) Step(s State, now, cost int64) (next State, d Decision) {
	next = s
	if !r.stepInPlace(&next, now, cost, &d) {
		next = s
	}
	return next, d
}

// stepInPlace is Step on *s: it writes *s only when the request consumes or
// a bucket is rescaled (and reports that as changed), except that a state
// written by another algorithm is first replaced by a fresh one, which is
// equivalent to it.
func (r *Rule) stepInPlace(s *State, now, cost int64, d *Decision) bool {
	if s.Alg != r.Algorithm {
		*s = State{Alg: r.Algorithm}
	}
	rescaled := false
	switch r.Algorithm {
	case TokenBucket, LeakyBucket:
		rescaled = r.gcra(s, now, cost, d)
	case FixedWindow:
		r.fixedWindow(s, now, cost, d)
	case SlidingWindowCounter:
		r.slidingCounter(s, now, cost, d)
	case SlidingWindowLog:
		r.slidingLog(s, now, cost, d)
	default:
		*d = Decision{Limit: r.Limit, RetryAfter: RetryNever}
		return false
	}
	d.Shadow = r.Shadow
	return (d.Allowed && cost > 0) || rescaled
}

// The algorithm functions below evaluate a request against *s (already reset
// to fresh if it belonged to another algorithm), write the decision to *d,
// and advance *s only when the request is allowed and cost > 0 (or, for the
// buckets, rescaled). Cost 0 is evaluated as a peek of cost 1.

// gcra implements TokenBucket and LeakyBucket. With emission interval I
// (Period/Limit) and tolerance tau = Burst*I, a request of cost c at now is
// admitted iff max(TAT, now) + c*I - now <= tau; admitting it moves TAT there.
// The bucket holds (tau - (TAT-now)) / I whole tokens. LeakyBucket admits the
// same requests and reports as Delay the time its queue takes to drain to it.
//
// When the rule's interval differs from the state's (N), the debt is
// rescaled first, as "Changing a rule" in the package doc states; rescaled
// reports it, so that the state is written back whatever the decision.
func (r *Rule) gcra(s *State, now, cost int64, d *Decision) bool {
	iv := r.interval()
	tau := r.Burst * iv
	tat := s.T
	rescaled := false
	if base := max(now, s.P); s.N != 0 && s.N != iv && tat > base {
		debt := float64(tat-base) * float64(iv) / float64(s.N)
		tat = base + int64(min(debt, float64(MaxDebt)))
		s.T, s.N, s.P = tat, iv, base
		rescaled = true
	}
	tat = max(tat, now)
	*d = Decision{Limit: r.Limit}
	c := max(cost, 1)
	newTAT := tat + c*iv
	switch {
	case c > r.Burst:
		d.RetryAfter = RetryNever
	case newTAT-now > tau:
		d.RetryAfter = time.Duration(newTAT - tau - now)
	default:
		d.Allowed = true
		if r.Algorithm == LeakyBucket {
			d.Delay = time.Duration(tat - now)
		}
		if cost > 0 {
			s.T, s.N, s.P = newTAT, iv, max(s.P, now)
			tat = newTAT
		}
	}
	d.Remaining = max(0, (tau-(tat-now))/iv)
	d.ResetAfter = time.Duration(tat - now)
	return rescaled
}

// fixedWindow counts units in the window [k*Period, (k+1)*Period) holding now.
// State from a later window (a clock that went back) is kept and counted.
func (r *Rule) fixedWindow(s *State, now, cost int64, d *Decision) {
	p := int64(r.Period)
	ws := floorDiv(now, p) * p
	count := int64(0)
	if s.T >= ws {
		ws, count = s.T, s.N
	}
	end := ws + p
	*d = Decision{Limit: r.Limit}
	c := max(cost, 1)
	switch {
	case c > r.Limit:
		d.RetryAfter = RetryNever
	case count+c > r.Limit:
		d.RetryAfter = time.Duration(end - now)
	default:
		d.Allowed = true
		if cost > 0 {
			count += cost
			s.T, s.N = ws, count
		}
	}
	d.Remaining = max(0, r.Limit-count)
	if count > 0 {
		d.ResetAfter = time.Duration(end - now)
	}
}

// slidingCounter estimates the units in the sliding interval (now-Period, now]
// as floor(prev * (Period-elapsed) / Period) + curr, where elapsed is the time
// since the current fixed window started. The product is taken in float64 in
// this exact order so that the Redis script (Lua numbers are doubles) computes
// bit-identical estimates.
func (r *Rule) slidingCounter(s *State, now, cost int64, d *Decision) {
	p := int64(r.Period)
	ws := floorDiv(now, p) * p
	var curr, prev int64
	switch {
	case s.T >= ws: // the same window, or a later one when the clock went back
		ws, curr, prev = s.T, s.N, s.P
	case s.T == ws-p:
		prev = s.N
	}
	elapsed := max(0, now-ws)
	used := weigh(prev, p-elapsed, p) + curr
	*d = Decision{Limit: r.Limit}
	c := max(cost, 1)
	switch {
	case c > r.Limit:
		d.RetryAfter = RetryNever
	case used+c > r.Limit:
		d.RetryAfter = r.counterRetry(ws, elapsed, now, curr, prev, c)
	default:
		d.Allowed = true
		if cost > 0 {
			curr += cost
			used += cost
			s.T, s.N, s.P = ws, curr, prev
		}
	}
	d.Remaining = max(0, r.Limit-used)
	d.ResetAfter = counterReset(ws, p, now, curr, prev)
}

// weigh is floor(n * rem / p) in float64: the previous window's count still
// inside the sliding interval.
func weigh(n, rem, p int64) int64 {
	if n == 0 || rem <= 0 {
		return 0
	}
	return int64(float64(n) * float64(rem) / float64(p))
}

func counterReset(ws, p, now, curr, prev int64) time.Duration {
	switch {
	case curr > 0:
		return time.Duration(ws + 2*p - now)
	case prev > 0:
		return time.Duration(ws + p - now)
	}
	return 0
}

// counterRetry finds the first instant at which a request of cost would pass
// if nothing else is consumed. The estimate only falls as time passes, so a
// binary search over the elapsed time within a window finds it exactly.
func (r *Rule) counterRetry(ws, elapsed, now, curr, prev, cost int64) time.Duration {
	p := int64(r.Period)
	if curr+cost <= r.Limit { // passes later in this window
		e := firstPassing(elapsed, p, func(e int64) bool { return weigh(prev, p-e, p)+curr+cost <= r.Limit })
		return time.Duration(ws + e - now)
	}
	// Passes in the next window, where prev becomes curr.
	e := firstPassing(-1, p, func(e int64) bool { return weigh(curr, p-e, p)+cost <= r.Limit })
	return time.Duration(ws + p + e - now)
}

// firstPassing returns the least e in (lo, hi] with ok(e), given that ok is
// monotone and ok(hi) holds.
func firstPassing(lo, hi int64, ok func(int64) bool) int64 {
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if ok(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// slidingLog keeps one entry per admitted request and counts those inside
// (now-Period, now]. An entry expires at At+Period. Entries stamped later than
// now (a clock that went back) stay counted until they expire; a new entry is
// never stamped before the newest one, so the log stays sorted.
func (r *Rule) slidingLog(s *State, now, cost int64, d *Decision) {
	p := int64(r.Period)
	log, sum := s.Log, s.N
	for len(log) > 0 && log[0].At <= now-p {
		sum -= log[0].Cost
		log = log[1:]
	}
	*d = Decision{Limit: r.Limit}
	c := max(cost, 1)
	switch {
	case c > r.Limit:
		d.RetryAfter = RetryNever
	case sum+c > r.Limit:
		need := sum + c - r.Limit
		for _, e := range log {
			if need -= e.Cost; need <= 0 {
				d.RetryAfter = time.Duration(e.At + p - now)
				break
			}
		}
	default:
		d.Allowed = true
		if cost > 0 {
			at := now
			if len(log) > 0 {
				at = max(at, log[len(log)-1].At)
			}
			log = append(log, Entry{At: at, Cost: cost})
			sum += cost
			s.Log, s.N = log, sum
		}
	}
	d.Remaining = max(0, r.Limit-sum)
	if len(log) > 0 {
		d.ResetAfter = time.Duration(log[len(log)-1].At + p - now)
	}
}

// ExpiresAt returns the instant from which s is equivalent to a fresh state
// for r, so a store may drop it (and a Redis key may expire). It is at most
// 2*Period after the state's last write for the window algorithms, and at most
// the bucket's refill time (MaxPeriod), or MaxDebt after a rate cut, for the
// buckets.
func (r Rule) ExpiresAt(s State) int64 {
	if s.Alg != r.Algorithm {
		return 0
	}
	p := int64(r.Period)
	switch r.Algorithm {
	case TokenBucket, LeakyBucket:
		return s.T
	case FixedWindow:
		return s.T + p
	case SlidingWindowCounter:
		if s.N > 0 {
			return s.T + 2*p
		}
		return s.T + p
	case SlidingWindowLog:
		if len(s.Log) == 0 {
			return 0
		}
		return s.Log[len(s.Log)-1].At + p
	}
	return 0
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
