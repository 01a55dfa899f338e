package memstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clk *clocktest.Fake) store.Store {
		s := New(Options{Clock: clk, SweepInterval: -1})
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestConformanceOneShard(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clk *clocktest.Fake) store.Store {
		s := New(Options{Clock: clk, Shards: 1, SweepInterval: -1})
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func check(t testing.TB, s *Store, key string, rules []limit.Rule, cost int64) limit.Verdict {
	t.Helper()
	v, err := s.Apply(context.Background(), store.Request{Key: key, Rules: rules, Cost: cost})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestExpiredEntriesAreDropped(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Second})
	for i := 0; i < 50; i++ {
		check(t, s, fmt.Sprintf("k%d", i), rules, 1)
	}
	if got := s.Stats().Keys; got != 50 {
		t.Fatalf("keys = %d, want 50", got)
	}
	clk.Advance(99 * time.Millisecond) // one token takes 100ms to refill
	if n := s.Sweep(); n != 0 {
		t.Fatalf("swept %d live entries", n)
	}
	clk.Advance(time.Millisecond)
	if n := s.Sweep(); n != 50 {
		t.Fatalf("swept %d, want all 50 refilled entries", n)
	}
	if st := s.Stats(); st.Keys != 0 || st.Expired != 50 || st.Evictions != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestDeniedAndPeekingRequestsLeaveNoEntry(t *testing.T) {
	s := New(Options{Clock: clocktest.New(storetest.Epoch), SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.FixedWindow, Limit: 2, Period: time.Minute})
	check(t, s, "peek", rules, 0)
	check(t, s, "huge", rules, 3)
	if got := s.Stats().Keys; got != 0 {
		t.Fatalf("keys = %d after a peek and an impossible request, want 0", got)
	}
}

// At the bound, an insert evicts the sampled entry closest to fresh: a subject
// being limited (state far in the future) survives a flood of new subjects.
func TestBoundEvictsEntriesClosestToFresh(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, MaxKeys: 100, Shards: 1, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour})
	check(t, s, "abuser", rules, 10) // exhausted: state one hour ahead
	for i := 0; i < 10_000; i++ {
		check(t, s, fmt.Sprintf("flood-%d", i), rules, 1) // six minutes ahead each
	}
	st := s.Stats()
	if st.Keys != 100 {
		t.Fatalf("keys = %d, want the bound 100", st.Keys)
	}
	if st.Evictions != 10_000-99 {
		t.Fatalf("evictions = %d, want %d", st.Evictions, 10_000-99)
	}
	if v := check(t, s, "abuser", rules, 1); v.Allowed {
		t.Fatal("the limited subject was evicted by the flood and got a fresh bucket")
	}
}

