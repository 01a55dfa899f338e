package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// reference is the sequential specification of ApplyAll on a store: the
// states of every key, and the store's partition (store.Partitioner), by
// which a request over several groups is reserved group by group and
// refunded when one denies.
type reference struct {
	states map[string][]limit.State
	part   store.Partitioner // nil: every request atomic
}

func newReference(st store.Store) *reference {
	r := &reference{states: map[string][]limit.State{}}
	r.part, _ = st.(store.Partitioner)
	return r
}

// apply decides reqs as the store must, at now, into out.
func (r *reference) apply(reqs []store.Request, now int64, out []limit.Verdict) bool {
	keys := make([]string, len(reqs))
	for i := range reqs {
		keys[i] = reqs[i].Key
	}
	groups := [][]int{make([]int, len(reqs))}
	for i := range reqs {
		groups[0][i] = i
	}
	if r.part != nil {
		groups = r.part.Partition(keys)
	}
	parts := make([]limit.Part, len(reqs))
	for i, q := range reqs {
		st, ok := r.states[q.Key]
		if !ok {
			st = make([]limit.State, len(q.Rules))
			r.states[q.Key] = st
		}
		parts[i] = limit.Part{Rules: q.Rules, States: st, Cost: q.Cost}
	}
	if len(groups) == 1 {
		return limit.ApplyParts(parts, now, out, make([]bool, len(parts)))
	}
	allowed := true
	admitted := make([]bool, len(groups))
	for g, idx := range groups {
		gp := make([]limit.Part, len(idx))
		for j, i := range idx {
			gp[j] = parts[i]
		}
		gout := make([]limit.Verdict, len(idx))
		admitted[g] = limit.ApplyParts(gp, now, gout, make([]bool, len(idx)))
		allowed = allowed && admitted[g]
		for j, i := range idx {
			out[i] = gout[j]
		}
	}
	if allowed {
		return true
	}
	for g, idx := range groups {
		if !admitted[g] {
			continue
		}
		for _, i := range idx {
			p := parts[i]
			if p.Cost == 0 {
				continue
			}
			for j := range p.Rules {
				if out[i].D[j].Allowed { // a shadow rule that denied consumed nothing
					p.Rules[j].Refund(&p.States[j], p.Cost, p.Rules[j].Mark(p.States[j]))
					out[i].D[j].Remaining += p.Cost
				}
			}
		}
	}
	return false
}

// partKeys are the keys of the multi-part tests, each with its limit set:
// a user (two rules), an IP, a route and an endpoint-wide cap.
func partSets() map[string][]limit.Rule {
	all := algorithms()
	trial := rule("trial", limit.TokenBucket, 2, 10*time.Second, 0)
	trial.Shadow = true
	return map[string][]limit.Rule{
		"trial":  {trial, all[2]},
		"user-1": {all[0], all[4]},
		"user-2": {all[1], all[3]},
		"ip-1":   {all[2]},
		"ip-2":   {all[3]},
		"route":  {all[4], all[2]},
		"global": {rule("global", limit.SlidingWindowCounter, 25, 10*time.Second, 0), all[1]},
	}
}

// testPartsMatchReference drives ApplyAll and the reference side by side
// over seeded random timelines of requests of one to four parts (costs
// 0..capacity+1 per part, clock steps forward and back, rate changes) and
// requires identical verdicts.
func testPartsMatchReference(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	sets := partSets()
	names := make([]string, 0, len(sets))
	for n := range sets {
		names = append(names, n)
	}
	slices.Sort(names)
	for seed := uint64(1); seed <= 4; seed++ {
		clk.Set(Epoch)
		ref := newReference(st)
		rng := rand.New(rand.NewPCG(seed, 11))
		prefix := fmt.Sprintf("parts:%d:", seed)
		for i := 0; i < 300; i++ {
			switch rng.IntN(20) {
			case 0:
				clk.Advance(-time.Duration(rng.Int64N(int64(500 * time.Millisecond))))
			case 1:
				clk.Advance(time.Duration(rng.Int64N(int64(48 * time.Hour))))
			case 2, 3, 4, 5, 6, 7:
			default:
				clk.Advance(time.Duration(rng.Int64N(int64(1500 * time.Millisecond))))
			}
			n := 1 + rng.IntN(4)
			pick := rng.Perm(len(names))[:n]
			reqs := make([]store.Request, n)
			for j, p := range pick {
				rules := sets[names[p]]
				if i%60 == 59 {
					rules = rescaled(rules, 1+rng.Int64N(3))
				}
				cost := int64(1)
				switch rng.IntN(6) {
				case 0:
					cost = 0
				case 1:
					cost = rng.Int64N(rules[0].Capacity() + 2)
				}
				reqs[j] = store.Request{Key: prefix + names[p], Rules: rules, Cost: cost}
			}
			want := make([]limit.Verdict, n)
			wantAllowed := ref.apply(reqs, clk.Now().UnixNano(), want)
			got := make([]limit.Verdict, n)
			gotAllowed, err := st.ApplyAll(context.Background(), reqs, got)
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, i, err)
			}
			if gotAllowed != wantAllowed || !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d (t=%v) %v:\n got %v %+v\nwant %v %+v", seed, i, clk.Now().Sub(Epoch),
					describe(reqs), gotAllowed, got, wantAllowed, want)
			}
		}
	}
}

