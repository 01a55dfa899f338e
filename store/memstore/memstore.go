// Package memstore is the embedded, in-process Store: the default backend of
// a single `ratelimiter serve`, and the local fallback of the distributed mode.
//
// # Model
//
// Keys are spread over a power-of-two number of shards, each a map guarded by
// one mutex. Apply holds the key's shard lock for the whole limit.Apply, so a
// check and its consumption are one atomic step and a limit set is applied
// all-or-nothing. Time comes from the injected clock, read once per Apply.
//
// A shard's map is keyed by a 64-bit seeded hash of the key (hash/maphash,
// random seed per Store) and keeps the state inline in the map slot, verified
// by a second, independently seeded 64-bit hash. A lookup so touches the map
// and nothing else: no key string or pointer to chase, which is what a check
// over a million keys spends its time on (cache misses). Two keys are confused
// only if both hashes collide (about 2^-128 per pair, and not craftable
// without the seeds); a collision of the first hash alone is detected and the
// older entry is replaced, which gives it a fresh state.
//
// # Memory bound and expiry
//
// A key's entry is dropped once its state is equivalent to a fresh one
// (limit.ExpiresAt): lazily, by sampling two entries on every insert, and by
// Sweep, which a janitor goroutine runs every SweepInterval. MaxKeys bounds the
// number of keys held, exactly: one atomic counter, touched only when a key is
// added or dropped. When the store is full, an insert samples up to eight
// entries of its shard, drops the expired ones, and if none was expired evicts
// the sampled entry that expires soonest: the one whose state is closest to
// fresh, so eviction forgets as little as possible. A subject
// that is being limited holds state far into the future and is the last to be
// evicted; a flood of new subjects can at worst make the store forget nearly
// refilled buckets, never grow memory past the bound.
//
// Only requests that consume create an entry: a denied or peeking request of
// an unknown key leaves no trace. An existing entry is written back only when
// limit.Apply reports a change.
package memstore

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Clock supplies the current instant. Default clock.System.
	Clock clock.Clock
	// MaxKeys bounds the number of keys held. Default 1,000,000.
	MaxKeys int
	// Shards is the number of lock shards, rounded up to a power of two.
	// Default 256.
	Shards int
	// SweepInterval is how often a janitor goroutine drops expired entries.
	// Default 1 minute; negative disables the janitor (call Sweep yourself).
	SweepInterval time.Duration
}

// Stats are counters of a Store's life.
type Stats struct {
	Keys      int    // keys held now
	Evictions uint64 // live entries evicted because a shard was full
	Expired   uint64 // expired entries dropped
}

// Store is the in-memory store.Store. It is safe for concurrent use.
type Store struct {
	shards    []shard
	mask      uint64
	maxKeys   int64
	keys      atomic.Int64
	seed1     maphash.Seed
	seed2     maphash.Seed
	clock     clock.Clock
	closed    atomic.Bool
	evictions atomic.Uint64
	expired   atomic.Uint64
	stop      chan struct{}
	done      chan struct{}
}

type shard struct {
	mu sync.Mutex
	m  map[uint64]entry
	_  [40]byte // keep neighbouring shard locks on different cache lines
}

// entry is one key's state. It lives by value in the shard map.
type entry struct {
	check   uint64       // second hash of the key
	expires int64        // Unix ns from which every state is fresh again
	rules   []limit.Rule // the limit set the states are aligned with
	one     [1]limit.State
	many    []limit.State // used instead of one when the set has several rules
}

func (e *entry) states() []limit.State {
	if e.many != nil {
		return e.many
	}
	return e.one[:]
}

// New returns a Store. Call Close to stop its janitor.
func New(opts Options) *Store {
	if opts.Clock == nil {
		opts.Clock = clock.System
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = 1_000_000
	}
	n := 1
	for n < opts.Shards || (opts.Shards <= 0 && n < 256) {
		n <<= 1
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = time.Minute
	}
	s := &Store{
		shards:   make([]shard, n),
		mask:     uint64(n - 1),
		maxKeys:  int64(opts.MaxKeys),
		seed1:    maphash.MakeSeed(),
		seed2:    maphash.MakeSeed(),
		clock:    opts.Clock,
	}
	for i := range s.shards {
		s.shards[i].m = make(map[uint64]entry)
	}
	if opts.SweepInterval > 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.janitor(opts.SweepInterval)
	}
	return s
}

