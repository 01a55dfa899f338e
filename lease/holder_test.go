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

// bucket is a shared bucket in this process: limit.Rule.Take on one State.
type bucket struct {
	r limit.Rule
	s limit.State
}

func (b *bucket) take(now time.Time, n int64) store.Grant {
	taken, d := b.r.Take(&b.s, now.UnixNano(), n)
	return store.Grant{Taken: taken, Decision: d, Mark: b.r.Mark(b.s)}
}

func (b *bucket) remaining(now time.Time) int64 {
	_, d := b.r.Step(b.s, now.UnixNano(), 0)
	return d.Remaining
}

func TestHolderFirstCheckWaitsForATake(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	h := lease.NewHolder(sr, lease500)
	st := h.Check(t0, 1, 3, true)
	if st.Decided || st.Ask != 1 {
		t.Fatalf("first check: %+v, want undecided and a take of 1 (no demand seen yet)", st)
	}
	if again := h.Check(t0, 1, 3, true); again.Decided || again.Ask != 0 {
		t.Fatalf("a second check while the take is in flight: %+v, want it to wait, with no second take", again)
	}
	b := &bucket{r: sr}
	h.Granted(t0, t0, 1, b.take(t0, 1), 3)
	st = h.Check(t0, 1, 3, true)
	if !st.Decided || !st.Allowed || h.Avail() != 0 {
		t.Fatalf("after the grant: %+v, avail %d; want allowed from the slice", st, h.Avail())
	}
	// One check in the first 100ms reads 10.5/s: half a lease is 3.
	if st.Ask != 3 {
		t.Errorf("the slice is empty: ask %d, want 3 (a new take at once)", st.Ask)
	}
}

func TestHolderWithoutWaitDeniesAndAsks(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	h := lease.NewHolder(sr, lease500)
	st := h.Check(t0, 1, 3, false)
	if !st.Decided || st.Allowed || st.Ask != 1 || st.RetryAfter != time.Millisecond {
		t.Fatalf("first check without wait: %+v, want denied (retry one unit), asking 1", st)
	}
	if st := h.Check(t0, 1, 3, false); !st.Decided || st.Allowed || st.Ask != 0 {
		t.Fatalf("while asking: %+v, want denied and no second take", st)
	}
}