func describe(reqs []store.Request) string {
	s := ""
	for _, r := range reqs {
		s += fmt.Sprintf("[%s cost %d] ", r.Key, r.Cost)
	}
	return s
}

// testPartsConcurrent floods requests of three parts (a user, an IP, an
// endpoint-wide cap) from 64 goroutines: the cap admits at most its limit,
// every key is charged exactly what was admitted through it (a denied
// request is charged nothing, refunds included), and once the flood is
// over the cap fills to exactly its limit. A store that decides atomically
// admits exactly the cap's limit during the flood.
func testPartsConcurrent(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	userRules := []limit.Rule{rule("user", limit.TokenBucket, 5, time.Hour, 0)}
	ipRules := []limit.Rule{rule("ip", limit.FixedWindow, 20, time.Hour, 0)}
	capRules := []limit.Rule{rule("cap", limit.SlidingWindowLog, 100, time.Hour, 0)}
	const clients, each = 64, 10
	var byUser, byIP [clients]atomic.Int64
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				reqs := []store.Request{
					{Key: fmt.Sprintf("pconc:user-%d", c), Rules: userRules, Cost: 1},
					{Key: fmt.Sprintf("pconc:ip-%d", c%8), Rules: ipRules, Cost: 1},
					{Key: "pconc:cap", Rules: capRules, Cost: 1},
				}
				out := make([]limit.Verdict, 3)
				ok, err := st.ApplyAll(context.Background(), reqs, out)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					admitted.Add(1)
					byUser[c].Add(1)
					byIP[c%8].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	n := admitted.Load()
	_, partitioned := st.(store.Partitioner)
	switch {
	case n > 100:
		t.Fatalf("the cap of 100 admitted %d", n)
	case n < 100 && !partitioned:
		t.Fatalf("an atomic store admitted %d of the cap's 100 from 640 offered", n)
	}
	t.Logf("%d admitted during the flood", n)
	for c := 0; c < clients; c++ {
		v := apply(t, st, fmt.Sprintf("pconc:user-%d", c), userRules, 0)
		if want := 5 - byUser[c].Load(); v.D[0].Remaining != want {
			t.Errorf("user-%d: remaining %d, want %d (charged what it was not admitted for)", c, v.D[0].Remaining, want)
		}
	}
	for i := 0; i < 8; i++ {
		v := apply(t, st, fmt.Sprintf("pconc:ip-%d", i), ipRules, 0)
		if want := 20 - byIP[i].Load(); v.D[0].Remaining != want {
			t.Errorf("ip-%d: remaining %d, want %d", i, v.D[0].Remaining, want)
		}
	}
	if v := apply(t, st, "pconc:cap", capRules, 0); v.D[0].Remaining != 100-n {
		t.Errorf("cap: remaining %d after %d admitted", v.D[0].Remaining, n)
	}
	// After the flood, fresh users fill the cap to exactly its limit.
	for i := 0; n < 100 && i < 200; i++ {
		reqs := []store.Request{
			{Key: fmt.Sprintf("pconc:late-%d", i), Rules: userRules, Cost: 1},
			{Key: "pconc:cap", Rules: capRules, Cost: 1},
		}
		ok, err := st.ApplyAll(context.Background(), reqs, make([]limit.Verdict, 2))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			n++
		}
	}
	if v := apply(t, st, "pconc:cap", capRules, 1); v.Allowed || n != 100 {
		t.Fatalf("the cap admitted %d in all, and one more: %v", n, v.Allowed)
	}
}

// testPartsInvalid: malformed ApplyAll calls are refused before anything
// is consumed.
func testPartsInvalid(t *testing.T, newStore Factory) {
	st := newStore(t, clocktest.New(Epoch))
	r := []limit.Rule{rule("a", limit.TokenBucket, 1, time.Second, 0)}
	ok := store.Request{Key: "pinv:a", Rules: r, Cost: 1}
	for name, reqs := range map[string][]store.Request{
		"none":          nil,
		"duplicate key": {ok, ok},
		"bad part":      {ok, {Key: "pinv:b", Rules: r, Cost: -1}},
		"too many":      make([]store.Request, store.MaxParts+1),
	} {
		if _, err := st.ApplyAll(context.Background(), reqs, make([]limit.Verdict, len(reqs))); !errors.Is(err, store.ErrInvalidRequest) {
			t.Errorf("%s: %v, want ErrInvalidRequest", name, err)
		}
	}
	if _, err := st.ApplyAll(context.Background(), []store.Request{ok}, nil); !errors.Is(err, store.ErrInvalidRequest) {
		t.Errorf("no room for the verdicts: %v", err)
	}
	if v := apply(t, st, "pinv:a", r, 0); v.D[0].Remaining != 1 {
		t.Fatalf("a refused request consumed: %+v", v)
	}
}

