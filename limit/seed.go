package limit

import "time"

// Seed returns a state of r that stands for what another holder of the
// subject's state reported about it (a store's Decision): at instant now it
// leaves remaining units (clamped to 0..Capacity) and, for the window
// algorithms, holds them no longer than resetAfter (the Decision's
// ResetAfter; 0 or less when unknown). It is how an in-process fallback
// starts a subject from what Redis last said about it, instead of from a
// fresh state.
//
// The reconstruction is conservative: from now on, a request checked
// against the seeded state is never admitted where the state the decision
// came from would deny it, except that it counts time from now rather than
// from the original decision's instant:
//
//   - TokenBucket, LeakyBucket: exact. The bucket holds remaining whole
//     tokens at now (the fraction of a token the original held is dropped)
//     and refills at the rule's rate.
//   - FixedWindow: exact. The window holding now has counted
//     Limit-remaining units.
//   - SlidingWindowCounter: the current window has counted Limit-remaining
//     units and the previous one nothing, so the estimate stays at its level
//     until the window ends, where the original's share of the previous
//     window was already fading.
//   - SlidingWindowLog: one entry of Limit-remaining units that expires at
//     now+resetAfter, when the newest of the original's entries does (the
//     original's older entries expire earlier).
//
// A state with nothing consumed is the fresh state (the zero State).
func (r *Rule) Seed(remaining int64, resetAfter time.Duration, now int64) State {
	remaining = min(max(remaining, 0), r.Capacity())
	used := r.Capacity() - remaining
	if used == 0 {
		return State{}
	}
	p := int64(r.Period)
	s := State{Alg: r.Algorithm}
	switch r.Algorithm {
	case TokenBucket, LeakyBucket:
		iv := r.interval()
		s.T, s.N, s.P = now+used*iv, iv, now
	case FixedWindow:
		s.T, s.N = floorDiv(now, p)*p, used
	case SlidingWindowCounter:
		s.T, s.N = floorDiv(now, p)*p, used
	case SlidingWindowLog:
		at := now
		if resetAfter > 0 && resetAfter < time.Duration(p) {
			at = now + int64(resetAfter) - p
		}
		s.Log, s.N = []Entry{{At: at, Cost: used}}, used
	default:
		return State{}
	}
	return s
}

// Spent returns the share of r's capacity that state s holds spent at
// instant now: 0 for a state equivalent to a fresh one, 1 for one that
// leaves nothing. A state written at an instant later than now (by a
// clock ahead of the caller's) is judged as of that instant, so that
// states written at different instants compare by what they hold, not by
// how far in the future they lie. Stores use it to choose what to forget
// first.
func (r *Rule) Spent(s State, now int64) float64 {
	if s.Alg != r.Algorithm {
		return 0
	}
	switch r.Algorithm {
	case TokenBucket, LeakyBucket:
		now = max(now, s.P)
	case FixedWindow, SlidingWindowCounter:
		now = max(now, s.T)
	case SlidingWindowLog:
		if len(s.Log) > 0 {
			now = max(now, s.Log[len(s.Log)-1].At)
		}
	}
	_, d := r.Step(s, now, 0)
	c := r.Capacity()
	if d.Remaining >= c {
		return 0
	}
	return float64(c-d.Remaining) / float64(c)
}
