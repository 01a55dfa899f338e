package memstore

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

// verify checks a table against the keys it must hold (key word -> the
// value kept in entry.t): each is found by lookup from its home slot,
// unlocked; nothing else is held; no lock bit or moved mark is left.
func verify(t interface {
	Helper()
	Fatalf(string, ...any)
}, tb *table, want map[uint64]int64) {
	t.Helper()
	held := 0
	for i := range tb.slots {
		x := tb.slots[i].h.Load()
		if x&lockBit != 0 {
			t.Fatalf("slot %d: word %#x locked or moved", i, x)
		}
		if x != 0 {
			held++
		}
	}
	if held != len(want) {
		t.Fatalf("%d slots held, want %d", held, len(want))
	}
	for k, v := range want {
		i := tb.lookup(k)
		if i < 0 {
			t.Fatalf("key %#x not found from its home slot %d", k, int(k)&tb.mask)
		}
		if got := tb.slots[i].t; got != v {
			t.Fatalf("key %#x holds %d, want %d", k, got, v)
		}
	}
}

// TestTableAgainstMap runs random puts and removals on a 16-slot table
// whose keys crowd a few home slots, so probe runs are long and wrap
// around the end, and compares it with a map after every step.
func TestTableAgainstMap(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		tb := newTable(16)
		want := map[uint64]int64{}
		homes := rapid.SliceOfN(rapid.IntRange(0, 15), 1, 4).Draw(rt, "homes")
		for step := range rapid.IntRange(1, 200).Draw(rt, "steps") {
			home := homes[rapid.IntRange(0, len(homes)-1).Draw(rt, "home")]
			k := uint64(rapid.IntRange(1, 6).Draw(rt, "id"))<<32 | uint64(home)
			if _, held := want[k]; held {
				i := tb.lookup(k)
				if i < 0 || !tb.acquire(i, k) {
					rt.Fatalf("step %d: held key %#x not found", step, k)
				}
				tb.removeAt(i)
				delete(want, k)
			} else if len(want) < 12 {
				if tb.lookup(k) >= 0 {
					rt.Fatalf("step %d: absent key %#x found", step, k)
				}
				tb.put(k, &entry{t: int64(step)})
				want[k] = int64(step)
			}
			verify(rt, tb, want)
		}
	})
}

func TestTableWrapsAround(t *testing.T) {
	tb := newTable(8)
	want := map[uint64]int64{}
	for id := uint64(1); id <= 4; id++ { // all at home 6: slots 6, 7, 0, 1
		k := id<<32 | 6
		tb.put(k, &entry{t: int64(id)})
		want[k] = int64(id)
	}
	if got := tb.slots[1].h.Load(); got != 4<<32|6 {
		t.Fatalf("slot 1 holds %#x, want the fourth key", got)
	}
	i := tb.lookup(1<<32 | 6)
	tb.acquire(i, 1<<32|6)
	tb.removeAt(i) // the rest shift back across the end
	delete(want, 1<<32|6)
	verify(t, tb, want)
	if got := tb.slots[0].h.Load(); got != 4<<32|6 {
		t.Fatalf("slot 0 holds %#x, want the fourth key shifted back", got)
	}
}

// A lookup without the shard mutex ends at a moved mark, and acquire fails
// on a slot whose key changed, so a check falls back to the slow path.
func TestTableMovedAndChangedSlots(t *testing.T) {
	tb := newTable(8)
	tb.put(1<<32|3, &entry{})
	if !tb.acquire(3, 1<<32|3) {
		t.Fatal("acquire of a held key failed")
	}
	tb.release(3, 1<<32|3)
	tb.slots[3].h.Store(moved)
	if i := tb.lookup(1<<32 | 3); i != -1 {
		t.Fatalf("lookup found slot %d of a moved table", i)
	}
	if tb.acquire(3, 1<<32|3) {
		t.Fatal("acquire succeeded on a moved slot")
	}
}