type partsInput struct {
	keys  []string
	costs []int64
	now   int64
}

type partsOutput struct {
	allowed bool
	out     []limit.Verdict
}

// testPartsLinearizable records 64 concurrent clients sending requests of
// a user and its group's shared key (parts in one hash slot, so that even a
// Cluster decides them atomically) and verifies with porcupine that the
// history is linearizable against limit.ApplyParts.
func testPartsLinearizable(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	userRules := []limit.Rule{rule("tb", limit.TokenBucket, 4, time.Hour, 0), rule("swl", limit.SlidingWindowLog, 5, time.Hour, 0)}
	sharedRules := []limit.Rule{rule("fw", limit.FixedWindow, 9, time.Hour, 0)}
	rulesOf := func(key string) []limit.Rule {
		if key[len(key)-1] == 's' {
			return sharedRules
		}
		return userRules
	}
	const clients, perPhase, groups = 64, 5, 12
	var seq atomic.Int64
	var mu sync.Mutex
	var history []porcupine.Operation
	for phase := 0; phase < 3; phase++ {
		now := clk.Now().UnixNano()
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(c), uint64(phase)+100))
				for range perPhase {
					g := rng.IntN(groups)
					in := partsInput{now: now,
						keys:  []string{fmt.Sprintf("plin:{g%d}:u%d", g, rng.IntN(2)), fmt.Sprintf("plin:{g%d}:s", g)},
						costs: []int64{rng.Int64N(3), rng.Int64N(3)}}
					reqs := make([]store.Request, 2)
					for i, k := range in.keys {
						reqs[i] = store.Request{Key: k, Rules: rulesOf(k), Cost: in.costs[i]}
					}
					out := make([]limit.Verdict, 2)
					call := seq.Add(1)
					ok, err := st.ApplyAll(context.Background(), reqs, out)
					ret := seq.Add(1)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: partsOutput{ok, out}, Return: ret})
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		clk.Advance(20 * time.Minute)
	}
	if t.Failed() {
		return
	}
	start := time.Now()
	res := porcupine.CheckOperationsTimeout(partsModel(rulesOf), history, 60*time.Second)
	t.Logf("porcupine checked %d operations in %v: %v", len(history), time.Since(start), res)
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations is %v, want linearizable", len(history), res)
	}
}

// partsModel is the sequential specification of ApplyAll: limit.ApplyParts
// on the states of the request's keys. The history is partitioned by group
// (the keys "plin:{gN}:..." a request may combine).
func partsModel(rulesOf func(string) []limit.Rule) porcupine.Model {
	group := func(key string) string { g, _, _ := strings.Cut(key, "}"); return g }
	type states map[string][]limit.State
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			var order []string
			for _, op := range h {
				g := group(op.Input.(partsInput).keys[0])
				if _, ok := by[g]; !ok {
					order = append(order, g)
				}
				by[g] = append(by[g], op)
			}
			out := make([][]porcupine.Operation, 0, len(order))
			for _, g := range order {
				out = append(out, by[g])
			}
			return out
		},
		Init: func() any { return states{} },
		Step: func(state, input, output any) (bool, any) {
			in, want := input.(partsInput), output.(partsOutput)
			next := states{}
			for k, st := range state.(states) {
				c := make([]limit.State, len(st))
				for i, s := range st {
					s.Log = append([]limit.Entry(nil), s.Log...)
					c[i] = s
				}
				next[k] = c
			}
			parts := make([]limit.Part, len(in.keys))
			for i, k := range in.keys {
				if next[k] == nil {
					next[k] = make([]limit.State, len(rulesOf(k)))
				}
				parts[i] = limit.Part{Rules: rulesOf(k), States: next[k], Cost: in.costs[i]}
			}
			out := make([]limit.Verdict, len(parts))
			ok := limit.ApplyParts(parts, in.now, out, make([]bool, len(parts)))
			for _, st := range next {
				for i := range st {
					st[i].Log = mergeLog(st[i].Log)
				}
			}
			return ok == want.allowed && slices.Equal(out, want.out), next
		},
		Equal: func(a, b any) bool {
			x, y := a.(states), b.(states)
			same := func(x, y states) bool { // a key absent is a fresh one
				for k, xs := range x {
					ys := y[k]
					for i := range xs {
						var o limit.State
						if ys != nil {
							o = ys[i]
						}
						if !xs[i].Equal(o) {
							return false
						}
					}
				}
				return true
			}
			return same(x, y) && same(y, x)
		},
		DescribeOperation: func(input, output any) string {
			in, o := input.(partsInput), output.(partsOutput)
			return fmt.Sprintf("%v costs %v -> allowed=%v", in.keys, in.costs, o.allowed)
		},
	}
}
