package storetest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// racyStore reads and writes a key's state under a lock, but decides outside
// it: the classic lost-update bug of a GET-then-SET limiter. The barrier makes
// the race certain: every caller reads before any caller writes.
type racyStore struct {
	mu      sync.Mutex
	clk     *clocktest.Fake
	state   map[string][]limit.State
	barrier sync.WaitGroup
}

func (r *racyStore) Apply(_ context.Context, req store.Request) (limit.Verdict, error) {
	r.mu.Lock()
	st := append([]limit.State(nil), r.state[req.Key]...)
	r.mu.Unlock()
	if st == nil {
		st = make([]limit.State, len(req.Rules))
	}
	for i := range st {
		st[i].Log = append([]limit.Entry(nil), st[i].Log...)
	}
	r.barrier.Done()
	r.barrier.Wait()
	v, _ := limit.Apply(req.Rules, st, r.clk.Now().UnixNano(), req.Cost)
	r.mu.Lock()
	r.state[req.Key] = st
	r.mu.Unlock()
	return v, nil
}

// ApplyAll has the same bug across keys: every part is read, then decided
// and written without a lock.
func (r *racyStore) ApplyAll(_ context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	parts := make([]limit.Part, len(reqs))
	r.mu.Lock()
	for i, req := range reqs {
		st := append([]limit.State(nil), r.state[req.Key]...)
		if st == nil {
			st = make([]limit.State, len(req.Rules))
		}
		for j := range st {
			st[j].Log = append([]limit.Entry(nil), st[j].Log...)
		}
		parts[i] = limit.Part{Rules: req.Rules, States: st, Cost: req.Cost}
	}
	r.mu.Unlock()
	r.barrier.Done()
	r.barrier.Wait()
	allowed := limit.ApplyParts(parts, r.clk.Now().UnixNano(), out, make([]bool, len(reqs)))
	r.mu.Lock()
	for i, req := range reqs {
		r.state[req.Key] = parts[i].States
	}
	r.mu.Unlock()
	return allowed, nil
}

func (r *racyStore) Close() error { return nil }

// The linearizability check must catch a store that is not atomic; otherwise
// its passing on the real stores would mean nothing.
func TestLinearizabilityCheckCatchesLostUpdates(t *testing.T) {
	clk := clocktest.New(Epoch)
	racy := &racyStore{clk: clk, state: map[string][]limit.State{}}
	racy.barrier.Add(64)
	rules := []limit.Rule{rule("tb", limit.TokenBucket, 30, time.Hour, 0)}
	var ops []porcupine.Operation
	var mu sync.Mutex
	var wg sync.WaitGroup
	var seq atomic.Int64 // the same call/return clock as CheckLinearizable's
	for c := 0; c < 64; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			in := linInput{key: "k", now: clk.Now().UnixNano(), cost: 1}
			call := seq.Add(1)
			v, _ := racy.Apply(context.Background(), store.Request{Key: "k", Rules: rules, Cost: 1})
			ret := seq.Add(1)
			mu.Lock()
			ops = append(ops, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: v, Return: ret})
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	allowed := 0
	for _, op := range ops {
		if op.Output.(limit.Verdict).Allowed {
			allowed++
		}
	}
	if allowed != 64 {
		t.Fatalf("the racy store admitted %d; with every read before any write it admits all 64", allowed)
	}
	if res := porcupine.CheckOperationsTimeout(linModel(rules), ops, 30*time.Second); res != porcupine.Illegal {
		t.Fatalf("a store that admitted %d of a limit of 30 was judged %v, want Illegal", allowed, res)
	}
}

// The same for requests of several parts: a store that decides them apart
// (every part read, then every part written) is reported by partsModel.
func TestPartsLinearizabilityCheckCatchesLostUpdates(t *testing.T) {
	clk := clocktest.New(Epoch)
	racy := &racyStore{clk: clk, state: map[string][]limit.State{}}
	racy.barrier.Add(64)
	userRules := []limit.Rule{rule("tb", limit.TokenBucket, 100, time.Hour, 0)}
	sharedRules := []limit.Rule{rule("fw", limit.FixedWindow, 30, time.Hour, 0)}
	rulesOf := func(key string) []limit.Rule {
		if key[len(key)-1] == 's' {
			return sharedRules
		}
		return userRules
	}
	var ops []porcupine.Operation
	var mu sync.Mutex
	var wg sync.WaitGroup
	var seq atomic.Int64
	for c := 0; c < 64; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			in := partsInput{keys: []string{"plin:{g0}:u0", "plin:{g0}:s"}, costs: []int64{1, 1}, now: clk.Now().UnixNano()}
			out := make([]limit.Verdict, 2)
			call := seq.Add(1)
			ok, _ := racy.ApplyAll(context.Background(), []store.Request{
				{Key: in.keys[0], Rules: userRules, Cost: 1}, {Key: in.keys[1], Rules: sharedRules, Cost: 1}}, out)
			ret := seq.Add(1)
			mu.Lock()
			ops = append(ops, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: partsOutput{ok, out}, Return: ret})
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	if res := porcupine.CheckOperationsTimeout(partsModel(rulesOf), ops, 30*time.Second); res != porcupine.Illegal {
		t.Fatalf("a store that decided the parts apart was judged %v, want Illegal", res)
	}
}