// shardState checks every shard of s as verify does, without a reference:
// counts match, every key is reachable, no lock bit is left behind, and a
// table is never over 3/4 full.
func shardState(t *testing.T, s *Store) (keys int) {
	t.Helper()
	for si := range s.shards {
		sh := &s.shards[si]
		sh.mu.Lock()
		tb := sh.cur.Load()
		held := 0
		if tb != nil {
			for i := range tb.slots {
				x := tb.slots[i].h.Load()
				if x&lockBit != 0 {
					t.Fatalf("shard %d slot %d: word %#x locked or moved", si, i, x)
				}
				if x == 0 {
					continue
				}
				held++
				if j := tb.lookup(x); j != i {
					t.Fatalf("shard %d: key in slot %d found at %d", si, i, j)
				}
			}
			if held*4 > len(tb.slots)*3 {
				t.Fatalf("shard %d: %d keys in %d slots", si, held, len(tb.slots))
			}
		}
		if held != sh.n {
			t.Fatalf("shard %d: %d slots held, count says %d", si, held, sh.n)
		}
		keys += held
		sh.mu.Unlock()
	}
	if n := s.keys.Load(); n != int64(keys) {
		t.Fatalf("%d keys held, the global count says %d", keys, n)
	}
	return keys
}

// TestChecksExactUnderRestructuring is the table's concurrency test: checks
// of held subjects, which take no shard lock, run while other goroutines
// make the same shard insert, grow, remove (shifting entries), evict and
// shrink. Every held subject must admit exactly its limit: an update lost to
// a move would admit more.
func TestChecksExactUnderRestructuring(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	// No bound: at one, eviction may take a held subject when the entries it
	// samples are all held ones (TestBoundHoldsUnderConcurrentInserts runs
	// eviction under concurrency).
	s := New(Options{Clock: clk, Shards: 1, MaxKeys: 1 << 30, SweepInterval: -1})
	defer s.Close()
	held := storetest.Rules(t, limit.Rule{Name: "h", Algorithm: limit.FixedWindow, Limit: 1000, Period: time.Hour})
	// Churned subjects are fresh again one microsecond after a check, so the
	// sweeper and every insert's sampling drop them.
	churn := storetest.Rules(t, limit.Rule{Name: "c", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Millisecond})

	stop := make(chan struct{})
	var churners sync.WaitGroup
	for g := range 2 {
		loop(&churners, stop, func(i int) { check(t, s, fmt.Sprintf("churn-%d-%d", g, i), churn, 1) })
	}
	loop(&churners, stop, func(int) {
		clk.Advance(time.Microsecond) // well under a second in all: the hour window holds
		s.Sweep()
	})
	for s.Stats().Expired < 1000 { // restructuring is under way before the checks start
		runtime.Gosched()
	}

	// Each checker goes round all subjects 400 times from its own offset:
	// 1600 tries for a limit of 1000.
	const subjects, checkers, rounds = 64, 4, 400
	admitted := checkRound(t, s, held, subjects, checkers, rounds)
	close(stop)
	churners.Wait()

	st := s.Stats()
	if st.Expired == 0 {
		t.Fatalf("stats %+v: nothing was removed while the checks ran", st)
	}
	for i, sum := range admitted {
		if sum != 1000 {
			t.Errorf("held-%d admitted %d of 1600 tries, want exactly 1000", i, sum)
		}
	}
	shardState(t, s)
	// The held subjects are all still there and exhausted.
	for i := range subjects {
		if check(t, s, fmt.Sprintf("held-%d", i), held, 1).Allowed {
			t.Fatalf("held-%d was forgotten", i)
		}
	}
}

// After a flood the tables give their memory back: Sweep shrinks a table
// under 1/8 full and drops an empty one.
func TestSweepShrinksTables(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, Shards: 2, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 1, Period: time.Second})
	keep := storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 1, Period: time.Hour})
	for i := range 10_000 {
		check(t, s, fmt.Sprintf("flood-%d", i), rules, 1)
	}
	check(t, s, "stays", keep, 1)
	slots := func() (n int) {
		for i := range s.shards {
			if tb := s.shards[i].cur.Load(); tb != nil {
				n += len(tb.slots)
			}
		}
		return n
	}
	if n := slots(); n < 10_001 {
		t.Fatalf("%d slots for 10,001 keys", n)
	}
	clk.Advance(time.Second)
	if n := s.Sweep(); n != 10_000 {
		t.Fatalf("swept %d, want the 10,000 refilled subjects", n)
	}
	if n := slots(); n != minSlots {
		t.Fatalf("%d slots after the flood, want one minimal table (%d) for the one key left", n, minSlots)
	}
	if keys := shardState(t, s); keys != 1 {
		t.Fatalf("%d keys, want 1", keys)
	}
	if v := check(t, s, "stays", keep, 1); v.Allowed {
		t.Fatal("the live subject was lost in the shrink")
	}
}

