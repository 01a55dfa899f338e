package limit

import "fmt"

// Part is one key's share of a request that checks several keys at once: the
// descriptors of one request ("per user AND per IP AND endpoint-wide"), each
// a key of its own with its own limit set and cost.
type Part struct {
	Rules []Rule
	// States are the states of Rules, one each; ApplyParts overwrites them
	// with the next states.
	States []State
	// Cost is what the request spends on this part, >= 0 (0: a peek).
	Cost int64
}

// ApplyParts decides a request made of several parts all-or-nothing, as Apply
// does for the rules of one part: the request is allowed only if every rule
// of every part admits its part's cost, and only then is anything consumed.
// out[i] receives part i's verdict and changed[i] whether part i's states
// changed (consumed, or a bucket rescaled, which a store must save even for
// a denied request). For a denied request, the rules that would have
// admitted it report a peek, in whichever part they are, so a part's own
// verdict may read allowed while the request is not. It reports whether the
// request is allowed.
//
// Preconditions: len(out) == len(changed) == len(parts); each part as for
// Apply (at most MaxRules valid rules, a state each, cost >= 0); the parts
// are distinct keys (a key checked twice is one part whose cost is the sum).
func ApplyParts(parts []Part, now int64, out []Verdict, changed []bool) bool {
	n := 0
	for i := range parts {
		n += len(parts[i].Rules)
	}
	// A request of a few parts steps on the stack.
	var nextBuf [2 * MaxRules]State
	var chBuf [2 * MaxRules]bool
	var dsBuf [2 * MaxRules]Decision
	next, ch, ds := nextBuf[:0], chBuf[:0], dsBuf[:0]
	if n > len(nextBuf) {
		next, ch, ds = make([]State, 0, n), make([]bool, 0, n), make([]Decision, 0, n)
	}
	next, ch, ds = next[:n], ch[:n], ds[:n]
	allowed := true
	k := 0
	for i := range parts {
		p := &parts[i]
		for j := range p.Rules {
			next[k] = p.States[j]
			ch[k] = p.Rules[j].stepInPlace(&next[k], now, p.Cost, &ds[k])
			allowed = allowed && !ds[k].denies()
			k++
		}
	}
	k = 0
	for i := range parts {
		p := &parts[i]
		changed[i] = false
		for j := range p.Rules {
			if !allowed && p.Cost > 0 && ds[k].Allowed {
				// Nothing may be consumed: an admitting rule reports a peek,
				// whose state differs from the old one only if rescaled.
				next[k] = p.States[j]
				ch[k] = p.Rules[j].stepInPlace(&next[k], now, 0, &ds[k])
			}
			if ch[k] {
				p.States[j] = next[k]
				changed[i] = true
			}
			k++
		}
		out[i] = Combine(ds[k-len(p.Rules) : k])
		out[i].At = now
	}
	return allowed
}

// Mark is where an admitted consumption of state s landed, for Refund: the
// bucket's theoretical arrival time after it, the start of the window it
// was counted in, or the instant of its log entry. Call it on the state that
// Step (or Apply) returned for an allowed request of cost > 0.
func (r *Rule) Mark(s State) int64 {
	if r.Algorithm == SlidingWindowLog {
		if len(s.Log) == 0 {
			return 0
		}
		return s.Log[len(s.Log)-1].At
	}
	return s.T
}

