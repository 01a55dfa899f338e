// Package memstore is the embedded, in-process Store: the default backend of
// a single `ratelimiter serve`, and the local fallback of the distributed mode.
//
// # Model
//
// Keys are spread over a power-of-two number of shards, each an
// open-addressing hash table of 64-byte slots (see table.go). A check of a
// key the store holds locks only the key's slot, with one compare-and-swap
// on the cache line that also holds the state, for the whole limit.Apply:
// a check and its consumption are one atomic step, a limit set is applied
// all-or-nothing, and checks of different held keys do not wait for each
// other. Inserts, removals and resizes hold the shard's mutex, one writer at
// a time, and lock each slot they read or move; a check of a key not held,
// or one that meets a structural change in its probe run, takes the slow
// path and waits for that mutex. Time comes from the injected clock, read
// once per Apply.
//
// A slot is keyed by a 63-bit seeded hash of the key (hash/maphash, random
// seed per Store; the 64th bit is the slot's lock, and 0 an empty slot) and
// keeps the state inline, verified by a second, independently seeded 32-bit
// hash. A lookup so touches the table and nothing else: no key string or
// pointer to chase, which is what a check over a million keys spends its
// time on (cache misses). Two keys are confused only if both hashes collide
// (about 2^-95 per pair, and not craftable without the seeds); a collision
// of the first hash alone is detected and the older entry is replaced,
// which gives it a fresh state.
//
// # Memory bound and expiry
//
// A key's entry is dropped once its state is equivalent to a fresh one
// (limit.ExpiresAt): lazily, by sampling two entries on every insert, and by
// Sweep, which a janitor goroutine runs every SweepInterval. MaxKeys bounds the
// number of keys held, exactly: one atomic counter, touched only when a key is
// added or dropped. When the store is full, an insert samples up to eight
// entries of its shard (the first ones held from a random slot) and drops
// those that carry nothing: expired ones, and live ones equivalent to fresh
// (every limit back at its full capacity). Only if none does, it evicts the
// sampled entry that carries the least spent budget (the largest share of
// a limit spent, over the entry's limits), the soonest to expire among
// equals: the entry closest to fresh in what it would give back, so
// eviction forgets as little as possible. A subject being limited has spent
// a whole limit and goes only when every entry sampled has too: a flood of
// new subjects, each of which spent a little, can at worst make the store
// forget other subjects' small spending, never free a limited subject, and
// never grow memory past the bound. Stats counts the evictions that gave
// spent budget back apart from the harmless ones. Tables double as they
// fill and Sweep shrinks the ones left under 1/8 full to at most half full,
// so memory also comes back after a flood.
//
// Only requests that consume create an entry: a denied or peeking request of
// an unknown key leaves no trace. An existing entry is written back only when
// limit.Apply reports a change.
package memstore

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
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
	Keys int // keys held now
	// Evictions counts entries evicted to make room that carried spent
	// budget: each gave its subject back what it had spent. A store that
	// evicts these is too small for its subjects (raise MaxKeys).
	Evictions uint64
	// FreshEvictions counts live entries dropped to make room that carried
	// nothing (every limit back at its full capacity): harmless.
	FreshEvictions uint64
	Expired        uint64 // expired entries dropped
	Unstored       uint64 // new keys not stored: the store was full and their shard empty
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
	evictions atomic.Uint64 // entries evicted that carried spent budget
	// evictedFresh counts live entries dropped to make room that carried
	// nothing (equivalent to fresh: no subject gained anything).
	evictedFresh atomic.Uint64
	expired      atomic.Uint64
	dropped      atomic.Uint64
	stop         chan struct{}
	done         chan struct{}

	// demands are the holders' reports on leased keys (Take), by key and
	// rule name; bounded by maxDemands keys, lapsed ones dropped first.
	demandMu sync.Mutex
	demands  map[demandKey]map[string]report
}

type demandKey struct{ key, rule string }

// report is a holder's standing report: its demand until expires.
type report struct {
	demand  float64
	expires int64
}

// maxDemands bounds the leased keys whose reports a Store keeps.
const maxDemands = 100_000

// shard is one table and the mutex of its structural changes. The table
// pointer, which every check reads, and the mutex, which inserts write, sit
// on different cache lines, so checks of held keys share the first one
// read-only.
type shard struct {
	cur atomic.Pointer[table]
	_   [56]byte
	mu  sync.Mutex
	n   int // keys held; guarded by mu
	_   [48]byte
}

// entry is one key's state, inline in its table slot. It is 56 bytes, so a
// slot (with its 8-byte hash) is one cache line: the state of a one-rule
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
	states []limit.State // their states, updated in place under the slot lock
}

