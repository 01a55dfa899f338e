package storetest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// testLeases, for a store that is a store.Leaser: takes and returns beside
// limit.Rule.Take and Refund on seeded timelines (the same units taken,
// the same bucket after, checks of the bucket included; the sum of the
// holders' standing reports), and concurrent takes that never hand out
// more than the bucket holds.
func testLeases(t *testing.T, newStore Factory) {
	clk := clocktest.New(Epoch)
	st := newStore(t, clk)
	ls, ok := st.(store.Leaser)
	if !ok {
		t.Skip("the store does not lease") // memstore and redisstore both do: see their tests
	}
	r := rule("global", limit.TokenBucket, 50, time.Second, 80)
	rules := []limit.Rule{r}
	for seed := uint64(1); seed <= 3; seed++ {
		clk.Set(Epoch)
		rng := rand.New(rand.NewPCG(seed, 21))
		key := "lease:ref:" + string(rune('a'+seed))
		var ref limit.State
		type standing struct {
			demand  float64
			expires int64
		}
		reports := map[string]standing{}
		var grants []store.Grant
		var refMarks []int64
		for i := 0; i < 300; i++ {
			switch rng.IntN(10) {
			case 0:
				clk.Advance(-time.Duration(rng.Int64N(int64(50 * time.Millisecond))))
			case 1, 2, 3:
			default:
				clk.Advance(time.Duration(rng.Int64N(int64(100 * time.Millisecond))))
			}
			now := clk.Now().UnixNano()
			switch op := rng.IntN(10); {
			case op < 6: // a take
				n := 1 + rng.Int64N(30)
				rep := store.Report{Holder: string(rune('a' + rng.IntN(3))), Demand: float64(rng.IntN(100_000)) / 7,
					For: time.Duration(1 + rng.Int64N(int64(2*time.Second)))}
				want, wd := r.Take(&ref, now, n)
				reports[rep.Holder] = standing{rep.Demand, now + int64(rep.For)}
				var demand float64
				for h, st := range reports {
					if st.expires <= now {
						delete(reports, h)
						continue
					}
					demand += st.demand
				}
				g, err := ls.Take(context.Background(), key, r, n, rep)
				if err != nil {
					t.Fatal(err)
				}
				wd.ResetAfter, g.Decision.ResetAfter = 0, 0 // a take's reset says nothing
				if g.Taken != want || g.Decision != wd {
					t.Fatalf("seed %d step %d: take %d: got %d %+v, want %d %+v", seed, i, n, g.Taken, g.Decision, want, wd)
				}
				// Redis returns the sum in thousandths.
				if d := g.Demand - demand; d > 1e-9*demand || d < -0.001-1e-9*demand {
					t.Fatalf("seed %d step %d: demand %v, want %v (%v)", seed, i, g.Demand, demand, reports)
				}
				if g.Taken > 0 {
					grants, refMarks = append(grants, g), append(refMarks, r.Mark(ref))
				}
			case op < 8 && len(grants) > 0: // a return of the last grant's unused units
				g, mark := grants[len(grants)-1], refMarks[len(refMarks)-1]
				grants, refMarks = grants[:len(grants)-1], refMarks[:len(refMarks)-1]
				unused := 1 + rng.Int64N(g.Taken)
				r.Refund(&ref, unused, mark)
				if err := ls.Return(context.Background(), key, r, g, unused); err != nil {
					t.Fatal(err)
				}
			default: // a check of the same bucket
				cost := rng.Int64N(3)
				refStates := []limit.State{ref}
				want, _ := limit.Apply(rules, refStates, now, cost)
				ref = refStates[0]
				if got := apply(t, st, key, rules, cost); got != want {
					t.Fatalf("seed %d step %d: check cost %d: got %+v, want %+v", seed, i, cost, got, want)
				}
			}
		}
	}
	// Concurrent takes hand out exactly what the bucket holds, no more.
	clk.Set(Epoch)
	big := rule("once", limit.TokenBucket, 1000, time.Hour, 0)
	var taken atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 32; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				g, err := ls.Take(context.Background(), "lease:conc", big, 1+int64(c%5)*7, store.Report{Holder: "c", Demand: 1, For: time.Second})
				if err != nil {
					t.Error(err)
					return
				}
				taken.Add(g.Taken)
			}
		}()
	}
	wg.Wait()
	if got := taken.Load(); got != 1000 {
		t.Fatalf("32 goroutines took %d units of a bucket of 1000", got)
	}
	ok1 := store.Report{Holder: "a", Demand: 1, For: time.Second}
	if _, err := ls.Take(context.Background(), "lease:w", rule("w", limit.FixedWindow, 5, time.Second, 0), 1, ok1); err == nil {
		t.Fatal("a fixed window was leased")
	}
	for _, bad := range []store.Report{{Demand: 1, For: time.Second}, {Holder: "a", Demand: -1, For: time.Second}, {Holder: "a", Demand: 1}} {
		if _, err := ls.Take(context.Background(), "lease:r", r, 1, bad); !errors.Is(err, store.ErrInvalidRequest) {
			t.Fatalf("report %+v: %v, want ErrInvalidRequest", bad, err)
		}
	}
}