// Refund gives back to *s the cost units that an admitted request consumed
// at mark (Mark of the state its consumption wrote), when other rules of the
// same request, checked apart (in another Redis Cluster slot), denied it. It
// reports whether it changed *s. Whatever was written since, the refunded
// state never admits more than the same history without that consumption
// would have: a refund may give back less than was consumed, never more.
//
//   - FixedWindow, SlidingWindowCounter: counts add up, so the refund is
//     exact: cost comes off the count of the window the consumption was
//     counted in, while that window still counts (the current one, or for
//     the counter the previous one too).
//   - SlidingWindowLog: the consumption's entry is removed: exact.
//   - TokenBucket, LeakyBucket: the theoretical arrival time (TAT) goes back
//     by cost emission intervals. That is exact when nothing was written at
//     a later instant than the consumption since (the common case: the
//     refund follows within a round trip). Otherwise a consumption by
//     another request after ours may have started from a bucket that,
//     without ours, would have refilled in between, so the TAT only goes
//     back to the latest write instant plus what was consumed after ours.
//     Once the consumption has drained (its mark is not after the latest
//     write), nothing is refunded: nothing of it is left.
//
// A state of another algorithm or, for a bucket, of another emission
// interval (a rate change since) is left as it is.
func (r *Rule) Refund(s *State, cost, mark int64) bool {
	if s.Alg != r.Algorithm || cost <= 0 {
		return false
	}
	switch r.Algorithm {
	case TokenBucket, LeakyBucket:
		iv := r.interval()
		if s.N != iv || s.P >= mark || s.T < mark {
			return false
		}
		// Consumed after ours: s.T-mark. Without ours, the TAT is at most
		// the latest write plus that, and at most s.T - cost*iv.
		s.T = max(s.T-cost*iv, s.P+(s.T-mark))
		return true
	case FixedWindow:
		if s.T != mark {
			return false
		}
		s.N = max(0, s.N-cost)
		return true
	case SlidingWindowCounter:
		switch s.T {
		case mark:
			s.N = max(0, s.N-cost)
		case mark + int64(r.Period):
			s.P = max(0, s.P-cost)
		default:
			return false
		}
		return true
	case SlidingWindowLog:
		for i := len(s.Log) - 1; i >= 0; i-- {
			if e := s.Log[i]; e.At == mark && e.Cost == cost {
				log := make([]Entry, 0, len(s.Log)-1)
				log = append(log, s.Log[:i]...)
				s.Log = append(log, s.Log[i+1:]...)
				s.N -= cost
				return true
			}
		}
	}
	return false
}

// Leasable reports why r cannot be leased (Take, package lease), or nil:
// a lease is sound for a TokenBucket only (a unit taken now and spent a
// little later is, for a bucket, a unit that arrived now; a window's count
// and a leaky bucket's queue have no such reading), and its Burst must hold
// at least 2 units (at least one kept in the store, one spent from leases).
// r must be normalized.
func (r Rule) Leasable() error {
	if r.Algorithm != TokenBucket {
		return fmt.Errorf("only a token_bucket can be leased, not a %v", r.Algorithm)
	}
	if r.Burst < 2 {
		return fmt.Errorf("a leased token_bucket needs a burst of at least 2, not %d", r.Burst)
	}
	return nil
}

// Take takes up to n units out of a TokenBucket's state at now, as many as
// it holds (0 to n), for a lease: the units are consumed in the bucket, to
// be spent by whoever took them, and what they do not spend goes back with
// Refund (its mark is Mark of the state Take leaves). d is the bucket after
// the take: its Remaining, and when nothing was taken, its RetryAfter (the
// wait for one unit). Take on another algorithm takes nothing and returns
// a RetryNever decision: leases are sound for the token bucket only (a
// unit taken now and spent a little later is, for a bucket, a unit that
// arrived now; a window's count has no such reading).
func (r *Rule) Take(s *State, now, n int64) (taken int64, d Decision) {
	if r.Algorithm != TokenBucket || n <= 0 {
		return 0, Decision{Limit: r.Limit, RetryAfter: RetryNever}
	}
	// A peek tells what the bucket holds now (and rescales a state written
	// under another rate, which the caller saves as it saves a take).
	r.stepInPlace(s, now, 0, &d)
	taken = min(n, d.Remaining)
	if taken == 0 {
		return 0, d
	}
	if !r.stepInPlace(s, now, taken, &d) || !d.Allowed {
		return 0, d // cannot happen: taken units are there
	}
	return taken, d
}
