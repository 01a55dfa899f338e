package pending

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

func rules(t *testing.T) []limit.Rule {
	t.Helper()
	return storetest.Rules(t, limit.Rule{Name: "a", Algorithm: limit.FixedWindow, Limit: 3, Period: time.Hour})
}

func TestBeforeAndAfterSet(t *testing.T) {
	p := New()
	req := store.Request{Key: "orders:u", Rules: rules(t), Cost: 1}
	if _, err := p.Apply(context.Background(), req); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, ErrNotConnected) {
		t.Fatalf("before Set: %v", err)
	}
	if _, err := p.Apply(context.Background(), store.Request{Key: "k", Cost: 1}); !errors.Is(err, store.ErrInvalidRequest) {
		t.Fatalf("invalid request before Set: %v", err)
	}
	select {
	case <-p.Ready():
		t.Fatal("ready before Set")
	default:
	}
	ms := memstore.New(memstore.Options{Clock: clocktest.New(storetest.Epoch), SweepInterval: -1})
	if err := p.Set(ms); err != nil {
		t.Fatal(err)
	}
	<-p.Ready()
	for want := int64(2); want >= 0; want-- {
		v, err := p.Apply(context.Background(), req)
		if err != nil || !v.Allowed || v.D[0].Remaining != want {
			t.Fatalf("after Set: %+v %v, want remaining %d", v, err, want)
		}
	}
	if err := p.Set(ms); err == nil {
		t.Fatal("a second Set accepted")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Apply(context.Background(), req); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("the real store after Close: %v", err)
	}
}

// A Set after Close closes what it is given: a connection made while the
// server was shutting down is not leaked.
func TestSetAfterClose(t *testing.T) {
	p := New()
	p.Close()
	if _, err := p.Apply(context.Background(), store.Request{Key: "k", Rules: rules(t), Cost: 1}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	ms := memstore.New(memstore.Options{SweepInterval: -1})
	if err := p.Set(ms); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Set after Close: %v", err)
	}
	if _, err := ms.Apply(context.Background(), store.Request{Key: "k", Rules: rules(t), Cost: 1}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("the store given after Close is open: %v", err)
	}
}

// Checks racing the hand-over either fail as not connected or are applied
// by the real store, and the real store's count is exactly what passed.
func TestConcurrentHandOver(t *testing.T) {
	p := New()
	ms := memstore.New(memstore.Options{Clock: clocktest.New(storetest.Epoch), SweepInterval: -1})
	defer p.Close()
	rs := rules(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				v, err := p.Apply(context.Background(), store.Request{Key: "k", Rules: rs, Cost: 1})
				if err != nil && !errors.Is(err, ErrNotConnected) {
					t.Error(err)
					return
				}
				if err == nil && v.Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	p.Set(ms)
	wg.Wait()
	v, err := p.Apply(context.Background(), store.Request{Key: "k", Rules: rs, Cost: 0})
	if err != nil || allowed != int(3-v.D[0].Remaining) {
		t.Fatalf("%d allowed, the store has %d left (%v)", allowed, v.D[0].Remaining, err)
	}
}

func TestLeaserBeforeAndAfterSet(t *testing.T) {
	p := New()
	r := storetest.Rules(t, limit.Rule{Name: "g", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Second})[0]
	rep := store.Report{Holder: "a", Demand: 5, For: time.Second}
	ctx := context.Background()
	if _, err := p.Take(ctx, "k", r, 3, rep); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("take before Set: %v", err)
	}
	if err := p.Return(ctx, "k", r, store.Grant{Taken: 3}, 1); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("return before Set: %v", err)
	}
	ms := memstore.New(memstore.Options{Clock: clocktest.New(time.Unix(1e9, 0))})
	if err := p.Set(ms); err != nil {
		t.Fatal(err)
	}
	g, err := p.Take(ctx, "k", r, 3, rep)
	if err != nil || g.Taken != 3 {
		t.Fatalf("take after Set: %+v, %v", g, err)
	}
	if err := p.Return(ctx, "k", r, g, 3); err != nil {
		t.Fatalf("return after Set: %v", err)
	}
	if g, err := p.Take(ctx, "k", r, 20, rep); err != nil || g.Taken != 10 {
		t.Fatalf("the bucket after the return: %+v, %v; want all 10", g, err)
	}
	p.Close()
	if _, err := p.Take(ctx, "k", r, 1, rep); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("take after Close: %v", err)
	}
}
