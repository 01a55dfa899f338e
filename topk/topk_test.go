package topk

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestExactWhileTheCountersSuffice(t *testing.T) {
	tr := New(Options{Capacity: 8, Stripes: 2, Clock: clocktest.New(epoch)})
	for s, n := range map[string]int{"a": 5, "b": 3, "c": 3, "d": 1} {
		for range n {
			tr.Add("orders", s)
		}
	}
	want := []Entry{{"a", 5, 0}, {"b", 3, 0}, {"c", 3, 0}}
	if got := tr.Top("orders", 3); !slices.Equal(got, want) {
		t.Fatalf("top 3 = %v, want %v", got, want)
	}
	if got := tr.Top("orders", 100); len(got) != 4 {
		t.Fatalf("top 100 = %v, want all 4", got)
	}
	if got := tr.Top("payments", 3); len(got) != 0 {
		t.Fatalf("unknown namespace: %v", got)
	}
}

// Three heavy subjects hidden in 20,000 one-off denials, with 32 counters:
// every subject denied more than total/32 times is guaranteed to be held,
// so the three are the top three, each count within its error of the
// truth. (Their order is by upper bound, which the sketch does not promise
// to match the true order.)
func TestHeavyHittersInAFlood(t *testing.T) {
	tr := New(Options{Capacity: 32, Stripes: 1, Clock: clocktest.New(epoch)})
	truth := map[string]uint64{"abuser-1": 3000, "abuser-2": 2000, "abuser-3": 1500}
	var stream []string
	for s, n := range truth {
		for range n {
			stream = append(stream, s)
		}
	}
	for i := range 20_000 {
		stream = append(stream, fmt.Sprintf("once-%d", i))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
	for _, s := range stream {
		tr.Add("orders", s)
	}
	// 26,500 denials over 32 counters: anything above 828 is held.
	top := tr.Top("orders", 3)
	for _, e := range top {
		want, ok := truth[e.Subject]
		if !ok || e.Denied < want || e.Denied-e.Error > want {
			t.Fatalf("top 3 = %+v: want the three abusers, each true count within [Denied-Error, Denied] (%v)", top, truth)
		}
	}
}

// Counts cover the current and the previous window.
func TestWindows(t *testing.T) {
	clk := clocktest.New(epoch)
	tr := New(Options{Capacity: 4, Stripes: 1, Window: time.Minute, Clock: clk})
	tr.Add("orders", "a")
	tr.Add("orders", "a")
	clk.Advance(time.Minute) // a's two are in the previous window now
	tr.Add("orders", "a")
	tr.Add("orders", "b")
	if got, want := tr.Top("orders", 2), []Entry{{"a", 3, 0}, {"b", 1, 0}}; !slices.Equal(got, want) {
		t.Fatalf("over two windows: %v, want %v", got, want)
	}
	clk.Advance(time.Minute) // the first window is gone
	if got, want := tr.Top("orders", 2), []Entry{{"a", 1, 0}, {"b", 1, 0}}; !slices.Equal(got, want) {
		t.Fatalf("after a window: %v, want %v", got, want)
	}
	clk.Advance(2 * time.Minute) // everything is
	if got := tr.Top("orders", 2); len(got) != 0 {
		t.Fatalf("after two idle windows: %v", got)
	}
}

// As a service observer: only denials of configured namespaces count, not
// peeks nor the closed failure policy's blanket denials, and a namespace
// dropped by a reload is forgotten.
func TestObserver(t *testing.T) {
	tr := New(Options{Clock: clocktest.New(epoch)})
	snap, err := config.Parse([]byte("namespaces:\n  - name: orders\n    limits:\n      - {name: a, algorithm: fixed_window, limit: 1, period: 1m}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := snap.Namespace("orders")
	denied := service.Result{Namespace: "orders", Subject: "u", Cost: 1, Set: policy.LimitSet{Namespace: ns}, Verdict: limit.Verdict{Allowed: false}}
	allowed := denied
	allowed.Verdict.Allowed = true
	unknown := denied
	unknown.Set.Namespace = nil
	peek := denied
	peek.Cost = 0
	closed := denied
	closed.DecidedBy = service.DecidedByClosed
	tr.ObserveCheck(denied, nil, 0)
	tr.ObserveCheck(allowed, nil, 0)
	tr.ObserveCheck(unknown, nil, 0)
	tr.ObserveCheck(peek, nil, 0)
	tr.ObserveCheck(closed, nil, 0)
	tr.ObserveCheck(denied, fmt.Errorf("store down"), 0)
	if got, want := tr.Top("orders", 5), []Entry{{"u", 1, 0}}; !slices.Equal(got, want) {
		t.Fatalf("top = %v, want %v", got, want)
	}
	other, err := config.Parse([]byte("namespaces:\n  - name: exports\n    limits:\n      - {name: a, algorithm: fixed_window, limit: 1, period: 1m}\n"), "t2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tr.ObserveSnapshot(other)
	if got := tr.Top("orders", 5); len(got) != 0 {
		t.Fatalf("a dropped namespace still reports %v", got)
	}
}

func TestConcurrentAddsAreCounted(t *testing.T) {
	tr := New(Options{Capacity: 64, Stripes: 4, Clock: clocktest.New(epoch)})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				tr.Add("orders", fmt.Sprintf("s%d", (i+g)%50))
				if i%500 == 0 {
					tr.Top("orders", 3)
				}
			}
		}()
	}
	wg.Wait()
	var sum uint64
	for _, e := range tr.Top("orders", 100) {
		if e.Error != 0 {
			t.Fatalf("%+v: an error with fewer subjects than counters", e)
		}
		sum += e.Denied
	}
	if sum != 20_000 {
		t.Fatalf("%d denials counted, want 20,000", sum)
	}
}

func BenchmarkAdd(b *testing.B) {
	tr := New(Options{})
	subjects := make([]string, 100_000)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("user-%d", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			tr.Add("orders", subjects[rng.IntN(len(subjects))])
		}
	})
}
