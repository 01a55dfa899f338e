package audit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/audit"
	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func rule(t testing.TB, alg limit.Algorithm, n int64, per time.Duration) limit.Rule {
	t.Helper()
	r, err := limit.Rule{Name: alg.String(), Algorithm: alg, Limit: n, Period: per}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checker is a service on the memory store with an auditor of every
// subject, on a fake clock.
func checker(t testing.TB, r limit.Rule, o audit.Options) (*service.Service, *audit.Auditor, *clocktest.Fake) {
	t.Helper()
	clk := clocktest.New(epoch)
	snap, err := policy.New([]policy.Namespace{{Name: "orders", Rules: []limit.Rule{r}}}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	o.Clock = clk
	a := audit.New(o)
	st := memstore.New(memstore.Options{Clock: clk})
	t.Cleanup(func() { st.Close() })
	svc, err := service.New(st, snap, service.Options{Clock: clk, Observer: a})
	if err != nil {
		t.Fatal(err)
	}
	return svc, a, clk
}

func over(s audit.Stats) (o, u int64) {
	for _, c := range s.Counts {
		o, u = o+c.Over, u+c.Under
	}
	return o, u
}

// On the memory store the audit agrees with every exact algorithm: 0
// over-admissions and 0 under-admissions, over random timelines of
// concurrent checks of many subjects.
func TestExactStoreAuditsClean(t *testing.T) {
	for _, alg := range []limit.Algorithm{limit.TokenBucket, limit.LeakyBucket, limit.FixedWindow, limit.SlidingWindowLog} {
		t.Run(alg.String(), func(t *testing.T) {
			svc, a, clk := checker(t, rule(t, alg, 20, time.Second), audit.Options{Rate: 1, Exclusive: true})
			rng := rand.New(rand.NewPCG(1, 2))
			for step := range 400 {
				clk.Advance(time.Duration(rng.IntN(40)) * time.Millisecond)
				var wg sync.WaitGroup
				for c := range 8 {
					wg.Go(func() {
						svc.Check(context.Background(), service.Request{Namespace: "orders", Subject: fmt.Sprint("s", (step+c)%5), Cost: 1 + int64(c%2)})
					})
				}
				wg.Wait()
				if step%50 == 49 {
					a.Replay(clk.Now().UnixNano())
				}
			}
			a.Replay(clk.Now().UnixNano())
			s := a.Stats()
			o, u := over(s)
			if s.Checks["orders"] != 3200 || o != 0 || u != 0 || s.Dropped != 0 {
				t.Errorf("audited %d checks (want 3200), %d over, %d under, %d dropped: want all 0", s.Checks["orders"], o, u, s.Dropped)
			}
		})
	}
}

// The sliding window counter is audited against the exact log of its
// limit: a previous window spent late and assumed uniform lets the counter
// admit what the log denies.
func TestSlidingCounterApproximationIsSeen(t *testing.T) {
	svc, a, clk := checker(t, rule(t, limit.SlidingWindowCounter, 10, time.Second), audit.Options{Rate: 1, Exclusive: true})
	check := func() bool {
		res, err := svc.Check(context.Background(), service.Request{Namespace: "orders", Subject: "u", Cost: 1})
		if err != nil {
			t.Fatal(err)
		}
		return res.Verdict.Allowed
	}
	clk.Set(epoch.Add(900 * time.Millisecond)) // late in the first window
	for range 10 {
		check()
	}
	clk.Set(epoch.Add(1500 * time.Millisecond)) // the counter weighs the first window at half
	admitted := 0
	for range 10 {
		if check() {
			admitted++
		}
	}
	a.Replay(clk.Now().UnixNano())
	o, u := over(a.Stats())
	if admitted != 5 || o != 5 || u != 0 {
		t.Errorf("at 1.5s the counter admitted %d (want 5), the audit counts %d over (want 5: the log holds 10 in the last second) and %d under", admitted, o, u)
	}
}

// result is what the service reports for a check decided by a store at
// at: the audit's input, for the cases a store must not produce.
func result(r []limit.Rule, subject string, allowed bool, at time.Time, by service.DecidedBy) service.Result {
	ns := &policy.Namespace{Name: "orders"}
	v := limit.Verdict{Allowed: allowed, At: at.UnixNano(), N: 1}
	v.D[0] = limit.Decision{Allowed: allowed, Limit: r[0].Limit}
	return service.Result{Namespace: "orders", Subject: subject, Cost: 1, Set: policy.LimitSet{Namespace: ns, Rules: r}, Verdict: v, DecidedBy: by}
}

// A store that forgot a spent budget (a restart without persistence, a
// failover that lost writes, an evicted entry) admits it again: every such
// admission is an over-admission. Observed out of order within the
// horizon, the checks are replayed in the order they were decided.
func TestForgottenBudgetIsOverAdmission(t *testing.T) {
	rules := []limit.Rule{rule(t, limit.TokenBucket, 10, time.Hour)}
	clk := clocktest.New(epoch)
	a := audit.New(audit.Options{Rate: 1, Clock: clk})
	var results []service.Result
	for i := range 10 {
		results = append(results, result(rules, "u", true, epoch.Add(time.Duration(i)*time.Millisecond), service.DecidedByStore))
	}
	for i := range 4 { // the store lost its state and admits again
		results = append(results, result(rules, "u", true, epoch.Add(time.Second+time.Duration(i)*time.Millisecond), service.DecidedByStore))
	}
	// Observed in reverse: the audit sorts them by their instants.
	for i := len(results) - 1; i >= 0; i-- {
		a.ObserveCheck(results[i], nil, 0)
	}
	a.Replay(epoch.Add(2 * time.Second).UnixNano())
	s := a.Stats()
	if o, u := over(s); o != 4 || u != 0 || s.Checks["orders"] != 14 {
		t.Errorf("%d over, %d under of %d checks: want 4 over of 14", o, u, s.Checks["orders"])
	}
	if len(s.Counts) != 1 || s.Counts[0].Limit != "token_bucket" {
		t.Errorf("counts %+v: want one, of limit token_bucket", s.Counts)
	}
	// A check decided before the last replay's cut, observed only now,
	// cannot be replayed in order: it is dropped, not misjudged.
	a.ObserveCheck(result(rules, "u", true, epoch.Add(time.Second/2), service.DecidedByStore), nil, 0)
	a.Replay(epoch.Add(3 * time.Second).UnixNano())
	if s := a.Stats(); s.Dropped != 1 || s.Checks["orders"] != 14 {
		t.Errorf("a late check: dropped %d, audited %d: want 1 dropped", s.Dropped, s.Checks["orders"])
	}
}

// Under-admissions are counted only where this process holds every state
// (Exclusive): elsewhere another instance's admissions explain a denial.
func TestUnderAdmissionOnlyWhenExclusive(t *testing.T) {
	rules := []limit.Rule{rule(t, limit.TokenBucket, 10, time.Hour)}
	for _, exclusive := range []bool{false, true} {
		a := audit.New(audit.Options{Rate: 1, Exclusive: exclusive, Clock: clocktest.New(epoch)})
		a.ObserveCheck(result(rules, "u", true, epoch, service.DecidedByStore), nil, 0)
		a.ObserveCheck(result(rules, "u", false, epoch.Add(time.Millisecond), service.DecidedByStore), nil, 0)
		a.Replay(epoch.Add(time.Second).UnixNano())
		_, u := over(a.Stats())
		if want := map[bool]int64{false: 0, true: 1}[exclusive]; u != want {
			t.Errorf("exclusive %v: %d under-admissions, want %d", exclusive, u, want)
		}
	}
}

// Subjects are sampled by a hash of namespace and subject: the same set on
// every auditor, about Rate of them, none at 0.
func TestSampling(t *testing.T) {
	a, b := audit.New(audit.Options{Rate: 0.1}), audit.New(audit.Options{Rate: 0.1})
	off := audit.New(audit.Options{})
	n := 0
	for i := range 20_000 {
		s := fmt.Sprint("user-", i)
		if a.Sampled("orders", s) != b.Sampled("orders", s) {
			t.Fatalf("%s: the two auditors disagree", s)
		}
		if off.Sampled("orders", s) {
			t.Fatalf("%s sampled at rate 0", s)
		}
		if a.Sampled("orders", s) {
			n++
		}
	}
	if n < 1800 || n > 2200 {
		t.Errorf("sampled %d of 20,000 at rate 0.1", n)
	}
}

// Run replays on every tick and once more when its context ends.
func TestRun(t *testing.T) {
	rules := []limit.Rule{rule(t, limit.TokenBucket, 1, time.Hour)}
	clk := clocktest.New(epoch)
	a := audit.New(audit.Options{Rate: 1, Clock: clk})
	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx, tick) }()
	a.ObserveCheck(result(rules, "u", true, epoch, service.DecidedByStore), nil, 0)
	clk.Advance(time.Second)
	tick <- clk.Now()
	a.ObserveCheck(result(rules, "u", true, clk.Now(), service.DecidedByStore), nil, 0)
	cancel()
	<-done
	if s := a.Stats(); s.Checks["orders"] != 2 {
		t.Errorf("replayed %d checks, want 2", s.Checks["orders"])
	}
	if o, _ := over(a.Stats()); o != 1 {
		t.Errorf("%d over-admissions, want 1 (a limit of 1 admitted twice)", o)
	}
}
