package lease_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// shared is a memstore that several lease.Stores share, as instances share
// Redis; closing a lease.Store leaves it open.
type shared struct{ *memstore.Store }

func (shared) Close() error { return nil }

const key = "orders:*"

func leased(r limit.Rule) store.Request {
	return store.Request{Key: key, Rules: []limit.Rule{r}, Cost: 1, Lease: true}
}

// remaining peeks at what the shared bucket holds.
func remaining(t *testing.T, st store.Store, sr limit.Rule) int64 {
	t.Helper()
	v, err := st.Apply(context.Background(), store.Request{Key: key, Rules: []limit.Rule{sr}})
	if err != nil {
		t.Fatal(err)
	}
	return v.D[0].Remaining
}

func newLeaseStore(t *testing.T, inner store.Store, clk *clocktest.Fake, instances int) *lease.Store {
	t.Helper()
	ls, err := lease.New(inner, lease.Options{Clock: clk, Instances: func() int { return instances }})
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func TestStoreDecidesFromSlicesAndReturnsOnClose(t *testing.T) {
	clk := clocktest.New(t0)
	ms := memstore.New(memstore.Options{Clock: clk})
	defer ms.Close()
	r := rule(t, limit.TokenBucket, 1000, 1000)
	sr, _ := lease.StoreRule(r, lease500)
	ls := newLeaseStore(t, shared{ms}, clk, 3)
	ctx := context.Background()
	for i := range 200 {
		clk.Advance(time.Millisecond) // 1000 checks a second
		v, err := ls.Apply(ctx, leased(r))
		if err != nil || !v.Allowed || v.D[0].Limit != 1000 {
			t.Fatalf("check %d: %+v, %v", i, v, err)
		}
		ls.Settle()
	}
	st := ls.Stats()
	if st.Local < 190 || st.Takes > 12 {
		t.Errorf("stats %+v: want most checks local, few takes", st)
	}
	// The units held are out of the bucket.
	held := st.Taken - 200
	before := remaining(t, ms, sr)
	if held <= 0 || held > lease.MaxHeld(sr, 3) || before > 500-held {
		t.Errorf("bucket holds %d with %d units leased (at most %d), want at most %d", before, held, lease.MaxHeld(sr, 3), 500-held)
	}
	// A non-leased request goes to the store as it is.
	if v, err := ls.Apply(ctx, store.Request{Key: "other", Rules: []limit.Rule{r}, Cost: 7}); err != nil || v.D[0].Remaining != 993 {
		t.Errorf("a plain request: %+v, %v; want the store's 993 left", v, err)
	}
	if err := ls.Close(); err != nil {
		t.Fatal(err)
	}
	// Every unused unit goes back; the bucket keeps what its history
	// allows of them (limit.Rule.Refund).
	if st := ls.Stats(); st.Returned != held || st.TakeErrors != 0 {
		t.Errorf("after Close: %+v, want the %d held returned", st, held)
	}
	if after := remaining(t, ms, sr); after <= before || after > 500 {
		t.Errorf("after Close the bucket holds %d, want more than %d and at most 500", after, before)
	}
	if _, err := ls.Apply(ctx, leased(r)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("a check after Close: %v, want ErrClosed", err)
	}
}

// Three instances, thousands of concurrent checks, time stopped: together
// they admit no more than the store's bucket holds, and at least half of
// it (contended holders leave less than half the burst in the bucket until
// their next take, half a lease later: a time that does not come here).
func TestStoreNeverOverAdmitsUnderConcurrency(t *testing.T) {
	clk := clocktest.New(t0)
	ms := memstore.New(memstore.Options{Clock: clk})
	defer ms.Close()
	r := rule(t, limit.TokenBucket, 1000, 1000)
	var instances [3]*lease.Store
	for i := range instances {
		instances[i] = newLeaseStore(t, shared{ms}, clk, 3)
	}
	var allowed, denied atomic.Int64
	var wg sync.WaitGroup
	for g := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls := instances[g%3]
			for range 250 {
				v, err := ls.Apply(context.Background(), leased(r))
				if err != nil {
					t.Error(err)
					return
				}
				if v.Allowed {
					allowed.Add(1)
				} else {
					denied.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if a := allowed.Load(); a > 500 || a < 250 || a+denied.Load() != 6000 {
		t.Fatalf("allowed %d, denied %d of 6000; want 250 to 500 of the 500 the store keeps", a, denied.Load())
	}
	var takes int64
	for _, ls := range instances {
		ls.Settle()
		takes += ls.Stats().Takes
	}
	if takes > 60 {
		t.Errorf("%d takes for 6000 checks, want at most 1 per 100", takes)
	}
}

func TestStoreReturnsExpiredSlices(t *testing.T) {
	clk := clocktest.New(t0)
	ms := memstore.New(memstore.Options{Clock: clk})
	defer ms.Close()
	r := rule(t, limit.TokenBucket, 10, 1000) // a slow refill: 5 units a lease
	sr, _ := lease.StoreRule(r, lease500)
	ls := newLeaseStore(t, shared{ms}, clk, 1)
	defer ls.Close()
	ctx := context.Background()
	for range 100 {
		if v, err := ls.Apply(ctx, leased(r)); err != nil || !v.Allowed {
			t.Fatalf("%+v, %v", v, err)
		}
		ls.Settle()
	}
	held := ls.Stats().Taken - 100
	before := remaining(t, ms, sr)
	if held <= 0 || before > sr.Burst-100-held+1 {
		t.Fatalf("holding %d, bucket %d", held, before)
	}
	clk.Advance(lease500)
	if v, err := ls.Apply(ctx, store.Request{Key: key, Rules: []limit.Rule{r}, Lease: true}); err != nil || !v.Allowed || v.D[0].Remaining != 0 {
		t.Fatalf("a peek after the lease: %+v, %v; want allowed with nothing held", v, err)
	}
	ls.Settle()
	if st := ls.Stats(); st.Returned != held {
		t.Errorf("stats %+v, want the %d unspent returned", st, held)
	}
	// 5 units refilled, and the returned ones that the bucket's history
	// allows.
	if after := remaining(t, ms, sr); after <= before+5 {
		t.Errorf("after the lease ended the bucket holds %d, want more than %d", after, before+5)
	}
}

func TestStoreApplyAllUndoesLeasedParts(t *testing.T) {
	clk := clocktest.New(t0)
	ms := memstore.New(memstore.Options{Clock: clk})
	defer ms.Close()
	ls := newLeaseStore(t, shared{ms}, clk, 1)
	defer ls.Close()
	r := rule(t, limit.TokenBucket, 1000, 1000)
	user := rule(t, limit.FixedWindow, 1, 0)
	user.Name = "per-user"
	reqs := []store.Request{leased(r), {Key: "orders:alice", Rules: []limit.Rule{user}, Cost: 1}}
	out := make([]limit.Verdict, 2)
	ctx := context.Background()
	if ok, err := ls.ApplyAll(ctx, reqs, out); !ok || err != nil || !out[0].Allowed || !out[1].Allowed {
		t.Fatalf("first: %v %v %+v", ok, err, out)
	}
	if ok, err := ls.ApplyAll(ctx, reqs, out); ok || err != nil || out[1].Allowed {
		t.Fatalf("second: %v %v %+v; want the per-user limit to deny", ok, err, out)
	}
	ls.Settle()
	v, err := ls.Apply(ctx, store.Request{Key: key, Rules: []limit.Rule{r}, Lease: true}) // a peek
	if want := ls.Stats().Taken - 1; err != nil || v.D[0].Remaining != want {
		t.Errorf("after the denial the slices hold %d, want %d (all taken but the one admitted)", v.D[0].Remaining, want)
	}
	if _, err := ls.ApplyAll(ctx, []store.Request{{Key: key, Rules: []limit.Rule{r, user}, Cost: 1, Lease: true}}, out[:1]); !errors.Is(err, store.ErrInvalidRequest) {
		t.Errorf("a leased request of two rules: %v, want ErrInvalidRequest", err)
	}
	fw := leased(user)
	if _, err := ls.Apply(ctx, fw); !errors.Is(err, store.ErrInvalidRequest) {
		t.Errorf("a leased fixed window: %v, want ErrInvalidRequest", err)
	}
}

// Redis goes away: the instance keeps deciding from its slices, then
// reports the store's failure (for the Guard's failure policy).
func TestStoreKeepsDecidingThroughARedisOutage(t *testing.T) {
	srv := redistest.Standalone(t)
	clk := clocktest.New(time.Now())
	rs, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ls := newLeaseStore(t, rs, clk, 1)
	defer ls.Close()
	r := rule(t, limit.TokenBucket, 1000, 1000)
	ctx := context.Background()
	for range 400 { // 500/s, half the rate: the instance holds up to 125
		clk.Advance(2 * time.Millisecond)
		if v, err := ls.Apply(ctx, leased(r)); err != nil || !v.Allowed {
			t.Fatalf("%+v, %v", v, err)
		}
		ls.Settle()
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	var fromSlices int64
	for {
		v, err := ls.Apply(ctx, leased(r))
		if err != nil {
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("slices spent, Redis down: %v, want ErrUnavailable", err)
			}
			break
		}
		if !v.Allowed {
			t.Fatalf("denied from the slices: %+v", v)
		}
		fromSlices++
	}
	if fromSlices < 60 {
		t.Fatalf("%d checks decided from the slices after Redis went down, want at least 60 (500/s held for half a lease, 125, less what was spent since the last take)", fromSlices)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	var ok bool
	for range 100 { // the client reconnects
		if v, err := ls.Apply(ctx, leased(r)); err == nil && v.Allowed {
			ok = true
			break
		}
		ls.Settle()
	}
	if !ok {
		t.Error("no check allowed after Redis restarted")
	}
}