// A check that panics while it holds a slot (a bug in limit, say; net/http
// recovers handler panics and serves on) must not leave the slot locked, or
// every later check of the subject would wait forever.
func TestPanicUnderSlotLockReleasesIt(t *testing.T) {
	s := New(Options{Clock: clocktest.New(storetest.Epoch), Shards: 1, SweepInterval: -1})
	defer s.Close()
	rules := storetest.Rules(t,
		limit.Rule{Name: "a", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Second},
		limit.Rule{Name: "b", Algorithm: limit.FixedWindow, Limit: 100, Period: time.Minute})
	check(t, s, "k", rules, 1)
	tb := s.shards[0].cur.Load()
	i := 0
	for tb.slots[i].h.Load() == 0 {
		i++
	}
	tb.slots[i].more = nil // the states of a two-rule set are behind it: the next check panics
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the check did not panic")
			}
		}()
		s.Apply(context.Background(), store.Request{Key: "k", Rules: rules, Cost: 1})
	}()
	if w := tb.slots[i].h.Load(); w&lockBit != 0 {
		t.Fatalf("slot word %#x: left locked", w)
	}
}

// Eviction samples entries, unlocks them, and removes the expired ones (or
// the victim) afterwards; checks of held subjects refresh entries without
// the shard mutex in between. An entry refreshed after it was sampled must
// not be removed, or its new consumption is lost. Here subjects whose
// windows have just rolled over (expired entries) are checked while a flood
// of new subjects at the bound samples and evicts around them: each
// subject must admit exactly its limit in every window.
func TestEvictionSparesEntriesRefreshedAfterSampling(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, Shards: 1, MaxKeys: 256, SweepInterval: -1})
	defer s.Close()
	held := storetest.Rules(t, limit.Rule{Name: "h", Algorithm: limit.FixedWindow, Limit: 50, Period: time.Millisecond})
	churn := storetest.Rules(t, limit.Rule{Name: "c", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Millisecond})

	stop := make(chan struct{})
	var churners sync.WaitGroup
	for g := range 2 {
		loop(&churners, stop, func(i int) { check(t, s, fmt.Sprintf("churn-%d-%d", g, i), churn, 1) })
	}
	for s.Stats().Evictions+s.Stats().Expired < 1000 {
		runtime.Gosched()
	}

	const subjects, checkers, windows, tries = 16, 2, 200, 40 // 80 tries a window for 50
	for w := range windows {
		for i, sum := range checkRound(t, s, held, subjects, checkers, tries) {
			if sum != 50 {
				t.Errorf("window %d: held-%d admitted %d of 80, want exactly 50", w, i, sum)
			}
		}
		clk.Advance(time.Millisecond) // every held entry is now expired until checked again
	}
	close(stop)
	churners.Wait()
	if st := s.Stats(); st.Keys > 256 {
		t.Fatalf("stats %+v: over the bound", st)
	}
	shardState(t, s)
}

