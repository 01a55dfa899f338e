package limit

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

var algs = []Algorithm{TokenBucket, LeakyBucket, FixedWindow, SlidingWindowCounter, SlidingWindowLog}

// One part is Apply: the same verdicts, states and changes on random
// timelines of one rule set.
func TestApplyPartsOfOnePartIsApply(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rules := []Rule{genRule(t, rapid.SampledFrom(algs).Draw(t, "a0"))}
		rules[0].Shadow = rapid.Bool().Draw(t, "shadow0")
		if rapid.Bool().Draw(t, "two") {
			r := genRule(t, rapid.SampledFrom(algs).Draw(t, "a1"))
			r.Name = "q"
			r.Shadow = rapid.Bool().Draw(t, "shadow1")
			rules = append(rules, r)
		}
		a, b := make([]State, len(rules)), make([]State, len(rules))
		now := t0
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			now += rapid.Int64Range(0, int64(time.Second)).Draw(t, "dt")
			cost := rapid.Int64Range(0, 25).Draw(t, "cost")
			want, wantCh := Apply(rules, a, now, cost)
			var out [1]Verdict
			var ch [1]bool
			got := ApplyParts([]Part{{Rules: rules, States: b, Cost: cost}}, now, out[:], ch[:])
			if got != want.Allowed || out[0] != want || ch[0] != wantCh {
				t.Fatalf("at %d cost %d: ApplyParts %v %+v %v, Apply %+v %v", now, cost, got, out[0], ch[0], want, wantCh)
			}
			for i := range a {
				if !a[i].Equal(b[i]) {
					t.Fatalf("states differ: %+v vs %+v", a[i], b[i])
				}
			}
		}
	})
}

// A request is all-or-nothing across its parts: the part that would have
// admitted it reports a peek and keeps its state; once every part admits,
// every part is charged its own cost.
func TestApplyPartsAllOrNothing(t *testing.T) {
	user := mustRule(t, Rule{Name: "per-user", Algorithm: TokenBucket, Limit: 10, Period: time.Minute})
	ip := mustRule(t, Rule{Name: "per-ip", Algorithm: FixedWindow, Limit: 3, Period: time.Minute})
	global := mustRule(t, Rule{Name: "global", Algorithm: SlidingWindowLog, Limit: 100, Period: time.Minute})
	us, is, gs := []State{{}}, []State{{}}, []State{{}}
	parts := func(userCost int64) []Part {
		return []Part{{Rules: []Rule{user}, States: us, Cost: userCost}, {Rules: []Rule{ip}, States: is, Cost: 1}, {Rules: []Rule{global}, States: gs, Cost: 1}}
	}
	out, ch := make([]Verdict, 3), make([]bool, 3)
	for i := range 3 {
		if !ApplyParts(parts(2), t0, out, ch) || !(ch[0] && ch[1] && ch[2]) {
			t.Fatalf("request %d: %+v %v", i, out, ch)
		}
	}
	if out[0].D[0].Remaining != 4 || out[1].D[0].Remaining != 0 || out[2].D[0].Remaining != 97 {
		t.Fatalf("after 3: %+v", out)
	}
	// The IP is spent: the request is denied and neither the user nor the
	// global limit is charged; they report what they have left.
	if ApplyParts(parts(2), t0, out, ch) {
		t.Fatal("a request over the IP limit was allowed")
	}
	if ch[0] || ch[1] || ch[2] {
		t.Fatalf("a denied request changed states: %v", ch)
	}
	if !out[0].Allowed || out[0].D[0].Remaining != 4 || out[1].Allowed || out[1].RetryAfter != time.Minute || !out[2].Allowed || out[2].D[0].Remaining != 97 {
		t.Fatalf("denied verdicts: %+v", out)
	}
	if us[0].T != t0+6*int64(6*time.Second) || is[0].N != 3 || gs[0].N != 3 {
		t.Fatalf("states after the denial: %+v %+v %+v", us, is, gs)
	}
}