// Apply implements store.Store.
func (s *Store) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	if s.closed.Load() {
		return limit.Verdict{}, store.ErrClosed
	}
	if err := req.Validate(); err != nil {
		return limit.Verdict{}, err
	}
	h1 := maphash.String(s.seed1, req.Key)
	h2 := maphash.String(s.seed2, req.Key)
	sh := &s.shards[(h1>>32)&s.mask]
	now := s.clock.Now().UnixNano()

	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, found := sh.m[h1]
	if found && e.check != h2 {
		found = false // a collision of the first hash: the newcomer replaces it
	}
	if !found {
		e = entry{check: h2, rules: req.Rules}
		if len(req.Rules) > 1 {
			var tmp [limit.MaxRules]limit.State
			v, changed := limit.Apply(req.Rules, tmp[:len(req.Rules)], now, req.Cost)
			if changed {
				e.many = append([]limit.State(nil), tmp[:len(req.Rules)]...)
				e.expires = limit.ExpiresAt(req.Rules, e.many)
				s.insert(sh, h1, e, now)
			}
			return v, nil
		}
		v, changed := limit.Apply(req.Rules, e.one[:], now, req.Cost)
		if changed {
			e.expires = limit.ExpiresAt(req.Rules, e.one[:])
			s.insert(sh, h1, e, now)
		}
		return v, nil
	}
	if !sameSlice(e.rules, req.Rules) {
		if equalRules(e.rules, req.Rules) {
			e.rules = req.Rules
		} else {
			e = realign(e, req.Rules)
		}
	}
	st := e.states()
	v, changed := limit.Apply(req.Rules, st, now, req.Cost)
	if changed {
		e.expires = limit.ExpiresAt(req.Rules, st)
		sh.m[h1] = e
	}
	return v, nil
}

// insert adds a new entry to sh, keeping the shard within its bound. The
// caller holds sh.mu.
func (s *Store) insert(sh *shard, h uint64, e entry, now int64) {
	if _, replacing := sh.m[h]; replacing {
		sh.m[h] = e
		return
	}
	if s.keys.Load() >= s.maxKeys {
		s.evict(sh, now, 8, true)
	} else {
		s.evict(sh, now, 2, false)
	}
	sh.m[h] = e
	s.keys.Add(1)
}

// evict samples up to n entries of sh and drops the expired ones; when force
// is set and none was expired, it drops the sampled entry that expires first.
func (s *Store) evict(sh *shard, now int64, n int, force bool) {
	var victim uint64
	soonest := int64(-1)
	dropped := false
	for k, e := range sh.m {
		if e.expires <= now {
			delete(sh.m, k)
			s.keys.Add(-1)
			s.expired.Add(1)
			dropped = true
		} else if soonest < 0 || e.expires < soonest {
			victim, soonest = k, e.expires
		}
		if n--; n == 0 {
			break
		}
	}
	if force && !dropped && soonest >= 0 {
		delete(sh.m, victim)
		s.keys.Add(-1)
		s.evictions.Add(1)
	}
}

// sameSlice reports whether a and b are the very same slice: the usual case,
// both taken from the same policy snapshot.
func sameSlice(a, b []limit.Rule) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// equalRules reports whether a and b hold equal rules (a reload that did not
// change this limit set).
func equalRules(a, b []limit.Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// realign maps e's states onto a changed limit set (a reload or an override):
// a rule keeps the state of the rule of the same name; a new rule starts fresh,
// and limit.Rule.Step treats state of another algorithm as fresh.
func realign(e entry, rules []limit.Rule) entry {
	old := e.states()
	var next [limit.MaxRules]limit.State
	for i, r := range rules {
		for j, o := range e.rules {
			if o.Name == r.Name {
				next[i] = old[j]
				break
			}
		}
	}
	e.rules = rules
	e.one = [1]limit.State{}
	e.many = nil
	if len(rules) > 1 {
		e.many = append([]limit.State(nil), next[:len(rules)]...)
	} else {
		e.one[0] = next[0]
	}
	return e
}

// Sweep drops every expired entry and returns how many it dropped.
func (s *Store) Sweep() int {
	now := s.clock.Now().UnixNano()
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.expires <= now {
				delete(sh.m, k)
				n++
			}
		}
		sh.mu.Unlock()
	}
	s.keys.Add(-int64(n))
	s.expired.Add(uint64(n))
	return n
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	st := Stats{Evictions: s.evictions.Load(), Expired: s.expired.Load()}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		st.Keys += len(sh.m)
		sh.mu.Unlock()
	}
	return st
}

// Close stops the janitor. Apply after Close returns store.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	return nil
}

func (s *Store) janitor(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// String describes the store for logs.
func (s *Store) String() string {
	return fmt.Sprintf("memory(shards=%d, max_keys=%d)", len(s.shards), s.maxKeys)
}

var _ store.Store = (*Store)(nil)