// load returns the entry's states, in buf for a one-rule set.
func (e *entry) load(buf *[1]limit.State) []limit.State {
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
	e := entry{tag: tag, n: uint8(len(rules)), first: &rules[0], expires: limit.ExpiresAt(rules, st)}
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
	o := op{req: req}
	s.run(&o)
	return o.v, nil
}

// run runs o on its key's entry, atomically.
func (s *Store) run(o *op) {
	h, tag, sh := s.locate(o.req.Key)
	now := s.clock.Now().UnixNano()

	// Fast path: the key is held; lock its slot, not the shard.
	if t := sh.cur.Load(); t != nil {
		if i := t.lookup(h); i >= 0 && t.acquire(i, h) {
			if updateLocked(t, i, h, tag, o, now) {
				return
			}
		}
	}
	s.applySlow(sh, h, tag, o, now)
}

// op is what a check asks of one key's entry: limit.Apply of a request
// (Apply), or a lease's take or return (Take, Return).
type op struct {
	req  store.Request
	kind uint8
	n    int64       // units to take or return
	g    store.Grant // the take's grant; the return's
	v    limit.Verdict
}

const (
	opApply = iota
	opTake
	opReturn
)

// do runs o on states at now and reports whether they changed.
func (o *op) do(st []limit.State, now int64) bool {
	switch o.kind {
	case opTake:
		before := st[0]
		o.g.Taken, o.g.Decision = o.req.Rules[0].Take(&st[0], now, o.n)
		o.g.Mark = o.req.Rules[0].Mark(st[0])
		return !st[0].Equal(before)
	case opReturn:
		return o.req.Rules[0].Refund(&st[0], o.n, o.g.Mark)
	}
	return limit.ApplyTo(&o.v, o.req.Rules, st, now, o.req.Cost)
}

// ApplyAll implements store.Store: every part in one atomic step. It takes
// the mutexes of the parts' shards in shard order (so that two ApplyAll
// calls never wait for each other in a cycle), then the slot lock of each
// part the store holds (whose other holders are single checks, which wait
// for nothing while they hold one), decides with limit.ApplyParts and
// writes back. It releases the slots before it inserts the parts that were
// absent and consumed, and the mutexes after: a check of an absent part
// needs its shard's mutex, so nobody sees the check half done.
func (s *Store) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	if err := store.ValidateAll(reqs, out); err != nil {
		return false, err
	}
	if len(reqs) == 1 {
		v, err := s.Apply(ctx, reqs[0])
		out[0] = v
		return v.Allowed, err
	}
	type held struct {
		h      uint64
		tag    uint32
		sh     int
		t      *table
		i      int // slot, -1 when the key is absent
		e      *entry
		other  bool // slot i holds another key of the same first hash
		buf    [1]limit.State
		states []limit.State
	}
	hs := make([]held, len(reqs))
	var order []int
	for k := range reqs {
		h, tag, _ := s.locate(reqs[k].Key)
		si := int((h >> 32) & s.mask)
		hs[k] = held{h: h, tag: tag, sh: si, i: -1}
		if !slices.Contains(order, si) {
			order = append(order, si)
		}
	}
	slices.Sort(order)
	for _, si := range order {
		s.shards[si].mu.Lock()
	}
	defer func() {
		for _, si := range slices.Backward(order) {
			s.shards[si].mu.Unlock()
		}
	}()
	now := s.clock.Now().UnixNano()
	parts := make([]limit.Part, len(reqs))
	for k := range reqs {
		p, req := &hs[k], &reqs[k]
		dup := false // the first hash of an earlier part (2^-63): its slot is ours already
		for j := range k {
			dup = dup || hs[j].h == p.h
		}
		if t := s.shards[p.sh].cur.Load(); t != nil && !dup {
			if i := t.lookup(p.h); i >= 0 && t.acquire(i, p.h) {
				p.t, p.i, p.e = t, i, &t.slots[i].entry
			}
		}
		switch {
		case p.i >= 0 && p.e.tag == p.tag:
			if p.e.first != &req.Rules[0] || int(p.e.n) != len(req.Rules) {
				*p.e = realign(*p.e, req.Rules)
			}
			p.states = p.e.load(&p.buf)
		default: // absent, or a collision of the first hash: fresh
			p.other = p.i >= 0
			p.states = make([]limit.State, len(req.Rules))
		}
		parts[k] = limit.Part{Rules: req.Rules, States: p.states, Cost: req.Cost}
	}
	changed := make([]bool, len(reqs))
	allowed := limit.ApplyParts(parts, now, out, changed)
	for k := range hs {
		p, req := &hs[k], &reqs[k]
		if p.i < 0 {
			continue
		}
		if changed[k] {
			if p.other {
				*p.e = newEntry(p.tag, req.Rules, p.states)
			} else {
				p.e.save(p.states)
				p.e.expires = limit.ExpiresAt(req.Rules, p.states)
			}
		}
		p.t.release(p.i, p.h)
	}
	for k := range hs {
		if p := &hs[k]; p.i < 0 && changed[k] && !slices.ContainsFunc(hs[:k], func(o held) bool { return o.h == p.h }) {
			fresh := newEntry(p.tag, reqs[k].Rules, p.states)
			s.insert(&s.shards[p.sh], p.h, &fresh, now)
		}
	}
	return allowed, nil
}

