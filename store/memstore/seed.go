package memstore

import "github.com/distributedratelimiter/ratelimiter/limit"

// Seed starts key's states for rules from what another store last reported
// of them: v holds one Decision per rule (a store's answer, its Remaining
// already scaled as the caller wants it held here; passed by value, so that
// seeding allocates nothing), and each rule's state is limit.Rule.Seed of
// it at this store's current instant. It is how the local
// failure policy of a distributed deployment (service.Guard) starts a subject
// from its spent budget rather than from a full one.
//
// Reports may arrive out of order (concurrent checks of one subject complete
// in any order), so Seed never loosens what the store holds: for a key held
// with the same limit set, each rule keeps whichever state, the held one or
// the seeded one, leaves fewer units remaining now. A held key of another
// limit set is replaced. A report of nothing consumed adds no key. Seed
// ignores a closed store, an empty key, and a verdict of another number of
// decisions than rules.
func (s *Store) Seed(key string, rules []limit.Rule, v limit.Verdict) {
	if s.closed.Load() || key == "" || len(rules) == 0 || v.N != len(rules) {
		return
	}
	h, tag, sh := s.locate(key)
	now := s.clock.Now().UnixNano()
	var buf [limit.MaxRules]limit.State
	seed := buf[:len(rules)]
	consumed := false
	for i := range rules {
		seed[i] = rules[i].Seed(v.D[i].Remaining, v.D[i].ResetAfter, now)
		consumed = consumed || seed[i].Alg != 0
	}
	if t := sh.cur.Load(); t != nil {
		if i := t.lookup(h); i >= 0 && t.acquire(i, h) {
			if seedLocked(t, i, h, tag, rules, seed, now) {
				return
			}
		}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if t := sh.cur.Load(); t != nil {
		if i := t.lookup(h); i >= 0 && t.acquire(i, h) {
			defer t.release(i, h)
			if e := &t.slots[i].entry; e.tag == tag {
				merge(e, rules, seed, now)
			} else { // a collision of the first hash: the newcomer replaces it
				*e = newEntry(tag, rules, seed)
			}
			return
		}
	}
	if consumed {
		e := newEntry(tag, rules, seed)
		s.insert(sh, h, &e, now)
	}
}

// seedLocked merges seed into the entry in slot i, which the caller locked
// for key word h, and unlocks it. It reports false, doing nothing, when the
// entry is another key's.
func seedLocked(t *table, i int, h uint64, tag uint32, rules []limit.Rule, seed []limit.State, now int64) bool {
	defer t.release(i, h)
	if e := &t.slots[i].entry; e.tag == tag {
		merge(e, rules, seed, now)
		return true
	}
	return false
}

// merge writes seed into e, keeping each of e's states that leaves fewer
// units remaining at now (when e holds the same limit set).
func merge(e *entry, rules []limit.Rule, seed []limit.State, now int64) {
	if e.first != &rules[0] || int(e.n) != len(rules) {
		*e = newEntry(e.tag, rules, seed)
		return
	}
	var buf [1]limit.State
	held := e.load(&buf)
	for i := range rules {
		_, old := rules[i].Step(held[i], now, 0)
		_, next := rules[i].Step(seed[i], now, 0)
		if old.Remaining < next.Remaining {
			seed[i] = held[i]
		}
	}
	if e.n > 1 {
		copy(e.more.states, seed)
	} else {
		e.save(seed)
	}
	e.expires = limit.ExpiresAt(rules, seed)
}
