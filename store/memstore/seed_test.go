package memstore

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

func decisions(remaining ...int64) limit.Verdict {
	v := limit.Verdict{N: len(remaining)}
	for i, r := range remaining {
		v.D[i] = limit.Decision{Remaining: r}
	}
	return v
}

// A seeded key answers from the reported remaining, refills from there,
// and a report of nothing consumed adds no key.
func TestSeed(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 10, Period: 10 * time.Second})

	s.Seed("k", rules, decisions(3))
	for i := range 4 {
		if v := check(t, s, "k", rules, 1); v.Allowed != (i < 3) {
			t.Fatalf("check %d after a seed of 3: allowed %v", i+1, v.Allowed)
		}
	}
	clk.Advance(time.Second) // one token
	if v := check(t, s, "k", rules, 1); !v.Allowed || v.D[0].Remaining != 0 {
		t.Fatalf("after a second: %+v", v.D[0])
	}

	s.Seed("full", rules, decisions(10))
	s.Seed("more-than-full", rules, decisions(99))
	if n := s.Stats().Keys; n != 1 {
		t.Fatalf("%d keys, want 1: a report of nothing consumed adds none", n)
	}
}

// Reports arriving out of order never loosen a held key; a report of
// another limit set replaces it; a multi-rule set merges rule by rule.
func TestSeedNeverLoosens(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, SweepInterval: -1})
	defer s.Close()
	one := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour})
	s.Seed("k", one, decisions(2))
	s.Seed("k", one, decisions(7)) // an older answer, arriving late
	if v := check(t, s, "k", one, 0); v.D[0].Remaining != 2 {
		t.Fatalf("after reports of 2 then 7: %d remaining, want 2", v.D[0].Remaining)
	}
	s.Seed("k", one, decisions(1))
	if v := check(t, s, "k", one, 0); v.D[0].Remaining != 1 {
		t.Fatalf("after a report of 1: %d remaining", v.D[0].Remaining)
	}
	raised := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 100, Period: time.Hour})
	s.Seed("k", raised, decisions(60))
	if v := check(t, s, "k", raised, 0); v.D[0].Remaining != 60 {
		t.Fatalf("a report under another limit set: %d remaining, want 60", v.D[0].Remaining)
	}

	set := storetest.Rules(t,
		limit.Rule{Name: "m", Algorithm: limit.FixedWindow, Limit: 10, Period: time.Minute},
		limit.Rule{Name: "h", Algorithm: limit.SlidingWindowLog, Limit: 100, Period: time.Hour})
	s.Seed("pair", set, decisions(4, 90))
	s.Seed("pair", set, decisions(6, 80))
	v := check(t, s, "pair", set, 0)
	if v.D[0].Remaining != 4 || v.D[1].Remaining != 80 {
		t.Fatalf("merged pair: %d and %d remaining, want 4 and 80 (each rule's stricter)", v.D[0].Remaining, v.D[1].Remaining)
	}
}

// Seeds, checks and evictions of the same keys at once (run with -race).
func TestSeedConcurrent(t *testing.T) {
	s := New(Options{MaxKeys: 64, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 100, Period: time.Hour})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				key := fmt.Sprint("k", (i*7+w)%100)
				if w%2 == 0 {
					s.Seed(key, rules, decisions(int64(i%100)))
				} else {
					check(t, s, key, rules, 1)
				}
			}
		}()
	}
	wg.Wait()
	if n := s.Stats().Keys; n > 64 {
		t.Fatalf("%d keys held, bound 64", n)
	}
}

// BenchmarkSeed is the cost the local failure policy adds to every store
// answer of a distributed deployment: one seed of a held key.
func BenchmarkSeed(b *testing.B) {
	s := New(Options{SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(b, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Second})
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprint("bench:user-", i)
	}
	v := decisions(500)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.Seed(keys[i%len(keys)], rules, v)
			i++
		}
	})
}