func mustRule(t testing.TB, r Rule) Rule {
	t.Helper()
	n, err := r.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A refund never leaves a state more permissive than the same history of
// admitted requests without the refunded consumption (other requests may
// have been denied while it was held: the bound of reserve-then-refund), and is exact (the same answers) for the
// window algorithms and the log always, and for the buckets when nothing
// was written at a later instant between the consumption and its refund.
func TestRefundNeverGivesMoreThanWasConsumed(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRule(t, rapid.SampledFrom(algs).Draw(t, "alg"))
		var with, without State
		now := t0 + rapid.Int64Range(0, int64(time.Hour)).Draw(t, "start")
		// step runs another request on the real history (with ours); what
		// it admitted is what the other history consumed too (it has at
		// least as much room: it lacks ours).
		step := func(at, cost int64) {
			var d Decision
			next := with
			if r.stepInPlace(&next, at, cost, &d) {
				with = next
			}
			if !d.Allowed {
				return
			}
			next = without
			if r.stepInPlace(&next, at, cost, &d); !d.Allowed {
				t.Fatalf("admitted with our consumption, denied without it: %+v", d)
			}
			without = next
		}
		// Others before ours, on both histories.
		for range rapid.IntRange(0, 10).Draw(t, "before") {
			now += rapid.Int64Range(0, int64(r.Period)/4).Draw(t, "dt")
			step(now, rapid.Int64Range(1, 3).Draw(t, "cost"))
		}
		// Ours, on one history only; skip when it is denied.
		cost := rapid.Int64Range(1, r.Capacity()).Draw(t, "ours")
		next := with
		var d Decision
		r.stepInPlace(&next, now, cost, &d)
		if !d.Allowed {
			t.Skip("ours denied")
		}
		with = next
		mark := r.Mark(with)
		// Others between ours and the refund.
		later := false
		for range rapid.IntRange(0, 6).Draw(t, "between") {
			dt := rapid.Int64Range(0, int64(r.Period)/2).Draw(t, "dt") * rapid.Int64Range(0, 1).Draw(t, "moves")
			now += dt
			later = later || dt > 0
			step(now, rapid.Int64Range(1, 3).Draw(t, "cost"))
		}
		r.Refund(&with, cost, mark)
		exact := !r.Algorithm.Bucket() || !later
		for _, at := range []int64{now, now + int64(r.Period)/3, now + int64(r.Period)} {
			for c := int64(1); c <= r.Capacity(); c++ {
				_, dw := r.Step(with, at, c)
				_, dn := r.Step(without, at, c)
				if dw.Allowed && !dn.Allowed {
					t.Fatalf("after the refund, cost %d at +%v passes, without the consumption it does not: %+v vs %+v (states %+v, %+v)",
						c, time.Duration(at-now), dw, dn, with, without)
				}
				if exact && (dw.Allowed != dn.Allowed || dw.Remaining != dn.Remaining) {
					t.Fatalf("refund not exact: cost %d at +%v: %+v vs %+v (states %+v, %+v)", c, time.Duration(at-now), dw, dn, with, without)
				}
			}
		}
	})
}

// The refund of a bucket consumption gives back exactly what was consumed
// within a round trip; after another request at a later instant, no more
// than the history without it.
func TestRefundBucket(t *testing.T) {
	r := mustRule(t, Rule{Name: "b", Algorithm: TokenBucket, Limit: 10, Period: 10 * time.Second})
	var s State
	s, _ = r.Step(s, t0, 4)
	mark := r.Mark(s)
	s, _ = r.Step(s, t0, 3) // another request, same instant
	if !r.Refund(&s, 4, mark) {
		t.Fatal("no refund")
	}
	if _, d := r.Step(s, t0, 0); d.Remaining != 7 {
		t.Fatalf("remaining %d after the refund of 4 of 7, want 7", d.Remaining)
	}
	// A refund after the consumption drained and another request wrote
	// later: nothing is left to give back.
	s = State{}
	s, _ = r.Step(s, t0, 1)
	mark = r.Mark(s)
	s, _ = r.Step(s, t0+int64(5*time.Second), 1)
	if r.Refund(&s, 1, mark) {
		t.Fatalf("refunded a drained consumption: %+v", s)
	}
}

