package memstore

import (
	"runtime"
	"sync/atomic"
)

// table is one shard's hash table: open addressing with linear probing over
// 64-byte slots, each holding a key's 64-bit hash word and its entry inline,
// with a lock bit in the hash word. A check of a key held reads one cache
// line, or a few adjacent ones: it finds the key in its home slot or soon
// after (the table stays at most 3/4 full, between 3/8 and 3/4: about 1.5
// to 2.5 probes on average), locks it there with one compare-and-swap of
// the word it just read, and updates the state in place.
//
// That is what the shard mutex and a Go map could not give: a map reads a
// group's control word and then the slot (two dependent cache misses on a
// table far larger than the caches), and a shard mutex is one more cache
// line that the cores pass between them on every check.
//
// # Concurrency
//
// Two kinds of access share a table:
//
//   - Checks of held keys (the fast path) take no shard lock. They probe with
//     atomic loads of the hash words and lock the key's slot by setting its
//     lock bit (a compare-and-swap from the unlocked word, which also proves
//     the slot still holds the key). They hold one slot lock at a time and
//     wait for nothing while holding it.
//   - Structural changes (insert, remove, resize, sweep, eviction) hold the
//     shard mutex, so there is one writer at a time, and lock every occupied
//     slot they read or move, so they never see a state half updated. A
//     removal shifts later entries of the probe run back (no tombstones):
//     each entry is published in its new slot before its old slot is reused.
//     A resize copies every slot into a new table, marking each old slot
//     moved, then publishes the new table.
//
// A fast path that does not find its key unlocked in place (an empty slot
// or a moved mark reached, the word changed under it) falls back to the
// slow path, which holds the shard mutex and so sees a table no one is
// restructuring. Finding nothing there is the truth: the key is absent.
//
// Hash word 0 marks an empty slot; moved (the lock bit alone) marks a slot
// of a table that was replaced. Keys' words have the lock bit clear and are
// never 0 (the Store maps its hashes so).
type table struct {
	slots []slot // a power of two of them
	mask  int
}

// slot is one cache line: the key's hash word and its entry.
type slot struct {
	h atomic.Uint64
	entry
}

const (
	lockBit  = 1 << 63
	moved    = lockBit
	minSlots = 8
)

func newTable(size int) *table {
	return &table{slots: make([]slot, size), mask: size - 1}
}

// lookup returns the index of the slot holding key word h, locked or not,
// or -1 when it reaches an empty or moved slot first. Without the shard
// mutex, -1 may be wrong (a concurrent structural change); with it, it is
// not.
func (t *table) lookup(h uint64) int {
	for i, n := int(h)&t.mask, 0; n <= t.mask; i, n = (i+1)&t.mask, n+1 {
		switch x := t.slots[i].h.Load(); x &^ lockBit {
		case h:
			return i
		case 0: // empty or moved
			return -1
		}
	}
	return -1
}

// acquire locks slot i for key word h, waiting while another holder has it.
// It returns false when the slot no longer holds h.
func (t *table) acquire(i int, h uint64) bool {
	w := &t.slots[i].h
	for spins := 0; ; spins++ {
		x := w.Load()
		if x == h && w.CompareAndSwap(h, h|lockBit) {
			return true
		}
		if x&^lockBit != h {
			return false
		}
		backoff(spins)
	}
}

// release unlocks slot i, which holds key word h.
func (t *table) release(i int, h uint64) { t.slots[i].h.Store(h) }

// lockAny locks slot i whatever key it holds and returns the key word, or 0
// when the slot is empty. The caller holds the shard mutex.
func (t *table) lockAny(i int) uint64 {
	w := &t.slots[i].h
	for spins := 0; ; spins++ {
		x := w.Load()
		if x == 0 {
			return 0
		}
		if x&lockBit == 0 && w.CompareAndSwap(x, x|lockBit) {
			return x
		}
		backoff(spins)
	}
}

// put stores e under key word h in an empty slot, found by probing from its
// home slot, and returns the index. The caller holds the shard mutex and
// has made room (Store.insert grows the table first).
func (t *table) put(h uint64, e *entry) int {
	i := int(h) & t.mask
	for t.slots[i].h.Load() != 0 {
		i = (i + 1) & t.mask
	}
	t.slots[i].entry = *e
	t.slots[i].h.Store(h) // publishes the entry
	return i
}

// removeAt empties slot i, which the caller locked holding the shard mutex,
// and shifts back each later entry of the probe run that may move (those
// whose home slot is not between the hole and themselves), so that every
// entry stays reachable from its home slot without a gap. Each moved entry
// is locked while it is copied and published in its new slot before its old
// one becomes the next hole.
func (t *table) removeAt(i int) {
	for j := (i + 1) & t.mask; ; j = (j + 1) & t.mask {
		x := t.lockAny(j)
		if x == 0 {
			break
		}
		if home := int(x) & t.mask; (j-home)&t.mask >= (j-i)&t.mask {
			t.slots[i].entry = t.slots[j].entry
			t.slots[i].h.Store(x)
			i = j // stays locked: the next hole
		} else {
			t.slots[j].h.Store(x)
		}
	}
	t.slots[i].entry = entry{}
	t.slots[i].h.Store(0)
}

// backoff lets a waiter for a slot lock give way: the holder is a check of
// a few dozen nanoseconds, unless it was preempted.
func backoff(spins int) {
	if spins >= 8 {
		runtime.Gosched()
	}
}
