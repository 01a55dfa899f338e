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
	Unstored  uint64 // new keys not stored: the store was full and their shard empty
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
	dropped   atomic.Uint64
	stop      chan struct{}
	done      chan struct{}
}

type shard struct {
	mu sync.Mutex
	m  map[uint64]entry
	_  [40]byte // keep neighbouring shard locks on different cache lines
}

// entry is one key's state, by value in the shard map. It is 56 bytes, so a
// map slot (with its 8-byte key) is one cache line: the state of a one-rule
// bucket or window set lives inline, and only what does not fit (a sliding
// window log, the states of a larger set) sits behind one pointer.
type entry struct {
	tag     uint32          // 32 more bits of the key's hash, checked on lookup
	n       uint8           // number of rules of the set
	alg     limit.Algorithm // rule 0's state, for one-rule sets: Alg, T, N, P
	expires int64           // Unix ns from which every state is fresh again
	first   *limit.Rule     // first rule of the set the states belong to
	t, c, p int64
	more    *spill
}

// spill holds what an entry cannot hold inline.
type spill struct {
	log    []limit.Entry // rule 0's log, for a one-rule set
	rules  []limit.Rule  // the set, for a set of several rules
	states []limit.State // their states, updated in place under the shard lock
}

// load returns the entry's states, in buf for a one-rule set.
func (e *entry) load(buf *[limit.MaxRules]limit.State) []limit.State {
	if e.n > 1 {
		return e.more.states
	}
	buf[0] = limit.State{Alg: e.alg, T: e.t, N: e.c, P: e.p}
	if e.more != nil {
		buf[0].Log = e.more.log
	}
	return buf[:1]
}

// save stores the states load returned, after limit.Apply changed them.
func (e *entry) save(st []limit.State) {
	if e.n > 1 {
		return // updated in place
	}
	s := &st[0]
	e.alg, e.t, e.c, e.p = s.Alg, s.T, s.N, s.P
	if s.Log != nil || e.more != nil {
		if e.more == nil {
			e.more = &spill{}
		}
		e.more.log = s.Log
	}
}

// rules returns the limit set e's states belong to.
func (e *entry) rules() []limit.Rule {
	if e.n > 1 {
		return e.more.rules
	}
	return []limit.Rule{*e.first}
}

// newEntry returns an entry holding states for rules.
func newEntry(tag uint32, rules []limit.Rule, st []limit.State) entry {
	e := entry{tag: tag, n: uint8(len(rules)), first: &rules[0]}
	if len(rules) > 1 {
		e.more = &spill{rules: rules, states: append([]limit.State(nil), st...)}
		return e
	}
	e.save(st)
	return e
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
		shards:  make([]shard, n),
		mask:    uint64(n - 1),
		maxKeys: int64(opts.MaxKeys),
		seed1:   maphash.MakeSeed(),
		seed2:   maphash.MakeSeed(),
		clock:   opts.Clock,
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
	tag := uint32(maphash.String(s.seed2, req.Key))
	sh := &s.shards[(h1>>32)&s.mask]
	now := s.clock.Now().UnixNano()
	var buf [limit.MaxRules]limit.State

	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, found := sh.m[h1]
	if !found || e.tag != tag { // absent, or a collision of the first hash: the newcomer replaces it
		st := buf[:len(req.Rules)]
		v, changed := limit.Apply(req.Rules, st, now, req.Cost)
		if changed {
			e = newEntry(tag, req.Rules, st)
			e.expires = limit.ExpiresAt(req.Rules, st)
			s.insert(sh, h1, e, now)
		}
		return v, nil
	}
	realigned := false
	if e.first != &req.Rules[0] || int(e.n) != len(req.Rules) {
		e, realigned = realign(e, req.Rules), true
	}
	st := e.load(&buf)
	v, changed := limit.Apply(req.Rules, st, now, req.Cost)
	if changed {
		e.save(st)
		e.expires = limit.ExpiresAt(req.Rules, st)
	}
	if changed || realigned {
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
	// Reserve the key first: of concurrent inserts, each one that takes the
	// count past the bound evicts before it stores, so the keys held never
	// exceed MaxKeys. If its shard holds nothing to evict, the key is not
	// stored: the request was decided, its state is forgotten.
	if s.keys.Add(1) > s.maxKeys {
		if !s.evict(sh, now, 8, true) {
			s.keys.Add(-1)
			s.dropped.Add(1)
			return
		}
	} else {
		s.evict(sh, now, 2, false)
	}
	sh.m[h] = e
}

// evict samples up to n entries of sh and drops the expired ones; when force
// is set and none was expired, it drops the sampled entry that expires first.
// It reports whether it dropped anything.
func (s *Store) evict(sh *shard, now int64, n int, force bool) bool {
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
		dropped = true
	}
	return dropped
}

// realign moves e onto the limit set rules after a reload or an override
// changed it: a rule keeps the state of the rule of the same name (and
// limit.Rule.Step treats a state of another algorithm as fresh); a new rule
// starts fresh. An unchanged set (a reload that left it equal) only moves.
func realign(e entry, rules []limit.Rule) entry {
	var buf, next [limit.MaxRules]limit.State
	old, oldRules := e.load(&buf), e.rules()
	for i, r := range rules {
		for j, o := range oldRules {
			if o.Name == r.Name {
				next[i] = old[j]
				break
			}
		}
	}
	n := newEntry(e.tag, rules, next[:len(rules)])
	n.expires = e.expires
	return n
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
	st := Stats{Evictions: s.evictions.Load(), Expired: s.expired.Load(), Unstored: s.dropped.Load()}
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