// A rule in shadow mode is evaluated and charged when it admits, like an
// enforced one, but its denial lets the request pass: the verdict is
// allowed and says Shadow, and the enforced rules are charged.
func TestShadowRuleNeverDenies(t *testing.T) {
	enforced := mustRule(t, Rule{Name: "enforced", Algorithm: TokenBucket, Limit: 10, Period: time.Minute})
	trial := mustRule(t, Rule{Name: "trial", Algorithm: FixedWindow, Limit: 2, Period: time.Minute, Shadow: true})
	rules := []Rule{enforced, trial}
	st := make([]State, 2)
	for i := range 2 {
		if v, _ := Apply(rules, st, t0, 1); !v.Allowed || v.Shadow {
			t.Fatalf("request %d: %+v", i, v)
		}
	}
	v, changed := Apply(rules, st, t0, 1)
	if !v.Allowed || !v.Shadow || v.D[1].Allowed || !v.D[1].Shadow || v.D[1].RetryAfter != time.Minute || !changed {
		t.Fatalf("over the trial limit: %+v, changed %v", v, changed)
	}
	if v.D[0].Remaining != 7 || st[1].N != 2 {
		t.Fatalf("the enforced rule was not charged, or the trial was: %+v, %+v", v.D[0], st[1])
	}
	if v.Binding() != 1 {
		t.Fatalf("binding %d, want the trial (nothing remaining)", v.Binding())
	}
	// An enforced denial still denies, and charges nothing.
	st[0].T = t0 + int64(time.Minute)
	if v, changed := Apply(rules, st, t0, 1); v.Allowed || changed || v.RetryAfter != 6*time.Second {
		t.Fatalf("enforced denial: %+v %v", v, changed)
	}
	// One shadow rule alone.
	one := []State{{}}
	Apply(rules[1:], one, t0, 2)
	if v, _ := Apply(rules[1:], one, t0, 1); !v.Allowed || !v.Shadow || v.RetryAfter != 0 {
		t.Fatalf("a lone shadow rule: %+v", v)
	}
}

// Take takes what the bucket holds, up to n; a take is a consumption
// (Remaining falls, the bucket refills at its rate), and Refund gives back
// what was not spent.
func TestTake(t *testing.T) {
	r := mustRule(t, Rule{Name: "g", Algorithm: TokenBucket, Limit: 10, Period: time.Second})
	var s State
	if n, d := r.Take(&s, t0, 4); n != 4 || d.Remaining != 6 {
		t.Fatalf("take 4 of 10: %d %+v", n, d)
	}
	if n, d := r.Take(&s, t0, 100); n != 6 || d.Remaining != 0 {
		t.Fatalf("take the rest: %d %+v", n, d)
	}
	if n, d := r.Take(&s, t0, 1); n != 0 || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("take from an empty bucket: %d %+v", n, d)
	}
	// 300ms later three units are back; a refund of 2 unspent units of the
	// last take gives them back too.
	mark := r.Mark(s)
	if !r.Refund(&s, 2, mark) {
		t.Fatal("no refund")
	}
	if n, _ := r.Take(&s, t0+int64(300*time.Millisecond), 10); n != 5 {
		t.Fatalf("after 300ms and a refund of 2: took %d, want 5", n)
	}
	w := mustRule(t, Rule{Name: "w", Algorithm: FixedWindow, Limit: 10, Period: time.Second})
	if n, d := w.Take(&State{}, t0, 1); n != 0 || d.RetryAfter != RetryNever {
		t.Fatalf("a window cannot be leased: %d %+v", n, d)
	}
}
