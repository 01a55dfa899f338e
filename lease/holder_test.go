package lease_test

import (
	"math"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

const lease500 = 500 * time.Millisecond

// bucket is a shared bucket in this process, as a store keeps it:
// limit.Rule.Take and Refund on one State, and the holders' demands.
type bucket struct {
	r       limit.Rule
	s       limit.State
	demands map[*lease.Holder]float64
}

// take is h's take a.
func (b *bucket) take(h *lease.Holder, now time.Time, a lease.Ask) store.Grant {
	taken, d := b.r.Take(&b.s, now.UnixNano(), a.N)
	if b.demands == nil {
		b.demands = map[*lease.Holder]float64{}
	}
	b.demands[h] = a.Demand
	var sum float64
	for _, v := range b.demands {
		sum += v
	}
	return store.Grant{Taken: taken, Decision: d, Mark: b.r.Mark(b.s), Demand: sum}
}

func (b *bucket) giveBack(rets []lease.Return) {
	for _, r := range rets {
		b.r.Refund(&b.s, r.Unused, r.Grant.Mark)
	}
}

func TestHolderFirstCheckWaitsForATake(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	h := lease.NewHolder(sr, lease500)
	st := h.Check(t0, 1, 3, true)
	if st.Decided || st.Ask != (lease.Ask{N: 1}) {
		t.Fatalf("first check: %+v, want undecided and a take of 1 (no demand seen yet)", st)
	}
	if again := h.Check(t0, 1, 3, true); again.Decided || again.Ask.N != 0 {
		t.Fatalf("a second check while the take is in flight: %+v, want it to wait, with no second take", again)
	}
	b := &bucket{r: sr}
	h.Granted(t0, t0, st.Ask, b.take(h, t0, st.Ask))
	st = h.Check(t0, 1, 3, true)
	if !st.Decided || !st.Allowed || h.Avail() != 0 {
		t.Fatalf("after the grant: %+v, avail %d; want allowed from the slice", st, h.Avail())
	}
	// One check in the first 100ms reads 10.5/s: half a lease is 3.
	if st.Ask.N != 3 || math.Abs(st.Ask.Demand-10.508) > 0.001 {
		t.Errorf("the slice is empty: ask %+v, want 3 units, reporting 10.508/s", st.Ask)
	}
}

func TestHolderWithoutWaitDeniesAndAsks(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	h := lease.NewHolder(sr, lease500)
	st := h.Check(t0, 1, 3, false)
	// Counted before it asks: one check in 100ms reads 10.5/s, wants 3.
	if !st.Decided || st.Allowed || st.Ask.N != 3 || st.RetryAfter != time.Millisecond {
		t.Fatalf("first check without wait: %+v, want denied (retry one unit), asking 3", st)
	}
	if st := h.Check(t0, 1, 3, false); !st.Decided || st.Allowed || st.Ask.N != 0 {
		t.Fatalf("while asking: %+v, want denied and no second take", st)
	}
	h.Failed()
	if st := h.Check(t0, 1, 3, false); st.Ask.N == 0 {
		t.Fatalf("after a failed take: %+v, want another take", st)
	}
}

// A steady demand: the holder holds half a lease of it, asks before it
// runs out, and costs few takes.
func TestHolderSteadyDemandPrefetches(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	b := &bucket{r: sr}
	h := lease.NewHolder(sr, lease500)
	var takes, allowed int64
	now := t0
	for i := range 10_000 { // 500 checks a second for 20 s
		now = t0.Add(time.Duration(i) * 2 * time.Millisecond)
		for _, r := range h.Expire(now, nil) {
			t.Fatalf("check %d: %d units expired unspent at a steady demand", i, r.Unused)
		}
		st := h.Check(now, 1, 3, true)
		for !st.Decided {
			takes++
			h.Granted(now, now, st.Ask, b.take(h, now, st.Ask))
			st = h.Check(now, 1, 3, true)
		}
		if !st.Allowed {
			t.Fatalf("check %d denied at 500/s of a 1000/s limit: %+v", i, st)
		}
		allowed++
		if st.Ask.N > 0 {
			takes++
			h.Granted(now, now, st.Ask, b.take(h, now, st.Ask)) // answered at once
		}
	}
	if c, _ := h.Contended(); allowed != 10_000 || c {
		t.Fatalf("allowed %d of 10000, contended %v", allowed, c)
	}
	// At 500/s the holder wants 125 units (half a lease of demand) and
	// takes at least 63 at a time once its estimate has settled.
	if got := float64(takes) / float64(allowed); got > 0.02 {
		t.Errorf("%d takes for %d checks (%.3f per check), want at most 0.02", takes, allowed, got)
	}
	if d := h.Demand(now); math.Abs(d-500) > 5 {
		t.Errorf("demand estimate %.1f/s, want 500 within 1%%", d)
	}
	if want := lease.Size(500, lease500, sr, 3); h.Avail() > want || want != 125 {
		t.Errorf("holds %d, more than half a lease of demand (%d, want 125)", h.Avail(), want)
	}
	if got := b.demands[h]; math.Abs(got-500) > 5 {
		t.Errorf("the holder reported %.1f/s, want about 500", got)
	}
}

// Three holders share a bucket of 1,000/s (burst 1,000, leased at 500ms)
// with no delay between them and the store, under demands of 1,800, 900
// and 300 a second for 20 s: they never admit more than the limit allows,
// use at least 97% of it, share it as their demands (within 2 points
// after the first 2 s), and take at most once per hundred checks.
func TestHoldersShareAContendedLimitByDemand(t *testing.T) {
	user := rule(t, limit.TokenBucket, 1000, 1000)
	sr, d, err := lease.Lease(user, lease500)
	if err != nil {
		t.Fatal(err)
	}
	b := &bucket{r: sr}
	demand := []float64{1800, 900, 300}
	hs := make([]*lease.Holder, len(demand))
	for i := range hs {
		hs[i] = lease.NewHolder(sr, d)
	}
	var audit limit.State // the user's rule, fed every admission
	var over, admitted, checks, takes int64
	owed := make([]float64, len(hs))
	got := make([]int64, len(hs))
	const step = time.Millisecond
	run := 20 * time.Second
	for now := t0; now.Before(t0.Add(run)); now = now.Add(step) {
		for i, h := range hs {
			owed[i] += demand[i] * step.Seconds()
			for ; owed[i] >= 1; owed[i]-- {
				checks++
				b.giveBack(h.Expire(now, nil))
				st := h.Check(now, 1, len(hs), true)
				for !st.Decided {
					takes++
					h.Granted(now, now, st.Ask, b.take(h, now, st.Ask))
					st = h.Check(now, 1, len(hs), true)
				}
				if st.Ask.N > 0 {
					takes++
					h.Granted(now, now, st.Ask, b.take(h, now, st.Ask))
				}
				if !st.Allowed {
					continue
				}
				admitted++
				if n, _ := user.Take(&audit, now.UnixNano(), 1); n == 0 {
					over++
				}
				if now.Sub(t0) >= 2*time.Second {
					got[i]++
				}
			}
		}
	}
	if over != 0 {
		t.Errorf("%d admissions over what the limit allows", over)
	}
	if used := float64(admitted) / (1000 * run.Seconds()); used < 0.97 || used > 1.05 {
		t.Errorf("used %.1f%% of the limit, want at least 97%%", 100*used)
	}
	var sum int64
	for _, g := range got {
		sum += g
	}
	for i, g := range got {
		share, want := float64(g)/float64(sum), demand[i]/3000
		t.Logf("holder %d: demand share %.1f%%, admitted share %.1f%%", i, 100*want, 100*share)
		if math.Abs(share-want) > 0.02 {
			t.Errorf("holder %d: admitted share %.1f%%, demand share %.1f%%: more than 2 points apart", i, 100*share, 100*want)
		}
	}
	if r := float64(takes) / float64(checks); r > 0.01 {
		t.Errorf("%d takes for %d checks (%.4f per check), want at most 0.01", takes, checks, r)
	}
	t.Logf("%d checks, %d admitted (%.1f%% of the limit), %d takes (%.3f per 100 checks)",
		checks, admitted, 100*float64(admitted)/(1000*run.Seconds()), takes, 100*float64(takes)/float64(checks))
}

func TestHolderExpiresAndDrains(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	b := &bucket{r: sr}
	h := lease.NewHolder(sr, lease500)
	sent := t0
	a := lease.Ask{N: 40}
	g := b.take(h, t0.Add(time.Millisecond), a)
	h.Granted(t0.Add(2*time.Millisecond), sent, a, g)
	for range 15 {
		if st := h.Check(t0.Add(10*time.Millisecond), 1, 3, true); !st.Allowed {
			t.Fatal("denied from a slice of 40")
		}
	}
	if rets := h.Expire(sent.Add(lease500-time.Nanosecond), nil); len(rets) != 0 || h.Avail() != 25 {
		t.Fatalf("before the lease ends: returns %v, avail %d", rets, h.Avail())
	}
	rets := h.Expire(sent.Add(lease500), nil) // measured from the send
	if len(rets) != 1 || rets[0].Unused != 25 || rets[0].Grant != g || h.Avail() != 0 {
		t.Fatalf("at the lease's end: returns %+v, avail %d; want the 25 unspent of %+v", rets, h.Avail(), g)
	}
	ten := lease.Ask{N: 10}
	h.Granted(t0, t0, ten, b.take(h, t0, ten))
	h.Granted(t0, t0, ten, b.take(h, t0, ten))
	h.Check(t0, 3, 3, true)
	rets = h.Drain(nil)
	if len(rets) != 2 || rets[0].Unused != 7 || rets[1].Unused != 10 || h.Avail() != 0 {
		t.Fatalf("drain: %+v, avail %d; want 7 and 10 back (oldest spent first)", rets, h.Avail())
	}
}

func TestHolderUndoAndLargeCosts(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	b := &bucket{r: sr}
	h := lease.NewHolder(sr, lease500)
	st := h.Check(t0, 300, 3, true)
	if st.Decided || st.Ask.N != 300 {
		t.Fatalf("a check of 300: %+v, want a take of 300 (more than MaxHeld, for one check)", st)
	}
	h.Granted(t0, t0, st.Ask, b.take(h, t0, st.Ask))
	if st := h.Check(t0, 300, 3, true); !st.Allowed || h.Avail() != 0 {
		t.Fatalf("%+v, avail %d", st, h.Avail())
	}
	h.Undo(300)
	if h.Avail() != 300 {
		t.Fatalf("undo: avail %d, want 300", h.Avail())
	}
	if st := h.Check(t0, 501, 3, true); !st.Decided || st.Allowed || st.RetryAfter != limit.RetryNever || st.Ask.N != 0 {
		t.Fatalf("a cost above the store's burst: %+v, want never", st)
	}
}

func TestHolderAdmitBatches(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	b := &bucket{r: sr}
	h := lease.NewHolder(sr, lease500)
	// 10 units in the first 100ms read 105/s: half a lease is 27.
	got, ask := h.Admit(t0, 10, 3)
	if got != 0 || ask.N != 27 {
		t.Fatalf("first batch: admitted %d, ask %+v; want 0 and 27", got, ask)
	}
	if got, again := h.Admit(t0, 10, 3); got != 0 || again.N != 0 {
		t.Fatalf("while asking: admitted %d, ask %+v; want 0 and none", got, again)
	}
	h.Granted(t0, t0, ask, b.take(h, t0, ask))
	// 23 units read 242/s: it wants 61 and holds 24 after 3: asks 37.
	if got, ask := h.Admit(t0, 3, 3); got != 3 || ask.N != 37 || math.Abs(ask.Demand-241.7) > 0.1 {
		t.Fatalf("admitted %d, ask %+v; want 3 and 37, reporting 241.7/s", got, ask)
	}
	if got, ask := h.Admit(t0, 30, 3); got != 24 || ask.N != 0 {
		t.Fatalf("admitted %d, ask %+v; want the 24 held and no take (asking)", got, ask)
	}
}

// Contended, a holder takes its share once every half lease and denies
// the rest until its next take.
func TestHolderContendedPacesItsTakes(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	b := &bucket{r: sr}
	h, others := lease.NewHolder(sr, lease500), lease.NewHolder(sr, lease500)
	now := t0
	for range 2 * 1000 { // 1000/s for 2 s: the estimate settles
		now = now.Add(time.Millisecond)
		b.giveBack(h.Expire(now, nil))
		st := h.Check(now, 1, 3, true)
		for !st.Decided {
			h.Granted(now, now, st.Ask, b.take(h, now, st.Ask))
			st = h.Check(now, 1, 3, true)
		}
		if st.Ask.N > 0 {
			h.Granted(now, now, st.Ask, b.take(h, now, st.Ask))
		}
		b.take(others, now, lease.Ask{N: 4, Demand: 4000}) // the others: 4000/s
	}
	c, share := h.Contended()
	if !c || share < 0.15 || share > 0.25 {
		t.Fatalf("contended %v, share %.3f: want about 0.2 (1000/s of a total of 5000/s)", c, share)
	}
}
