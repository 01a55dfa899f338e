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
	// Shadow reports that a rule in shadow mode (Rule.Shadow) would have
	// denied the request: it is allowed all the same (unless an enforced
	// rule denies it), and the shadow rule's Decision says what enforcing
	// it would have done.
	Shadow bool
	// At is the instant the verdict was decided at, in the timeline of
	// the now it was decided with (for the stores, Unix nanoseconds: the
	// memory store's clock, Redis's TIME; a deny cache's answer, the
	// instant it answered for); 0 when unknown.
	At int64
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
		case !d.denies():
		case !b.denies():
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
// admits it, and only then is anything consumed. states[i] is the state of
// rules[i]; Apply overwrites states with the next states and reports changed
// when they differ: when the request is allowed (and cost > 0), and when a
// bucket state written under another rate was rescaled to its rule's rate
// (see Rule.Step), which a store must save even for a denied request. For a
// denied set, the rules that would have admitted the request report a peek.
//
// Preconditions: len(rules) == len(states) <= MaxRules, every rule valid,
// cost >= 0.
func Apply(rules []Rule, states []State, now, cost int64) (v Verdict, changed bool) {
	changed = ApplyTo(&v, rules, states, now, cost)
	return v, changed
}

// ApplyTo is Apply writing the verdict into *v (overwritten whole): the
// same decision, without a second Verdict in the caller's frame. A check's
// path is deep, and a goroutine whose stack outgrows its start copies it
// (a gRPC call's fresh goroutine, for one).
func ApplyTo(v *Verdict, rules []Rule, states []State, now, cost int64) (changed bool) {
	*v = Verdict{}
	if len(rules) == 1 { // the common case: one rule steps its state in place
		v.N, v.At = 1, now
		d := &v.D[0]
		if states[0].Alg == rules[0].Algorithm {
			changed = rules[0].stepInPlace(&states[0], now, cost, d)
		} else { // fresh, or another algorithm's: untouched unless changed
			next := State{Alg: rules[0].Algorithm}
			if changed = rules[0].stepInPlace(&next, now, cost, d); changed {
				states[0] = next
			}
		}
		v.Allowed, v.RetryAfter, v.Delay = d.Allowed, d.RetryAfter, d.Delay
		if d.Shadow && !d.Allowed {
			v.Allowed, v.RetryAfter, v.Shadow = true, 0, true
		}
		return changed
	}
	var next [MaxRules]State
	var ch [MaxRules]bool
	ds := v.D[:len(rules)]
	allowed := true
	for i := range rules {
		next[i] = states[i]
		ch[i] = rules[i].stepInPlace(&next[i], now, cost, &ds[i])
		allowed = allowed && !ds[i].denies()
	}
	if !allowed && cost > 0 {
		// Nothing may be consumed: the admitting rules report a peek, whose
		// state differs from the old one only if it was rescaled.
		for i := range rules {
			if ds[i].Allowed {
				next[i] = states[i]
				ch[i] = rules[i].stepInPlace(&next[i], now, 0, &ds[i])
			}
		}
	}
	for i := range rules {
		if ch[i] {
			states[i] = next[i]
			changed = true
		}
	}
	v.N = len(rules)
	combine(v)
	v.At = now
	return changed
}

// Combine builds the Verdict of a limit set from its per-rule decisions (for
// a denied set, the admitting rules' decisions are peeks). Stores that run the
// algorithms elsewhere (the Redis scripts) use it to aggregate exactly as
// Apply does. len(ds) must be at most MaxRules.
func Combine(ds []Decision) Verdict {
	v := Verdict{N: len(ds)}
	copy(v.D[:], ds)
	combine(&v)
	return v
}

// combine sets v's Allowed, Shadow, RetryAfter and Delay from its
// decisions, v.D[:v.N], as Combine documents.
func combine(v *Verdict) {
	ds := v.D[:v.N]
	v.Allowed = true
	for i := range ds {
		switch {
		case ds[i].denies():
			v.Allowed = false
		case !ds[i].Allowed:
			v.Shadow = true
		}
	}
	for i := range ds {
		d := &ds[i]
		switch {
		case v.Allowed:
			if d.Allowed {
				v.Delay = max(v.Delay, d.Delay)
			}
		case !d.denies():
		case d.RetryAfter == RetryNever || v.RetryAfter == RetryNever:
			v.RetryAfter = RetryNever
		default:
			v.RetryAfter = max(v.RetryAfter, d.RetryAfter)
		}
	}
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