// locate returns key's slot word, its tag and its shard.
func (s *Store) locate(key string) (uint64, uint32, *shard) {
	h := maphash.String(s.seed1, key) &^ lockBit
	if h == 0 {
		h = 1 // 0 is the empty slot
	}
	return h, uint32(maphash.String(s.seed2, key)), &s.shards[(h>>32)&s.mask]
}

// updateLocked runs o on the entry in slot i, which the caller locked for
// key word h, and unlocks it, also if limit.Apply panics. It reports false,
// doing nothing, when the entry is another key's (a collision of the first
// hash, which the slow path resolves).
func updateLocked(t *table, i int, h uint64, tag uint32, o *op, now int64) bool {
	defer t.release(i, h)
	if e := &t.slots[i].entry; e.tag == tag {
		update(e, o, now)
		return true
	}
	return false
}

// applySlow decides a check holding the shard mutex: for a key that is
// absent (or whose slot the fast path could not take), inserting it when
// the check consumes.
func (s *Store) applySlow(sh *shard, h uint64, tag uint32, o *op, now int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.cur.Load()
	if t != nil {
		if i := t.lookup(h); i >= 0 && t.acquire(i, h) {
			defer t.release(i, h)
			e := &t.slots[i].entry
			if e.tag == tag {
				update(e, o, now)
				return
			}
			// A collision of the first hash: the newcomer replaces the
			// entry when it consumes, as if the key were absent.
			if fresh, changed := applyFresh(tag, o, now); changed {
				*e = fresh
			}
			return
		}
	}
	if fresh, changed := applyFresh(tag, o, now); changed {
		s.insert(sh, h, &fresh, now)
	}
}

// applyFresh runs o on fresh states: when they changed, the entry to
// store.
func applyFresh(tag uint32, o *op, now int64) (entry, bool) {
	var buf [limit.MaxRules]limit.State
	st := buf[:len(o.req.Rules)]
	if !o.do(st, now) {
		return entry{}, false
	}
	return newEntry(tag, o.req.Rules, st), true
}

// update runs o on the held entry e, whose slot the caller locked.
func update(e *entry, o *op, now int64) {
	if e.first != &o.req.Rules[0] || int(e.n) != len(o.req.Rules) {
		*e = realign(*e, o.req.Rules)
	}
	var buf [1]limit.State
	st := e.load(&buf)
	if o.do(st, now) {
		e.save(st)
		e.expires = limit.ExpiresAt(o.req.Rules, st)
	}
}

// insert adds a new entry to sh, keeping the store within its bound. The
// caller holds sh.mu.
func (s *Store) insert(sh *shard, h uint64, e *entry, now int64) {
	// Reserve the key first: of concurrent inserts, each one that takes the
	// count past the bound evicts before it stores, so the keys held never
	// exceed MaxKeys. If its shard holds nothing to evict, the key is not
	// stored: the request was decided, its state is forgotten.
	if s.keys.Add(1) > s.maxKeys {
		if !s.evict(sh, h, now, 8, true) {
			s.keys.Add(-1)
			s.dropped.Add(1)
			return
		}
	} else {
		s.evict(sh, h, now, 2, false)
	}
	t := sh.cur.Load()
	if t == nil {
		t = sh.resize(minSlots)
	} else if (sh.n+1)*4 > len(t.slots)*3 {
		t = sh.resize(2 * len(t.slots))
	}
	t.put(h, e)
	sh.n++
}