// The attack of the issue: a limit set whose window rule keeps state two
// periods from its window's start, spent or not (a per-hour sliding window
// counter), so that ordering by expiry alone evicted first the subject
// whose window started earliest: the one being limited, whose spending
// began before the flood's. Ordered by what an entry carries, the limited
// subject (its token bucket spent) survives a flood of twice the bound of
// new subjects that each spent one unit, and keeps what it spent of the
// bucket and of the window.
func TestBoundKeepsLimitedSubjectUnderWindowRules(t *testing.T) {
	clk := clocktest.New(storetest.Epoch.Add(59 * time.Minute))
	s := New(Options{Clock: clk, MaxKeys: 1000, Shards: 1, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t,
		limit.Rule{Name: "per-hour", Algorithm: limit.TokenBucket, Limit: 5, Period: time.Hour},
		limit.Rule{Name: "per-hour-window", Algorithm: limit.SlidingWindowCounter, Limit: 50, Period: time.Hour})
	for range 5 {
		check(t, s, "limited", rules, 1)
	}
	if v := check(t, s, "limited", rules, 1); v.Allowed {
		t.Fatal("the sixth check was allowed")
	}
	clk.Advance(2 * time.Minute) // the flood's window starts an hour after the limited subject's
	before := check(t, s, "limited", rules, 0)
	for i := range 2000 {
		check(t, s, fmt.Sprintf("flood-%d", i), rules, 1)
	}
	v := check(t, s, "limited", rules, 0)
	if v.Allowed || v != before {
		t.Fatalf("after a flood of 2x the bound: %+v, want what it was before: %+v", v, before)
	}
	if st := s.Stats(); st.Keys > 1000 || st.Evictions < 1000 {
		t.Fatalf("stats %+v: want the bound held by evicting flood subjects", st)
	}
}

// Live entries that carry nothing (a sliding window whose previous count has
// faded) go before any that carries spent budget, and are counted apart.
func TestBoundDropsEntriesThatCarryNothing(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, MaxKeys: 8, Shards: 1, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "w", Algorithm: limit.SlidingWindowCounter, Limit: 100, Period: time.Minute})
	for i := range 7 {
		check(t, s, fmt.Sprintf("faded-%d", i), rules, 1)
	}
	clk.Advance(2*time.Minute - time.Second) // the previous window's 1 weighs floor(1 x 1/60) = 0
	check(t, s, "spent", rules, 50)
	check(t, s, "new", rules, 1)
	st := s.Stats()
	if st.Evictions != 0 || st.FreshEvictions == 0 || st.Keys > 8 {
		t.Fatalf("stats %+v: an entry that carries nothing must go before one that carries spent budget", st)
	}
	if v := check(t, s, "spent", rules, 0); v.D[0].Remaining != 50 {
		t.Fatalf("the spent subject has %d left, want 50", v.D[0].Remaining)
	}
}

func TestBoundPrefersExpiredEntries(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, MaxKeys: 8, Shards: 1, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 1, Period: time.Second})
	for i := 0; i < 8; i++ {
		check(t, s, fmt.Sprintf("old-%d", i), rules, 1)
	}
	clk.Advance(time.Second)
	check(t, s, "new", rules, 1)
	if st := s.Stats(); st.Evictions != 0 || st.Expired == 0 || st.Keys > 8 {
		t.Fatalf("stats = %+v: expired entries must go before any live one", st)
	}
}

func TestJanitorSweeps(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, SweepInterval: time.Millisecond})
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 1, Period: time.Second})
	check(t, s, "k", rules, 1)
	clk.Advance(time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Keys != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the janitor did not drop the expired entry within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// Concurrent inserts never take the store past its bound, not even by one.
func TestBoundHoldsUnderConcurrentInserts(t *testing.T) {
	s := New(Options{Clock: clocktest.New(storetest.Epoch), MaxKeys: 64, Shards: 4, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour})
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				check(t, s, fmt.Sprintf("g%d-%d", g, i), rules, 1)
				if n := s.Stats().Keys; n > 64 {
					t.Errorf("%d keys held, bound 64", n)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if st := s.Stats(); st.Keys != 64 || st.Evictions+st.Unstored != 16*2000-64 {
		t.Fatalf("stats %+v: want the bound held and every other insert evicting or unstored", st)
	}
}

// A limit set that changes under a held subject (a reload) keeps the entry
// as long as the new set needs it, even when the first check after the
// change is denied and so writes nothing back.
func TestRealignedEntryLivesAsLongAsTheNewSetNeedsIt(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, SweepInterval: -1})
	defer s.Close()
	perSecond := storetest.Rules(t, limit.Rule{Name: "w", Algorithm: limit.FixedWindow, Limit: 1, Period: time.Second})
	perHour := storetest.Rules(t, limit.Rule{Name: "w", Algorithm: limit.FixedWindow, Limit: 1, Period: time.Hour})
	if !check(t, s, "k", perSecond, 1).Allowed {
		t.Fatal("first check denied")
	}
	// The hour window contains the second's window start: the count carries.
	if check(t, s, "k", perHour, 1).Allowed {
		t.Fatal("the carried count was lost on the period change")
	}
	clk.Advance(time.Second)
	if n := s.Sweep(); n != 0 {
		t.Fatalf("swept %d entries: the hour window still needs its count", n)
	}
	if check(t, s, "k", perHour, 1).Allowed {
		t.Fatal("allowed a second unit in the hour window")
	}
}