// A steady demand: the holder holds about one lease of it, asks before it
// runs out, and costs one take per half a lease of checks.
func TestHolderSteadyDemandPrefetches(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	b := &bucket{r: sr}
	h := lease.NewHolder(sr, lease500)
	var takes, allowed, asks int64
	now := t0
	for i := range 10_000 { // 500 checks a second for 20 s
		now = t0.Add(time.Duration(i) * 2 * time.Millisecond)
		for _, r := range h.Expire(now, nil) {
			t.Fatalf("check %d: %d units expired unspent at a steady demand", i, r.Unused)
		}
		st := h.Check(now, 1, 3, true)
		for !st.Decided {
			takes++
			h.Granted(now, now, st.Ask, b.take(now, st.Ask), 3)
			st = h.Check(now, 1, 3, true)
		}
		if !st.Allowed {
			t.Fatalf("check %d denied at 500/s of a 1000/s limit: %+v", i, st)
		}
		allowed++
		if st.Ask > 0 {
			asks++
			takes++
			h.Granted(now, now, st.Ask, b.take(now, st.Ask), 3) // answered at once
		}
	}
	if allowed != 10_000 {
		t.Fatalf("allowed %d of 10000", allowed)
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
}

func TestHolderShortGrantBacksOff(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	h := lease.NewHolder(sr, lease500)
	// 1660 checks a second for 5 s from a bucket of plenty: the backoff of
	// that demand is 100ms (a quantum of 166 units among 3).
	plenty := &bucket{r: rule(t, limit.TokenBucket, 1_000_000, 1_000_000)}
	now := t0
	for i := range 5 * 1660 {
		now = t0.Add(time.Duration(i) * time.Second / 1660)
		st := h.Check(now, 1, 3, true)
		for !st.Decided {
			h.Granted(now, now, st.Ask, plenty.take(now, st.Ask), 3)
			st = h.Check(now, 1, 3, true)
		}
		if st.Ask > 0 {
			h.Granted(now, now, st.Ask, plenty.take(now, st.Ask), 3)
		}
	}
	h.Drain(nil)
	// The shared bucket is dry but for 100 units.
	b := &bucket{r: sr}
	if g := b.take(now.Add(-100*time.Millisecond), 500); g.Taken != 500 {
		t.Fatalf("emptying the bucket: %+v", g)
	}
	st := h.Check(now, 1, 3, true)
	if st.Decided || st.Ask == 0 {
		t.Fatalf("empty holder: %+v, want a take", st)
	}
	g := b.take(now, st.Ask)
	if g.Taken != 100 || g.Taken >= st.Ask {
		t.Fatalf("take of %d from a bucket that refilled 100: %+v", st.Ask, g)
	}
	h.Granted(now, now, st.Ask, g, 3)
	wait := lease.Backoff(h.Demand(now), g.Decision.RetryAfter, lease500, sr, 3)
	if wait < 90*time.Millisecond || wait > 110*time.Millisecond {
		t.Fatalf("backoff %v, want about 100ms (166 units of a 1660/s demand)", wait)
	}
	for i := range 100 {
		if st := h.Check(now, 1, 3, true); !st.Allowed || st.Ask != 0 {
			t.Fatalf("check %d of the 100 granted: %+v, want allowed and no take (backing off)", i, st)
		}
	}
	st = h.Check(now.Add(wait/2), 1, 3, true)
	if !st.Decided || st.Allowed || st.Ask != 0 || st.RetryAfter != wait-wait/2 {
		t.Fatalf("slices spent during the backoff: %+v, want denied with retry %v and no take", st, wait-wait/2)
	}
	if st := h.Check(now.Add(wait), 1, 3, true); st.Decided || st.Ask == 0 {
		t.Fatalf("after the backoff: %+v, want a take", st)
	}
}

func TestHolderExpiresAndDrains(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	b := &bucket{r: sr}
	h := lease.NewHolder(sr, lease500)
	sent := t0
	g := b.take(t0.Add(time.Millisecond), 40)
	h.Granted(t0.Add(2*time.Millisecond), sent, 40, g, 3)
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
	h.Granted(t0, t0, 10, b.take(t0, 10), 3)
	h.Granted(t0, t0, 10, b.take(t0, 10), 3)
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
	if st.Decided || st.Ask != 300 {
		t.Fatalf("a check of 300: %+v, want a take of 300 (more than MaxHeld, for one check)", st)
	}
	h.Granted(t0, t0, 300, b.take(t0, 300), 3)
	if st := h.Check(t0, 300, 3, true); !st.Allowed || h.Avail() != 0 {
		t.Fatalf("%+v, avail %d", st, h.Avail())
	}
	h.Undo(300)
	if h.Avail() != 300 {
		t.Fatalf("undo: avail %d, want 300", h.Avail())
	}
	if st := h.Check(t0, 501, 3, true); !st.Decided || st.Allowed || st.RetryAfter != limit.RetryNever || st.Ask != 0 {
		t.Fatalf("a cost above the store's burst: %+v, want never", st)
	}
}

func TestHolderAdmitBatches(t *testing.T) {
	sr := rule(t, limit.TokenBucket, 1000, 500)
	b := &bucket{r: sr}
	h := lease.NewHolder(sr, lease500)
	// 10 units in the first 100ms read 105/s: half a lease is 27.
	got, ask := h.Admit(t0, 10, 3)
	if got != 0 || ask != 27 {
		t.Fatalf("first batch: admitted %d, ask %d; want 0 and 27", got, ask)
	}
	if got, ask := h.Admit(t0, 10, 3); got != 0 || ask != 0 {
		t.Fatalf("while asking: admitted %d, ask %d; want 0 and 0", got, ask)
	}
	h.Granted(t0, t0, ask, b.take(t0, ask), 3)
	// 23 units read 242/s: it wants 61 and holds 24 after 3: asks 37.
	if got, ask := h.Admit(t0, 3, 3); got != 3 || ask != 37 {
		t.Fatalf("admitted %d, ask %d; want 3 and 37", got, ask)
	}
	if got, ask := h.Admit(t0, 30, 3); got != 24 || ask != 0 {
		t.Fatalf("admitted %d, ask %d; want the 24 held and no take (asking)", got, ask)
	}
}