// resize moves sh's entries into a new table of at least size slots (and
// enough that it is at most 3/4 full) and publishes it; a size of 0 drops
// the table of a shard that holds nothing. Each old slot is
// marked moved once copied: a check that still probes the old table falls
// back to the slow path and waits for the mutex, which the caller holds.
func (sh *shard) resize(size int) *table {
	old := sh.cur.Load()
	if size == 0 {
		sh.cur.Store(nil)
		if old != nil {
			for i := range old.slots { // every slot is empty: checks on it fall back
				old.slots[i].h.Store(moved)
			}
		}
		return nil
	}
	n := minSlots
	for n < size || sh.n*4 > n*3 {
		n <<= 1
	}
	t := newTable(n)
	if old != nil {
		for i := range old.slots {
			if x := old.lockAny(i); x != 0 {
				t.put(x, &old.slots[i].entry)
			}
			old.slots[i].h.Store(moved)
		}
	}
	sh.cur.Store(t)
	return t
}

// evict samples up to n entries of sh, the first n held at or after the
// home slot of key word h (a random place: the hash is seeded), and drops
// the ones that carry nothing: expired entries, and live ones whose every
// state leaves the full capacity now (a faded sliding window), which are
// equivalent to fresh. When force is set and none carried nothing, it evicts
// the sampled entry that carries the least spent budget (carried), the
// one that expires first among equals: a subject being limited has spent
// all of a limit and is evicted only if every sampled entry has too, so a
// flood of new subjects, each of which spent a unit or a few, cannot make
// it fresh. It reports whether it dropped anything. The caller holds sh.mu.
//
// Checks of held keys update entries without the shard mutex, so an entry
// may change between the sampling and its removal: each is removed only if
// it is still as it was judged (expiring no later than when it was
// sampled: a check that consumed moved its expiry). When the victim was
// refreshed meanwhile, it samples again, and after a few tries takes the
// victim regardless.
func (s *Store) evict(sh *shard, h uint64, now int64, n int, force bool) bool {
	t := sh.cur.Load()
	if t == nil {
		return false
	}
	const tries = 4
	for try := 1; ; try++ {
		var nothing [8]struct {
			x       uint64
			expires int64
			expired bool
		}
		nn := 0
		var victim uint64
		var victimCarried float64
		soonest := int64(-1)
		for i, seen := int(h)&t.mask, 0; seen < n && seen < sh.n; i = (i + 1) & t.mask {
			x := t.lockAny(i)
			if x == 0 {
				continue
			}
			seen++
			e := &t.slots[i].entry
			exp := e.expires
			c := 0.0
			if exp > now {
				c = carried(e, now)
			}
			switch {
			case c == 0:
				nothing[nn].x, nothing[nn].expires, nothing[nn].expired = x, exp, exp <= now
				nn++
			case soonest < 0 || c < victimCarried || (c == victimCarried && exp < soonest):
				victim, victimCarried, soonest = x, c, exp
			}
			t.release(i, x)
		}
		// Drop after sampling: a removal shifts the entries after it.
		expired, fresh := 0, 0
		for _, d := range nothing[:nn] {
			if s.removeIf(sh, t, d.x, d.expires) {
				if d.expired {
					expired++
				} else {
					fresh++
				}
			}
		}
		s.expired.Add(uint64(expired))
		s.evictedFresh.Add(uint64(fresh))
		if expired+fresh > 0 {
			return true
		}
		if !force {
			return false
		}
		if soonest >= 0 {
			upTo := soonest
			if try == tries {
				upTo = math.MaxInt64
			}
			if s.removeIf(sh, t, victim, upTo) {
				s.evictions.Add(1)
				return true
			}
		}
		if try == tries || nn == 0 && soonest < 0 {
			return false
		}
	}
}

// carried returns the share of a limit the entry's subject has spent, now
// (limit.Rule.Spent: an entry a check wrote with a later clock reading than
// the evicting insert's is judged as of its own instant): the largest over
// its rules. 0 means the entry carries nothing (every rule is back to its
// full capacity), 1 that a rule is spent. The caller holds the entry's slot
// lock.
func carried(e *entry, now int64) float64 {
	var buf [1]limit.State
	states := e.load(&buf)
	if e.n <= 1 {
		return e.first.Spent(states[0], now)
	}
	most := 0.0
	for i := range e.more.rules {
		most = max(most, e.more.rules[i].Spent(states[i], now))
	}
	return most
}

// removeIf drops key word x, which sh's table t holds, if its entry
// expires no later than upTo. The caller holds sh.mu.
func (s *Store) removeIf(sh *shard, t *table, x uint64, upTo int64) bool {
	i := t.lookup(x)
	t.lockAny(i)
	if t.slots[i].expires > upTo {
		t.release(i, x)
		return false
	}
	t.removeAt(i)
	sh.n--
	s.keys.Add(-1)
	return true
}