// The conformance suite's linearizability check, on one shard whose table
// restructures under the checks: the checked keys' entries expire between
// rounds (periods of 1s, the clock moves 2s), so sweeps drop them while the
// next round checks them again; other goroutines insert short-lived keys
// into the same table (growth, backward shifts) and sweep (shrinks). The
// history must still be linearizable against limit.Apply, key by key.
func TestLinearizableUnderRestructuring(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, Shards: 1, SweepInterval: -1})
	defer s.Close()
	churn := storetest.Rules(t, limit.Rule{Name: "c", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Millisecond})
	var round atomic.Int64
	storetest.CheckLinearizable(t, s, clk, storetest.LinOptions{
		Rules: storetest.Rules(t,
			limit.Rule{Name: "tb", Algorithm: limit.TokenBucket, Limit: 30, Period: time.Second},
			limit.Rule{Name: "fw", Algorithm: limit.FixedWindow, Limit: 80, Period: time.Second},
			limit.Rule{Name: "swl", Algorithm: limit.SlidingWindowLog, Limit: 35, Period: time.Second}),
		Phases:  8,
		Advance: 2 * time.Second,
		Background: func(stop <-chan struct{}) {
			r := round.Add(1)
			var wg sync.WaitGroup
			// New keys: inserts, growth, shifts on removal.
			loop(&wg, stop, func(i int) { check(t, s, fmt.Sprintf("churn-%d-%d", r, i), churn, 1) })
			// Drops what the last move of the clock expired, shrinks.
			loop(&wg, stop, func(int) { s.Sweep(); runtime.Gosched() })
			wg.Wait()
		},
	})
	if st := s.Stats(); st.Expired == 0 {
		t.Fatalf("stats %+v: nothing expired during the rounds", st)
	}
}

// loop calls f(0), f(1), ... on a new goroutine counted by wg until stop
// is closed.
func loop(wg *sync.WaitGroup, stop <-chan struct{}, f func(i int)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f(i)
		}
	}()
}

// checkRound has checkers goroutines each go round subjects held-0 ..
// held-(subjects-1) rounds times, from its own offset, and returns how
// many checks of each subject were admitted.
func checkRound(t *testing.T, s *Store, rules []limit.Rule, subjects, checkers, rounds int) []int {
	t.Helper()
	admitted := make([][]int, checkers)
	var wg sync.WaitGroup
	for g := range checkers {
		admitted[g] = make([]int, subjects)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds * subjects {
				i := (r + g*subjects/checkers) % subjects
				if check(t, s, fmt.Sprintf("held-%d", i), rules, 1).Allowed {
					admitted[g][i]++
				}
			}
		}()
	}
	wg.Wait()
	sums := make([]int, subjects)
	for _, a := range admitted {
		for i, n := range a {
			sums[i] += n
		}
	}
	return sums
}

// Multi-part checks (ApplyAll) hold several shards' mutexes and slot locks
// at once: under the same restructuring, mixed with single checks of the
// same keys, they neither deadlock nor lose an update. Every multi-part
// check charges a user (fresh each time, in any shard) and one of four
// shared keys; single checks charge the shared keys too. Each shared key
// admits exactly its limit.
func TestApplyAllExactUnderRestructuring(t *testing.T) {
	clk := clocktest.New(storetest.Epoch)
	s := New(Options{Clock: clk, Shards: 4, MaxKeys: 1 << 30, SweepInterval: -1})
	defer s.Close()
	shared := storetest.Rules(t, limit.Rule{Name: "s", Algorithm: limit.FixedWindow, Limit: 500, Period: time.Hour})
	user := storetest.Rules(t, limit.Rule{Name: "u", Algorithm: limit.TokenBucket, Limit: 1, Period: time.Hour})
	churn := storetest.Rules(t, limit.Rule{Name: "c", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Millisecond})

	stop := make(chan struct{})
	var churners sync.WaitGroup
	loop(&churners, stop, func(i int) { check(t, s, fmt.Sprintf("churn-%d", i), churn, 1) })
	loop(&churners, stop, func(int) {
		clk.Advance(time.Microsecond)
		s.Sweep()
	})
	for s.Stats().Expired < 1000 {
		runtime.Gosched()
	}
	var admitted [4]atomic.Int64
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 600 {
				k := (g + i) % 4
				key := fmt.Sprintf("shared-%d", k)
				if g%3 == 0 { // single checks of the shared keys
					if check(t, s, key, shared, 1).Allowed {
						admitted[k].Add(1)
					}
					continue
				}
				reqs := []store.Request{{Key: fmt.Sprintf("user-%d-%d", g, i), Rules: user, Cost: 1}, {Key: key, Rules: shared, Cost: 1}}
				ok, err := s.ApplyAll(context.Background(), reqs, make([]limit.Verdict, 2))
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					admitted[k].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	churners.Wait()
	for k := range admitted {
		if n := admitted[k].Load(); n != 500 {
			t.Errorf("shared-%d admitted %d of 900 tries, want exactly 500", k, n)
		}
	}
	shardState(t, s)
}
