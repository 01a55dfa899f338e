package service_test

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// A flood of 5,000,000 distinct subjects against a memory store bounded to
// 1,000,000 keys: the store holds at most its bound (it evicts the entries
// closest to fresh: see the memstore package documentation, "Memory bound
// and expiry"), the heap after 5M subjects is about the heap after the first
// 1M, and a subject being limited throughout keeps its state and is still
// answered exactly.
func TestFloodOfDistinctSubjectsBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("floods 5M subjects")
	}
	const maxKeys, subjects = 1_000_000, 5_000_000
	st := memstore.New(memstore.Options{MaxKeys: maxKeys, SweepInterval: -1})
	defer st.Close()
	svc, err := service.New(st, snapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour)), service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The abuser: exhausted before the flood, checked all through it.
	for range 10 {
		svc.Check(ctx, service.Request{Namespace: "orders", Subject: "abuser", Cost: 1})
	}

	var heapAt1M, rssAt1M uint64
	workers := runtime.GOMAXPROCS(0)
	start := time.Now()
	var worst time.Duration
	for lo := 0; lo < subjects; lo += maxKeys {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 0, 16)
				for i := lo + w; i < lo+maxKeys; i += workers {
					buf = strconv.AppendInt(append(buf[:0], 's'), int64(i), 10)
					res, err := svc.Check(ctx, service.Request{Namespace: "orders", Subject: string(buf), Cost: 1})
					if err != nil || !res.Verdict.Allowed {
						t.Errorf("subject %d: %+v %v", i, res.Verdict, err)
						return
					}
				}
			}()
		}
		// Meanwhile the service keeps answering the limited subject, and
		// answers it right.
		for range 100 {
			t0 := time.Now()
			res, err := svc.Check(ctx, service.Request{Namespace: "orders", Subject: "abuser", Cost: 1})
			worst = max(worst, time.Since(t0))
			if err != nil || res.Verdict.Allowed {
				t.Fatalf("the abuser, during the flood: %+v %v", res.Verdict, err)
			}
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		if lo == 0 {
			heapAt1M, rssAt1M = heapInUse(), rss(t)
		}
	}
	took := time.Since(start)
	heap, rssNow := heapInUse(), rss(t)
	stats := st.Stats()
	t.Logf("%d subjects in %v (%.0f checks/s, %d workers); keys held %d, evictions %d, expired %d",
		subjects, took.Round(time.Millisecond), subjects/took.Seconds(), workers, stats.Keys, stats.Evictions, stats.Expired)
	t.Logf("heap in use after 1M subjects %d MiB, after 5M %d MiB; RSS %d MiB, then %d MiB; slowest check of the limited subject %v",
		heapAt1M>>20, heap>>20, rssAt1M>>20, rssNow>>20, worst)
	// Inserts reserve their key before storing it, so the bound holds
	// exactly, racing writers included.
	if stats.Keys > maxKeys {
		t.Errorf("the store holds %d keys, over its bound %d", stats.Keys, maxKeys)
	}
	if stats.Evictions < subjects-maxKeys-maxKeys/10 {
		t.Errorf("%d evictions for %d subjects over a bound of %d", stats.Evictions, subjects, maxKeys)
	}
	// The bound holds memory flat: 4M more subjects may not grow the heap by
	// more than half of what the first 1M took (map growth and garbage the
	// collector has not returned yet), nor RSS past an absolute ceiling
	// (the race detector's shadow memory included).
	if heap > heapAt1M+heapAt1M/2 {
		t.Errorf("heap in use grew from %d MiB at 1M subjects to %d MiB at 5M: not bounded", heapAt1M>>20, heap>>20)
	}
	if limitRSS := uint64(3 << 30); rssNow > limitRSS {
		t.Errorf("RSS %d MiB, over %d MiB", rssNow>>20, limitRSS>>20)
	}
	res, err := svc.Check(ctx, service.Request{Namespace: "orders", Subject: "abuser", Cost: 1})
	if err != nil || res.Verdict.Allowed || res.Verdict.RetryAfter <= 0 || res.Verdict.RetryAfter == limit.RetryNever {
		t.Fatalf("the abuser after the flood: %+v %v; a limited subject must keep its state", res.Verdict, err)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// rss reads the resident set size from /proc. The project runs on Linux;
// without /proc the RSS bound could not be checked, so the test fails
// rather than pass without checking it.
func rss(t *testing.T) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatalf("the RSS bound needs /proc/self/status (Linux): %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS line in /proc/self/status")
	return 0
}