// realign moves e onto the limit set rules after a reload or an override
// changed it: a rule keeps the state of the rule of the same name (and
// limit.Rule.Step treats a state of another algorithm as fresh); a new rule
// starts fresh. An unchanged set (a reload that left it equal) only moves.
func realign(e entry, rules []limit.Rule) entry {
	var buf [1]limit.State
	var next [limit.MaxRules]limit.State
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
	// A denied or peeking check after the change does not recompute it:
	// keep the entry until neither the old set nor the new one needs it.
	n.expires = max(n.expires, e.expires)
	return n
}

// Sweep drops every expired entry and returns how many it dropped. It also
// gives back the memory of tables left mostly empty: a table under 1/8 full
// shrinks to the smallest power of two at least twice its keys (at least a
// quarter of its size), an empty one is dropped.
func (s *Store) Sweep() int {
	now := s.clock.Now().UnixNano()
	total := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n := 0
		if t := sh.cur.Load(); t != nil {
			// A removal shifts later entries back into slot j, so j is
			// looked at again; an entry shifted across the end of the table
			// may be looked at twice, which is harmless.
			for j := 0; j < len(t.slots); {
				x := t.lockAny(j)
				if x != 0 && t.slots[j].expires <= now {
					t.removeAt(j)
					n++
					continue
				}
				if x != 0 {
					t.release(j, x)
				}
				j++
			}
			sh.n -= n
			if sh.n == 0 {
				sh.resize(0)
			} else if size := len(t.slots); size > minSlots && sh.n*8 < size {
				sh.resize(sh.n * 2)
			}
		}
		// Counted before the shard is unlocked: an insert never sees the
		// store fuller than it is, which would make it evict a live entry.
		s.keys.Add(-int64(n))
		s.expired.Add(uint64(n))
		sh.mu.Unlock()
		total += n
	}
	return total
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	st := Stats{Evictions: s.evictions.Load(), FreshEvictions: s.evictedFresh.Load(), Expired: s.expired.Load(), Unstored: s.dropped.Load()}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		st.Keys += sh.n
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

// Take implements store.Leaser. The reports are kept beside the bucket,
// advisory: a report is recorded just after its take, not under its lock.
func (s *Store) Take(_ context.Context, key string, rule limit.Rule, n int64, rep store.Report) (store.Grant, error) {
	if s.closed.Load() {
		return store.Grant{}, store.ErrClosed
	}
	req := store.Request{Key: key, Rules: []limit.Rule{rule}, Cost: n}
	if err := req.Validate(); err != nil || n < 1 || rule.Algorithm != limit.TokenBucket {
		return store.Grant{}, fmt.Errorf("%w: take %d of a %v", store.ErrInvalidRequest, n, rule.Algorithm)
	}
	if err := rep.Validate(); err != nil {
		return store.Grant{}, err
	}
	o := op{req: req, kind: opTake, n: n}
	s.run(&o)
	o.g.Demand = s.report(key, rule.Name, rep)
	return o.g, nil
}

// report records rep for key's rule and returns the sum of the reports
// that stand, dropping the lapsed ones.
func (s *Store) report(key, rule string, rep store.Report) float64 {
	now := s.clock.Now().UnixNano()
	k := demandKey{key, rule}
	s.demandMu.Lock()
	defer s.demandMu.Unlock()
	if s.demands == nil {
		s.demands = make(map[demandKey]map[string]report)
	}
	m := s.demands[k]
	if m == nil {
		if len(s.demands) >= maxDemands {
			s.dropLapsedLocked(now)
		}
		m = make(map[string]report)
		s.demands[k] = m
	}
	m[rep.Holder] = report{rep.Demand, now + int64(rep.For)}
	var sum float64
	for h, r := range m {
		if r.expires <= now {
			delete(m, h)
			continue
		}
		sum += r.demand
	}
	return sum
}

// dropLapsedLocked forgets the keys whose reports all lapsed, or every key
// if none did; the caller holds demandMu.
func (s *Store) dropLapsedLocked(now int64) {
	for k, m := range s.demands {
		lapsed := true
		for _, r := range m {
			lapsed = lapsed && r.expires <= now
		}
		if lapsed {
			delete(s.demands, k)
		}
	}
	if len(s.demands) >= maxDemands {
		clear(s.demands)
	}
}

// Return implements store.Leaser.
func (s *Store) Return(_ context.Context, key string, rule limit.Rule, g store.Grant, unused int64) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if unused < 1 || unused > g.Taken {
		return fmt.Errorf("%w: return %d of %d", store.ErrInvalidRequest, unused, g.Taken)
	}
	o := op{req: store.Request{Key: key, Rules: []limit.Rule{rule}}, kind: opReturn, n: unused, g: g}
	s.run(&o)
	return nil
}

var _ store.Leaser = (*Store)(nil)
