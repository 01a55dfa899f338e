package memstore

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/time/rate"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// The benchmarks below compare memstore with the common hand-rolled
// alternative, golang.org/x/time/rate limiters in a 256-shard mutex map, on
// the same keys and the same access pattern, in one run:
//
//	go test -run='^$' -bench='Memstore|XTimeRate' -benchmem ./store/memstore/
//
// Each check formats its subject into a per-goroutine buffer, as a server does
// with the subject it just parsed: the key's bytes are in cache, the
// limiter's state for it is not. (Picking a pre-built string out of a
// million-string slice would add two cache misses per check to both sides and
// measure the benchmark's own memory, not the stores'.)

// hotKey formats the key of subject i, as benchKeys does, into buf and
// returns it as a string that aliases buf: valid until the next call. Both
// stores only read it (every key exists before the timed loop, so neither
// retains it).
func hotKey(buf *[32]byte, i int) string {
	b := append(buf[:0], "orders:user-"...)
	b = strconv.AppendInt(b, int64(i), 10)
	return unsafe.String(&b[0], len(b))
}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "orders:user-" + strconv.Itoa(i)
	}
	return keys
}

var hot = benchKeys(1)

// keys1M is built once: a million distinct subjects.
var keys1M = sync.OnceValue(func() []string { return benchKeys(1_000_000) })

// benchRule is 1000 per hour with a bucket of 100,000: no check is denied and
// every subject's state stays live for the whole run (each check pushes it
// 3.6s ahead), so the benchmarks measure checks of existing subjects. The
// x/time/rate reference uses the same rate and burst.
func benchRule() []limit.Rule {
	r, err := limit.Rule{Name: "per-hour", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Hour, Burst: 100_000}.Normalize()
	if err != nil {
		panic(err)
	}
	return []limit.Rule{r}
}

// churnRule refills a unit every nanosecond, so every entry is equivalent to a
// fresh one right after its check and is dropped and re-created: the
// insert/expire path.
func churnRule() []limit.Rule {
	r, _ := limit.Rule{Name: "per-second", Algorithm: limit.TokenBucket, Limit: 1_000_000_000, Period: time.Second}.Normalize()
	return []limit.Rule{r}
}

func runMemstore(b *testing.B, keys []string) { runMemstoreRules(b, keys, benchRule()) }

func runMemstoreRules(b *testing.B, keys []string, rules []limit.Rule) {
	s := New(Options{MaxKeys: len(keys) + 1, SweepInterval: -1})
	defer s.Close()
	ctx := context.Background()
	for _, k := range keys { // every key exists: measure checks, not inserts
		s.Apply(ctx, store.Request{Key: k, Rules: rules, Cost: 1})
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		var buf [32]byte
		for pb.Next() {
			k := hotKey(&buf, rng.IntN(len(keys)))
			if _, err := s.Apply(ctx, store.Request{Key: k, Rules: rules, Cost: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// rateMap is the reference: x/time/rate limiters in a 256-shard mutex map.
type rateMap struct {
	shards [256]struct {
		mu sync.Mutex
		m  map[string]*rate.Limiter
	}
}

func (r *rateMap) allow(key string) bool {
	h := uint32(2166136261) // FNV-1a for the shard
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	sh := &r.shards[h&255]
	sh.mu.Lock()
	l, ok := sh.m[key]
	if !ok {
		l = rate.NewLimiter(rate.Limit(1000.0/3600), 100_000)
		sh.m[key] = l
	}
	sh.mu.Unlock()
	return l.Allow()
}

func runXTimeRate(b *testing.B, keys []string) {
	var r rateMap
	for i := range r.shards {
		r.shards[i].m = make(map[string]*rate.Limiter)
	}
	for _, k := range keys {
		r.allow(k)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		var buf [32]byte
		for pb.Next() {
			r.allow(hotKey(&buf, rng.IntN(len(keys))))
		}
	})
}

// BenchmarkMemstoreChurn1MKeys starts empty and checks a million subjects
// whose entries are fresh again a nanosecond after each check: every check
// of a subject not held inserts it, and each insert samples and drops
// expired entries, so the tables grow, shift entries back on removal and
// hold a changing fraction of the subjects.
func BenchmarkMemstoreChurn1MKeys(b *testing.B) {
	const subjects = 1_000_000
	rules := churnRule()
	s := New(Options{MaxKeys: subjects, SweepInterval: -1})
	defer s.Close()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		var buf [32]byte
		for pb.Next() {
			k := hotKey(&buf, rng.IntN(subjects)) // memstore keeps hashes, never the key
			if _, err := s.Apply(ctx, store.Request{Key: k, Rules: rules, Cost: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMemstoreHotKey(b *testing.B)  { runMemstore(b, hot) }
func BenchmarkXTimeRateHotKey(b *testing.B) { runXTimeRate(b, hot) }
func BenchmarkMemstore1MKeys(b *testing.B)  { runMemstore(b, keys1M()) }
func BenchmarkXTimeRate1MKeys(b *testing.B) { runXTimeRate(b, keys1M()) }

// BenchmarkShardResize4K is the pause a shard's checks can see when its
// table doubles at the default bound: ~3,900 keys per shard (1M over 256)
// copied into a table of 8,192 slots under the shard mutex.
func BenchmarkShardResize4K(b *testing.B) {
	var sh shard
	rng := rand.New(rand.NewPCG(1, 2))
	for sh.n < 3906 {
		h := rng.Uint64()&^lockBit | 1
		t := sh.cur.Load()
		if t == nil || (sh.n+1)*4 > len(t.slots)*3 {
			t = sh.resize(max(minSlots, 2*sh.n))
		}
		t.put(h, &entry{})
		sh.n++
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		sh.resize(8192)
	}
}
