package limit

import "time"

// Verdict is the outcome of a request against a limit set: every rule that
// applies to one subject ("100 per minute AND 1000 per hour"). It is a value
// with room for MaxRules decisions so that a check allocates nothing.
type Verdict struct {
	// Allowed reports whether every rule admitted the request.
	Allowed bool
	// RetryAfter is 0 when allowed; when denied, the longest RetryAfter of the
	// denying rules, or RetryNever if any of them can never pass. Waiting it
	// out is enough: a rule's capacity only grows while nothing is consumed.
	RetryAfter time.Duration
	// Delay is the longest Delay of the rules when allowed (shaping).
	Delay time.Duration
	// N is the number of decisions, one per rule, in the rules' order.
	N int
	// D holds the decisions; only D[:N] is meaningful. For a denied set,
	// the rules that would have admitted the request report the decision of a
	// peek: their Remaining is unconsumed.
	D [MaxRules]Decision
}

// Decisions returns the per-rule decisions, in the rules' order.
func (v *Verdict) Decisions() []Decision { return v.D[:v.N] }

// Binding returns the index of the decision that best explains the verdict:
// when denied, the denying rule with the longest wait; when allowed, the rule
// with the fewest remaining units. It is the rule transports report in
// single-limit headers such as X-RateLimit-Remaining. It returns 0 when N is 0.
func (v *Verdict) Binding() int {
	best := 0
	for i := 1; i < v.N; i++ {
		d, b := &v.D[i], &v.D[best]
		if v.Allowed {
			if d.Remaining < b.Remaining {
				best = i
			}
			continue
		}
		switch {
		case d.Allowed:
		case b.Allowed:
			best = i
		case b.RetryAfter == RetryNever:
		case d.RetryAfter == RetryNever || d.RetryAfter > b.RetryAfter:
			best = i
		}
	}
	return best
}

// Apply evaluates a request of cost units at instant now against every rule
// of a limit set, all-or-nothing: the request is allowed only if every rule
// admits it, and only then are the states advanced. states[i] is the state of
// rules[i]; Apply overwrites states with the next states when the request is
// allowed (and cost > 0), and leaves them untouched otherwise.
//
// Preconditions: len(rules) == len(states) <= MaxRules, every rule valid,
// cost >= 0.
func Apply(rules []Rule, states []State, now, cost int64) Verdict {
	var v Verdict
	if len(rules) == 1 { // the common case, without the copy of a whole set
		next, d := rules[0].Step(states[0], now, cost)
		v.N, v.D[0], v.Allowed = 1, d, d.Allowed
		if d.Allowed {
			v.Delay = d.Delay
			states[0] = next
		} else {
			v.RetryAfter = d.RetryAfter
		}
		return v
	}
	var next [MaxRules]State
	v.N = len(rules)
	v.Allowed = true
	for i, r := range rules {
		next[i], v.D[i] = r.Step(states[i], now, cost)
		if !v.D[i].Allowed {
			v.Allowed = false
		}
	}
	if !v.Allowed {
		for i, r := range rules {
			d := &v.D[i]
			switch {
			case d.Allowed && cost > 0:
				_, *d = r.Step(states[i], now, 0)
			case d.Allowed:
			case d.RetryAfter == RetryNever || v.RetryAfter == RetryNever:
				v.RetryAfter = RetryNever
			default:
				v.RetryAfter = max(v.RetryAfter, d.RetryAfter)
			}
		}
		return v
	}
	for i := range rules {
		v.Delay = max(v.Delay, v.D[i].Delay)
	}
	if cost > 0 {
		copy(states, next[:len(rules)])
	}
	return v
}

// ExpiresAt returns the instant from which every state of the set is
// equivalent to a fresh one, so the whole key may be dropped.
func ExpiresAt(rules []Rule, states []State) int64 {
	var at int64
	for i, r := range rules {
		at = max(at, r.ExpiresAt(states[i]))
	}
	return at
}
