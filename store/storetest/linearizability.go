package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

type linInput struct {
	key  string
	now  int64
	cost int64
}

// linModel is the sequential specification of a store for one limit set:
// per key, limit.Apply on the key's states. The checker partitions the
// history by key.
func linModel(rules []limit.Rule) porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			var order []string
			for _, op := range h {
				k := op.Input.(linInput).key
				if _, ok := byKey[k]; !ok {
					order = append(order, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			out := make([][]porcupine.Operation, 0, len(order))
			for _, k := range order {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() any { return make([]limit.State, len(rules)) },
		Step: func(state, input, output any) (bool, any) {
			in := input.(linInput)
			next := make([]limit.State, len(rules))
			for i, s := range state.([]limit.State) {
				s.Log = append([]limit.Entry(nil), s.Log...) // branches must not share logs
				next[i] = s
			}
			v, _ := limit.Apply(rules, next, in.now, in.cost)
			for i := range next {
				next[i].Log = mergeLog(next[i].Log)
			}
			return v == output.(limit.Verdict), next
		},
		Equal: func(a, b any) bool {
			x, y := a.([]limit.State), b.([]limit.State)
			for i := range x {
				if !x[i].Equal(y[i]) {
					return false
				}
			}
			return true
		},
		Hash: func(state any) uint64 {
			var h uint64 = 14695981039346656037
			for _, s := range state.([]limit.State) {
				for _, x := range []int64{s.T, s.N, s.P, int64(len(s.Log))} {
					h = (h ^ uint64(x)) * 1099511628211
				}
			}
			return h
		},
		DescribeOperation: func(input, output any) string {
			in, v := input.(linInput), output.(limit.Verdict)
			return fmt.Sprintf("%s cost %d -> allowed=%v remaining=%d", in.key, in.cost, v.Allowed, v.D[0].Remaining)
		},
	}
}

// mergeLog merges the adjacent entries of a sliding-window log stamped at
// the same instant into one: a log every decision treats exactly as the
// original (entries of one instant expire together, and a retry is the
// expiry of the entry that frees enough units), but one that no longer
// depends on the order concurrent checks were applied in. Without it, every
// order of a round's admissions is a different state to the checker, whose
// search then grows with the factorial of the overlap (the round's checks
// all share one instant of the fake clock) and times out on a loaded
// machine.
func mergeLog(log []limit.Entry) []limit.Entry {
	out := log[:0]
	for _, e := range log {
		if n := len(out); n > 0 && out[n-1].At == e.At {
			out[n-1].Cost += e.Cost
			continue
		}
		out = append(out, e)
	}
	return out
}

// testLinearizable records a history of 64 concurrent clients checking a few
// keys with mixed costs against a three-rule set, in phases between which the
// fake clock moves, and verifies with porcupine that the history is
// linearizable against limit.Apply.
func testLinearizable(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	CheckLinearizable(t, newStore(t, clk), clk, LinOptions{
		Rules: []limit.Rule{
			rule("tb", limit.TokenBucket, 30, time.Hour, 0),
			rule("fw", limit.FixedWindow, 80, time.Hour, 0),
			rule("swl", limit.SlidingWindowLog, 35, time.Hour, 0),
		},
		Phases:  3,
		Advance: 20 * time.Minute,
	})
}

// LinOptions shape a CheckLinearizable run.
type LinOptions struct {
	// Rules is the limit set every check uses (normalized).
	Rules []limit.Rule
	// Phases is how many rounds of concurrent checks run; the fake clock
	// stands still within a round and moves by Advance between rounds.
	Phases  int
	Advance time.Duration
	// Background, when set, runs alongside every round until stop closes:
	// traffic of other keys, sweeps, anything that must not change what the
	// checked keys observe beyond what limit.Apply allows.
	Background func(stop <-chan struct{})
}

// CheckLinearizable records a history of 64 concurrent clients checking
// sixteen keys with costs 0-3 against o.Rules on st, and verifies with
// porcupine that it is linearizable against limit.Apply, key by key.
func CheckLinearizable(t *testing.T, st store.Store, clk *clocktest.Fake, o LinOptions) {
	t.Helper()
	rules := o.Rules
	const clients, perPhase = 64, 6
	// Sixteen subjects: the checker's search grows with the concurrency
	// within one subject's partition (checks of equal answers, such as
	// denials, can be ordered every which way), so spreading the history
	// keeps it fast on a loaded machine while each subject still sees two
	// dozen concurrent checks a round and is exhausted.
	keys := []string{"lin:a", "lin:b", "lin:c", "lin:d", "lin:e", "lin:f", "lin:g", "lin:h",
		"lin:i", "lin:j", "lin:k", "lin:l", "lin:m", "lin:n", "lin:o", "lin:p"}
	var seq atomic.Int64
	var mu sync.Mutex
	var history []porcupine.Operation
	for phase := 0; phase < o.Phases; phase++ {
		now := clk.Now().UnixNano()
		stop := make(chan struct{})
		var bg sync.WaitGroup
		if o.Background != nil {
			bg.Add(1)
			go func() {
				defer bg.Done()
				o.Background(stop)
			}()
		}
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(c), uint64(phase)))
				for i := 0; i < perPhase; i++ {
					in := linInput{key: keys[rng.IntN(len(keys))], now: now, cost: rng.Int64N(4)}
					call := seq.Add(1)
					v, err := st.Apply(context.Background(), store.Request{Key: in.key, Rules: rules, Cost: in.cost})
					ret := seq.Add(1)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: v, Return: ret})
					mu.Unlock()
				}
			}(c)
		}
		wg.Wait()
		close(stop)
		bg.Wait()
		clk.Advance(o.Advance)
	}
	if t.Failed() {
		return
	}
	start := time.Now()
	res := porcupine.CheckOperationsTimeout(linModel(rules), history, 60*time.Second)
	t.Logf("porcupine checked %d operations in %v: %v", len(history), time.Since(start), res)
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations is %v, want linearizable", len(history), res)
	}
}
